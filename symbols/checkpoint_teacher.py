"""MXNet symbol checkpoints: reading the files, finding the logits, converting the input.

``mxnet_checkpoint`` networks (:mod:`symbols.external`) are an MXNet symbolic
checkpoint, ``<prefix>-symbol.json`` + ``<prefix>-<epoch>.params``
(``mx.model.save_checkpoint``, ``Module.save_checkpoint``, Gluon's
``HybridBlock.export`` or ``nst export``), e.g. the pre-activation ResNet-101
of the original NST implementation.  Params: ``prefix``, ``epoch`` (default 0).
This module holds what is specific to such files:

* :func:`load_symbol_checkpoint` reads both files with clear errors;
* :func:`head_logits` is the default logits output: the input of the final
  softmax when the symbol ends in one (``fc1_output`` for the original ResNet
  symbol), else the symbol's output;
* :func:`list_outputs` lists the internal outputs a config may name as features;
* :func:`input_transform` converts the pipelines' input for networks trained
  on other inputs.

Example (the network loads its own weights, so a config needs no
``teacher.checkpoint``)::

    teacher:
      network: mxnet_checkpoint
      params: {prefix: models/resnet-101, epoch: 0, input_mean: [0, 0, 0], input_std: [1, 1, 1]}
    transfer:
      - {loss: nst_poly, weight: 25, student: in5b_bn, teacher: bn1_output}

Input: the data pipelines feed images normalised with fb.resnet's mean/std
(:data:`train.data.recordio.MEAN_RGB`, ``STD_RGB``).  A checkpoint trained on other
inputs declares them with ``input_mean`` / ``input_std`` (RGB, 0-255 pixel
units) and the network converts: the original implementation's ResNet symbols
normalise raw 0-255 pixels in their own ``bn_data`` layer, hence
``input_mean: [0, 0, 0], input_std: [1, 1, 1]`` for them.
"""

import json
import os

import mxnet as mx

from nst.errors import NSTError

__all__ = ["head_logits", "input_transform", "list_outputs", "load_symbol_checkpoint",
           "PIPELINE_MEAN", "PIPELINE_STD"]

# fb.resnet's ImageNet normalisation, the input every data pipeline of the project feeds
PIPELINE_MEAN = (123.675, 116.28, 103.53)
PIPELINE_STD = (58.395, 57.12, 57.375)
_SOFTMAX_OPS = ("SoftmaxOutput", "softmax", "SoftmaxActivation", "log_softmax")


def list_outputs(symbol):
    """Internal output names of ``symbol`` that end in ``_output`` (its layer outputs)."""
    return [n for n in symbol.get_internals().list_outputs() if n.endswith("_output")]


def head_logits(symbol):
    """The input of the final softmax if the symbol ends in one, else its output name."""
    graph = json.loads(symbol.tojson())
    nodes, heads = graph["nodes"], graph["heads"]
    node = nodes[heads[0][0]]
    if node["op"] in _SOFTMAX_OPS and node.get("inputs"):
        source = nodes[node["inputs"][0][0]]
        if source["op"] != "null":
            return source["name"] + "_output"
    return symbol.list_outputs()[0]


def load_symbol_checkpoint(prefix, epoch=0):
    """``(symbol, {name: NDArray})`` of an MXNet checkpoint, with clear errors."""
    if not isinstance(prefix, str) or not prefix:
        raise NSTError("mxnet_checkpoint needs params.prefix, the path prefix of "
                       "<prefix>-symbol.json and <prefix>-0000.params")
    try:
        epoch = int(epoch)
    except (TypeError, ValueError):
        raise NSTError("mxnet_checkpoint: params.epoch must be an integer, got %r" % (epoch,))
    sym_file, params_file = "%s-symbol.json" % prefix, "%s-%04d.params" % (prefix, epoch)
    for path in (sym_file, params_file):
        if not os.path.isfile(path):
            raise NSTError("MXNet checkpoint file %s does not exist; set the network's params.prefix "
                           "and .epoch so that <prefix>-symbol.json and <prefix>-<epoch:04d>"
                           ".params exist" % path)
    try:
        symbol = mx.sym.load(sym_file)
    except Exception as err:  # MXNetError, ValueError on a bad JSON file
        raise NSTError("cannot read the symbol file %s (%s); it must be an MXNet "
                       "<prefix>-symbol.json" % (sym_file, str(err).splitlines()[-1][:200])) from err
    try:
        saved = mx.nd.load(params_file)
    except Exception as err:
        raise NSTError("cannot read the parameter file %s (%s); it must be an MXNet "
                       "checkpoint .params file" % (params_file, str(err).splitlines()[-1][:200])
                       ) from err
    if not isinstance(saved, dict):
        raise NSTError("%s holds no named parameters; expected an MXNet checkpoint" % params_file)
    params = {}
    for key, value in saved.items():
        kind, _, name = key.partition(":")
        params[name if kind in ("arg", "aux") and name else key] = value
    return symbol, params


def input_transform(mean, std, model_name):
    """(scale, shift) turning pipeline-normalised input into what the checkpoint expects."""
    if mean is None and std is None:
        return None
    mean = [0.0, 0.0, 0.0] if mean is None else mean
    std = [1.0, 1.0, 1.0] if std is None else std
    try:
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    except (TypeError, ValueError):
        mean = std = []
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise NSTError("%s: input_mean and input_std must be 3 numbers each (RGB, 0-255 pixel "
                       "units, std > 0), e.g. input_mean: [0, 0, 0], input_std: [1, 1, 1] for a "
                       "network fed raw pixels" % model_name)
    scale = [p / s for p, s in zip(PIPELINE_STD, std)]
    shift = [(pm - m) / s for pm, m, s in zip(PIPELINE_MEAN, mean, std)]
    return (mx.nd.array(scale).reshape((1, 3, 1, 1)), mx.nd.array(shift).reshape((1, 3, 1, 1)))
