"""Teachers loaded from existing checkpoints, with features taken by internal layer name.

Two registered model names (:func:`symbols.get_model`):

``mxnet_checkpoint``
    An MXNet symbolic checkpoint, ``<prefix>-symbol.json`` + ``<prefix>-<epoch>.params``
    (``mx.model.save_checkpoint``, ``Module.save_checkpoint`` or Gluon's
    ``HybridBlock.export``), e.g. the pre-activation ResNet-101 of the original
    NST implementation.  Params: ``prefix``, ``epoch`` (default 0).
``gluoncv:<model_name>``
    A GluonCV model-zoo model, e.g. ``gluoncv:resnet101_v2``; with
    ``pretrained: true`` (the default) its ImageNet weights are downloaded to
    ``~/.mxnet/models`` on first use.  Params: ``pretrained``, ``model_kwargs``.

Both are turned into a Gluon ``SymbolBlock`` over ``sym.get_internals()``:
``features`` are internal output names (``bn1_output``; the ``_output`` suffix
and, for GluonCV models, the model's prefix may be left out), ``logits`` the
internal output used as the logits (default: the input of the final softmax
when the symbol ends in one -- ``fc1_output`` for the original ResNet symbol --
else the symbol's output).  The output contract is the one of the
:mod:`symbols` networks: ``net(x)`` gives the logits, or with ``features=[...]``
the tuple ``(logits, feat_1, ...)`` in request order; ``net.feature_names``
lists the internal outputs.  The block carries ``loads_own_weights = True``,
so a config needs no ``teacher.checkpoint``::

    teacher:
      network: mxnet_checkpoint
      params: {prefix: models/resnet-101, epoch: 0, input_mean: [0, 0, 0], input_std: [1, 1, 1]}
    transfer:
      - {loss: nst_poly, weight: 25, student: in5b_bn, teacher: bn1_output}

Input: the data pipelines feed images normalised with fb.resnet's mean/std
(:data:`train.imagenet.MEAN_RGB`, ``STD_RGB``).  A checkpoint trained on other
inputs declares them with ``input_mean`` / ``input_std`` (RGB, 0-255 pixel
units) and the block converts: the original implementation's ResNet symbols
normalise raw 0-255 pixels in their own ``bn_data`` layer, hence
``input_mean: [0, 0, 0], input_std: [1, 1, 1]`` for them.

The parameters are loaded on the CPU and copied to each device the first time
the block runs there.
"""

import difflib
import json
import os
import warnings

import mxnet as mx
from mxnet import gluon

from nst.errors import NSTError

__all__ = ["CheckpointNet", "get_checkpoint_model", "list_outputs", "load_symbol_checkpoint"]

# fb.resnet's ImageNet normalisation, the input every data pipeline of the project feeds
PIPELINE_MEAN = (123.675, 116.28, 103.53)
PIPELINE_STD = (58.395, 57.12, 57.375)
_SOFTMAX_OPS = ("SoftmaxOutput", "softmax", "SoftmaxActivation", "log_softmax")
_OPTIONS = {
    "mxnet_checkpoint": ("prefix", "epoch", "logits", "data_name", "input_mean", "input_std"),
    "gluoncv": ("pretrained", "model_kwargs", "logits", "data_name", "input_mean", "input_std"),
}


def list_outputs(symbol):
    """Internal output names of ``symbol`` that end in ``_output`` (its layer outputs)."""
    return [n for n in symbol.get_internals().list_outputs() if n.endswith("_output")]


