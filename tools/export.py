"""``nst export RUN_DIR``: the trained student alone, loadable without this project.

Writes, into ``--out`` (default ``RUN_DIR/export``):

- ``<name>-symbol.json`` + ``<name>-0000.params`` (``--format mxnet``, the
  default): the student's logits graph and its parameters under the network's
  own names, as Gluon's ``HybridBlock.export`` writes them; load them with::

      net = mxnet.gluon.SymbolBlock.imports("<name>-symbol.json", ["data"],
                                            "<name>-0000.params")

- ``<name>.onnx`` (``--format onnx``, needs the ``onnx`` package: ``pip install
  'nst-distill[onnx]'``): the same graph converted by MXNet's exporter
  (``mx.onnx.export_model``, batch size dynamic) and checked with
  ``onnx.checker.check_model``.

``<name>`` is the run's config name.  The input is the run's image size,
normalised as the run's data pipeline does (for image folders and RecordIO:
ImageNet mean/std on 0-255 RGB pixels, i.e. ``(x / 255 - mean) / std`` with
mean 0.485/0.456/0.406 and std 0.229/0.224/0.225).  Before it returns, the
command loads the exported files back with ``gluon.SymbolBlock.imports`` and
checks that their logits equal the trained student's on a fixed test batch.
"""

import os
import warnings

import numpy as np

from nst.errors import NSTError, first_line

from .features import checkpoint_params, read_run_config, spec_from_run

__all__ = ["export_run", "input_shape", "add_arguments", "run", "FORMATS"]

FORMATS = ("mxnet", "onnx")
TEST_BATCH = 4
TOLERANCE = 1e-5
_IMAGE_SOURCES = ("folder", "imagenet")


def input_shape(cfg):
    """Per-image input shape ``(C, H, W)`` of a run's student."""
    data = cfg.get("data") or {}
    if data.get("dataset") in _IMAGE_SOURCES:
        size = int(data.get("image_size") or 224)
        return (3, size, size)
    return (3, 32, 32)


def _student(spec):
    import symbols

    net = symbols.get_model(spec.network, classes=spec.classes, features=None,
                            **checkpoint_params(spec))
    try:
        net.load_parameters(spec.checkpoint)
    except Exception as err:
        raise NSTError("%s does not fit the run's student %s (%s); the run folder is damaged or "
                       "its config changed" % (spec.checkpoint, spec.network,
                                               first_line(err))) from err
    return net


def _test_batch(shape):
    rng = np.random.default_rng(0)
    return rng.standard_normal((TEST_BATCH,) + tuple(shape)).astype(np.float32)


def _export_onnx(symbol_file, params_file, shape, path):
    try:
        import onnx
    except ImportError:
        raise NSTError("--format onnx needs the onnx package, which is not installed; install it "
                       "with pip install 'nst-distill[onnx]' (verified with onnx 1.15.0; MXNet "
                       "1.9's exporter needs onnx.mapping), or export with --format mxnet") from None
    import mxnet as mx

    try:
        mx.onnx.export_model(symbol_file, params_file, in_shapes=[(1,) + tuple(shape)],
                             in_types=[np.float32], onnx_file_path=path, dynamic=True,
                             dynamic_input_shapes=[(None,) + tuple(shape)])
        onnx.checker.check_model(onnx.load(path))
    except Exception as err:
        raise NSTError("the ONNX conversion of %s failed (%s: %s); the MXNet files are fine and "
                       "load with gluon.SymbolBlock.imports" % (symbol_file, type(err).__name__,
                                                                first_line(err))) from err
    return path


def export_run(run, fmt="mxnet", out=None, name=None):
    """Export the student of run folder ``run``; returns ``{files, max_abs_diff, ...}``."""
    import mxnet as mx
    from mxnet import gluon

    if fmt not in FORMATS:
        raise NSTError("--format must be one of %s, got %r" % (", ".join(FORMATS), fmt))
    cfg = read_run_config(run)
    spec = spec_from_run(run)
    shape = input_shape(cfg)
    name = name or cfg.get("name") or "student"
    out = out or os.path.join(run, "export")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise NSTError("cannot create the export folder %s (%s); choose another with --out"
                       % (out, err.strerror or err)) from err
    prefix = os.path.join(out, name)
    net = _student(spec)
    net.hybridize()
    batch = mx.nd.array(_test_batch(shape))
    want = net(batch).asnumpy()  # inference mode: BatchNorm uses its running statistics
    net.export(prefix, 0)
    symbol_file, params_file = prefix + "-symbol.json", prefix + "-0000.params"
    with warnings.catch_warnings():  # "cannot decide type for data": it is float32
        warnings.simplefilter("ignore", UserWarning)
        loaded = gluon.SymbolBlock.imports(symbol_file, ["data"], params_file)
    got = loaded(batch).asnumpy()
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if got.shape != want.shape or not np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
        raise NSTError("the exported model's logits differ from the trained student's by up to "
                       "%.3g on the test batch; the export of network %s is wrong (please report "
                       "it)" % (diff, spec.network))
    files = [symbol_file, params_file]
    if fmt == "onnx":
        files.append(_export_onnx(symbol_file, params_file, shape, prefix + ".onnx"))
    return {"files": files, "max_abs_diff": diff, "input_shape": shape,
            "classes": int(want.shape[1]), "network": spec.network}


def add_arguments(parser):
    parser.add_argument("run", help="a run folder written by nst train (holds checkpoint.json "
                                    "and student.params)")
    parser.add_argument("--format", default="mxnet", choices=FORMATS,
                        help="mxnet: <name>-symbol.json + <name>-0000.params (default); onnx: "
                             "those and <name>.onnx")
    parser.add_argument("--out", default=None, help="output folder (default RUN/export)")
    parser.add_argument("--name", default=None, help="file name prefix (default the run's name)")


def run(args):
    result = export_run(args.run, args.format, args.out, args.name)
    for path in result["files"]:
        print("wrote %s" % path)
    print("input 'data' of shape (N, %s), %d logits; the exported model's logits equal the "
          "trained student's on a test batch of %d (max |difference| %.3g)"
          % (", ".join(str(d) for d in result["input_shape"]), result["classes"], TEST_BATCH,
             result["max_abs_diff"]))
    return 0
