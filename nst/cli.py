"""The ``nst`` command: one entry point, one subcommand per task.

Each subcommand lives in the module that owns the work and exposes two
functions, ``add_arguments(parser)`` and ``run(args) -> int``.  Modules are
imported only when their subcommand runs, so ``nst --help`` is instant.

Errors: an :class:`nst.errors.NSTError` is printed as one line
(``nst <command>: error: <message>``) and the command exits with status 2;
``--debug`` shows the full traceback instead.
"""

import argparse
import importlib
import os
import sys

from .errors import NSTError
from .runtime import configure_threads

# name -> (module, one-line help).  Order is the order of ``nst --help``.
COMMANDS = {
    "demo": ("tools.demo", "run NST end to end on scikit-learn's digits (the README's first command)"),
    "train": ("train.cli", "train a teacher, a student or a distilled student from a config file"),
    "table": ("train.experiments", "train every row of a paper table and print it beside the paper"),
    "launch": ("train.launch", "start a dist_sync job's scheduler, servers and workers on this machine"),
    "pack": ("train.data.pack", "pack an image-folder tree (one sub-folder per class) into RecordIO for ImageNet training"),
    "data": ("train.data.download", "download and verify the CIFAR-10 / CIFAR-100 archives"),
    "detect": ("detection.cli", "Faster R-CNN on VOC with a distilled Inception-BN backbone"),
    "voc-eval": ("tools.voc_eval", "VOC07 11-point / VOC10 AUC mAP of detections against VOC annotations"),
    "tsne": ("tools.tsne", "t-SNE of teacher vs student neuron selectivity patterns (the paper's Fig. 5)"),
    "heatmap": ("tools.heatmap", "activation heat maps of chosen channels over input images (Fig. 2)"),
    "curves": ("tools.curves", "train (dashed) and test (solid) error curves of several runs (Figs. 3, 4)"),
    "tables": ("tools.tables", "collect finished runs into the paper's Tables 1-4 beside the published numbers"),
    "hints": ("tools.hints", "propose hint (transfer) layers by clustering the teacher's layers by CKA"),
    "features": ("tools.features", "list a network's feature names and shapes, and student/teacher pairs to distil between"),
    "export": ("tools.export", "export a trained student alone as MXNet symbol + params (or ONNX), loadable without this project"),
    "bench": ("benchmarks.bench", "performance: step overhead, input pipeline, scaling, transfer-loss cost"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``nst train: error: ...; see nst train --help``."""

    def error(self, message):
        self.exit(2, "%s: error: %s; see %s --help\n" % (self.prog, message, self.prog))


def build_parser():
    parser = _Parser(
        prog="nst",
        description="Neuron Selectivity Transfer (Huang & Wang, 2017) and related "
                    "knowledge-transfer methods in MXNet/Gluon.")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _command_parser(name):
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = _Parser(prog="nst " + name, description=help_text)
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    module.add_arguments(parser)
    return module, parser


def configure_environment(argv):
    """Every command's CPU runtime, set before ``mxnet`` is imported: OpenMP operator
    threads = the cores this process may use (:func:`nst.runtime.configure_threads`),
    then the deterministic engine on CPU (:func:`use_deterministic_engine`).  A
    variable the user set is kept.  The test session calls this too, so the tests
    run what the command runs."""
    if "mxnet" not in sys.modules:
        configure_threads()
    use_deterministic_engine(argv)


def use_deterministic_engine(argv):
    """On CPU, run MXNet's synchronous engine unless the user chose one.

    MKL-DNN operators executed by MXNet's threaded engine are not bitwise
    reproducible on CPU (two identical runs drift apart by ~1e-4 within a few
    steps); the synchronous ``NaiveEngine`` is, and on CPU it costs nothing
    measurable.  On GPUs (``--gpus``) the asynchronous threaded engine is kept.
    Must run before ``mxnet`` is imported.
    """
    if "MXNET_ENGINE_TYPE" not in os.environ and "--gpus" not in argv \
            and "mxnet" not in sys.modules:
        os.environ["MXNET_ENGINE_TYPE"] = "NaiveEngine"
        _import_mxnet_quietly()


def _import_mxnet_quietly():
    """Import mxnet with the C library's stderr muted: a chosen engine makes it log
    "MXNet start using engine: ..." at INFO level, which would precede every
    one-line error message.  Python-level errors are unaffected."""
    try:
        saved = os.dup(2)
    except OSError:
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                from . import compat  # noqa: F401  -- NumPy aliases MXNet needs (nst/compat.py)
                import mxnet
                mxnet.nd.waitall()  # creates the engine now, while muted
            except Exception:  # reported when the command imports it for real
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in COMMANDS for a in argv[:2]):
        configure_environment(argv)
    debug = "--debug" in argv
    top = build_parser()
    # Split "nst [--debug] COMMAND args..." by hand so that each command owns
    # its full argument parser (and its --help).
    rest = [a for a in argv if a != "--debug"]
    if not rest or rest[0] in ("-h", "--help"):
        top.print_help()
        return 0 if rest else 1
    name = rest[0]
    if name not in COMMANDS:
        print("nst: error: unknown command %r; choose one of: %s"
              % (name, ", ".join(COMMANDS)), file=sys.stderr)
        return 2
    try:
        module, parser = _command_parser(name)
        try:
            args = parser.parse_args(rest[1:])
        except SystemExit as stop:  # --help (0) or a usage error (2), already printed
            return stop.code if isinstance(stop.code, int) else 2
        args.debug = debug or args.debug
        code = module.run(args)
        return int(code or 0)
    except NSTError as err:
        if debug:
            raise
        print("nst %s: error: %s" % (name, err), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("nst %s: interrupted" % name, file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