def _head_logits(symbol):
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
            raise NSTError("MXNet checkpoint file %s does not exist; set teacher.params.prefix "
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


class CheckpointNet(gluon.Block):
    """A teacher network from a symbol and its parameters (see the module docs).

    Parameters
    ----------
    symbol : mx.sym.Symbol
        The network; its internals provide the logits and the features.
    params : dict of str -> NDArray, or gluon.ParameterDict
        Values of every parameter the used outputs need.
    features : list of str or None
    logits : str or None
        Internal output used as logits; None: automatic (see :func:`_head_logits`).
    data_name : str
        The symbol's input variable.
    input_mean, input_std : 3 numbers or None
        What the checkpoint expects as input (RGB, 0-255 units); None: the
        pipelines' normalised images as they are.
    name_prefix : str
        Prefix tried in front of names not found as given (GluonCV blocks).
    model_name : str
        Used in messages.
    """

    loads_own_weights = True

    def __init__(self, symbol, params, features=None, logits=None, data_name="data",
                 input_mean=None, input_std=None, name_prefix="", model_name="checkpoint"):
        super(CheckpointNet, self).__init__(prefix="")
        self.model_name = model_name
        self._symbol = symbol
        self._internals = symbol.get_internals()
        self._all_outputs = set(self._internals.list_outputs())
        self.feature_names = tuple(list_outputs(symbol))
        self._name_prefix = name_prefix
        self._data_name = data_name
        self.logits_name = self._resolve(logits) if logits else _head_logits(symbol)
        self._values = params
        self._transform = _input_transform(input_mean, input_std, model_name)
        self._transform_on = {}
        self._contexts = []
        self._requested = None
        self.body = None
        self._hybrid = None
        self.set_features(features)

    # ------------------------------------------------------------------ names
    def _resolve(self, name):
        if not isinstance(name, str):
            raise NSTError("%s: feature names must be strings (internal output names such as "
                           "bn1_output), got %r" % (self.model_name, name))
        for candidate in (name, name + "_output", self._name_prefix + name,
                          self._name_prefix + name + "_output"):
            if candidate in self._all_outputs:
                return candidate
        names = list(self.feature_names)
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        tail = [n for n in names[-6:] if n not in close]
        raise NSTError("%s has no internal output %r; names ending in _output include %s (%d "
                       "in all: net.feature_names lists them). Fix the feature or logits name "
                       "in your config"
                       % (self.model_name, name, ", ".join(close + tail), len(names)))

    @property
    def requested_features(self):
        return None if self._requested is None else tuple(self._requested)

    def set_features(self, features):
        """Choose the outputs: None (logits only) or a list of internal output names."""
        if isinstance(features, str):
            raise NSTError("%s: features must be a list of names, got the string %r; write "
                           "features=[%r]" % (self.model_name, features, features))
        if features is not None and not isinstance(features, (list, tuple)):
            raise NSTError("%s: features must be a list of internal output names or None, got "
                           "%r" % (self.model_name, features))
        resolved = [self._resolve(f) for f in (features or [])]
        outputs = [self._internals[self.logits_name]]
        for name in resolved:
            out = self._internals[name]
            outputs.append(out if name != self.logits_name and resolved.count(name) == 1
                           else mx.sym.identity(out))
        group = outputs[0] if len(outputs) == 1 else mx.sym.Group(outputs)
        free = [a for a in group.list_arguments() + group.list_auxiliary_states()
                if a != self._data_name]
        values = self._values
        missing = [a for a in free if a not in values]
        if self._data_name not in group.list_arguments():
            raise NSTError("%s: the symbol has no input named %r; set params.data_name to its "
                           "input variable" % (self.model_name, self._data_name))
        if missing:
            raise NSTError("%s: the checkpoint has no values for %s%s; these inputs are needed "
                           "by the requested outputs (is it the matching .params file?)"
                           % (self.model_name, ", ".join(missing[:5]),
                              " ..." if len(missing) > 5 else ""))
        with warnings.catch_warnings():  # "cannot decide type for data": it is float32
            warnings.simplefilter("ignore", UserWarning)
            body = gluon.SymbolBlock(group, mx.sym.var(self._data_name))
        for name, param in body.collect_params().items():
            value = values[name]
            value = value.data() if isinstance(value, gluon.Parameter) else value
            param._load_init(value, self._contexts or [mx.cpu()])
            param.grad_req = "null"
        self.body = body
        if self._hybrid is not None:
            self.body.hybridize(**self._hybrid)
        self._requested = None if features is None else list(features)
        return self

    # ---------------------------------------------------------------- running
    def hybridize(self, active=True, **kwargs):
        self._hybrid = dict(kwargs, active=active)
        super(CheckpointNet, self).hybridize(active, **kwargs)

    def _place(self, ctx):
        if ctx not in self._contexts:
            self._contexts.append(ctx)
            self.body.collect_params().reset_ctx(list(self._contexts))

    def forward(self, x):
        self._place(x.context)
        if self._transform is not None:
            if x.context not in self._transform_on:
                scale, shift = self._transform
                self._transform_on[x.context] = (scale.as_in_context(x.context),
                                                 shift.as_in_context(x.context))
            scale, shift = self._transform_on[x.context]
            x = mx.nd.broadcast_add(mx.nd.broadcast_mul(x, scale), shift)
        out = self.body(x)
        if self._requested is None:
            return out[0] if isinstance(out, (list, tuple)) else out
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    def __repr__(self):
        return "%s(%s, logits=%s, features=%s)" % (type(self).__name__, self.model_name,
                                                    self.logits_name, self._requested)


def _input_transform(mean, std, model_name):
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


def _check_options(kind, name, kwargs):
    unknown = sorted(k for k in kwargs if k not in _OPTIONS[kind])
    if unknown:
        raise NSTError("%s: unknown param(s) %s; the params are %s"
                       % (name, ", ".join(unknown), ", ".join(_OPTIONS[kind])))


def get_checkpoint_model(name, classes=None, features=None, **kwargs):
    """Build ``mxnet_checkpoint`` or ``gluoncv:<model>`` (see the module docs)."""
    common = {k: kwargs.get(k) for k in ("logits", "input_mean", "input_std")}
    data_name = kwargs.get("data_name") or "data"
    if name.lower() == "mxnet_checkpoint":
        _check_options("mxnet_checkpoint", name, kwargs)
        prefix, epoch = kwargs.get("prefix"), kwargs.get("epoch", 0)
        symbol, params = load_symbol_checkpoint(prefix, 0 if epoch is None else epoch)
        label = "mxnet_checkpoint %s-%04d" % (prefix, int(epoch or 0))
        return CheckpointNet(symbol, params, features=features, data_name=data_name,
                             model_name=label, **common)
    _check_options("gluoncv", name, kwargs)
    model = name.split(":", 1)[1].strip()
    pretrained = kwargs.get("pretrained", True)
    pretrained = True if pretrained is None else bool(pretrained)
    extra = dict(kwargs.get("model_kwargs") or {})
    if not pretrained and classes is not None:
        extra.setdefault("classes", classes)
    try:
        from gluoncv import model_zoo
        net = model_zoo.get_model(model, pretrained=pretrained, **extra)
    except ValueError as err:
        raise NSTError("gluoncv has no model %r (%s); see gluoncv.model_zoo.get_model_list()"
                       % (model, str(err).splitlines()[0][:200])) from err
    except Exception as err:  # download failure (no network), hash mismatch ...
        raise NSTError("could not build GluonCV model %r with pretrained=%s (%s); its weights "
                       "are downloaded to ~/.mxnet/models on first use: run once on a machine "
                       "with internet access and copy that folder, or use mxnet_checkpoint with "
                       "an exported model" % (model, pretrained, str(err).splitlines()[0][:200])
                       ) from err
    if not pretrained:  # random weights (tests, or a teacher to be trained elsewhere)
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
        net(mx.nd.zeros((1, 3, 224, 224)))  # finish the deferred initialisation
    symbol = net(mx.sym.var(data_name))
    if isinstance(symbol, (list, tuple)):
        symbol = symbol[0]
    params = {p.name: p for p in net.collect_params().values()}
    return CheckpointNet(symbol, params, features=features, data_name=data_name,
                         name_prefix=net.prefix, model_name="gluoncv:%s" % model, **common)
