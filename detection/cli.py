"""``nst detect``: Faster R-CNN on PASCAL VOC with a distilled Inception-BN backbone.

Subcommands::

    nst detect train --backbone runs/imagenet/nst_poly/student.params \\
        --voc-root ~/.mxnet/datasets/voc --gpus 0,1,2,3                # one Table 4 row
    nst detect train --quick --cpus 1                                  # CPU pipeline check
    nst detect train ... --resume                                      # continue a run
    nst detect eval --run runs/voc/nst                                 # re-test a trained run
    nst detect table4 --gpus 0,1,2,3                                   # every row + the table
    nst detect table4 --quick                                          # the same, tiny, on CPU
    nst detect make-tiny-voc --out data/tiny_voc                       # the tiny VOC dataset

The recipe is ``configs/voc/faster_rcnn.yaml`` (``--config`` for another
file, ``--set key=value`` to override one value); ``--quick`` uses
``configs/voc/quick.yaml`` and the tiny dataset of CIFAR-10 images.
"""

import json
import os

from nst.errors import NSTError

from .config import FULL_CONFIG, QUICK_CONFIG, load_config


def _devices(parser):
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU ids, one image per GPU per step, e.g. "
                             "0,1,2,3 (GluonCV's published recipe: 4 GPUs, lr 0.001; needs "
                             "mxnet-cu112)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="number of CPU contexts (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config_options(parser):
    parser.add_argument("--config", default=None,
                        help="detection config (default configs/voc/faster_rcnn.yaml, or "
                             "configs/voc/quick.yaml with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="CPU pipeline check: tiny VOC-format dataset of CIFAR-10 images, "
                             "quarter-width backbone, small images")
    parser.add_argument("--voc-root", default=None,
                        help="VOC root holding VOC2007/ and VOC2012/ (overrides data.voc_root)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. --set epochs=2")


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("train", help="train and test one detector (one Table 4 row)",
                       description="Train Faster R-CNN from a classification checkpoint, then "
                                   "test it (VOC07 mAP) and write its detections.")
    _config_options(p)
    p.add_argument("--backbone", default=None, metavar="PARAMS",
                   help="classification student that initialises the backbone, e.g. "
                        "runs/imagenet/nst_poly/student.params (with --quick: default a "
                        "stand-in made from CIFAR-10)")
    p.add_argument("--out", default=None,
                   help="run folder (default runs/voc/<row> for a backbone "
                        "runs/imagenet/<row>/student.params)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest checkpoint")
    p.add_argument("--kvstore", default=None, help="device (default), nccl or local")
    p.add_argument("--cifar-root", default=None,
                   help="with --quick: folder holding cifar-10-batches-py/ (default: "
                        "../shared/data or data)")
    _devices(p)

    p = sub.add_parser("eval", help="test a trained detector and write its detections",
                       description="Detect on the test split, print per-class AP and mAP and "
                                   "write detections.json (+ devkit files) for nst voc-eval.")
    p.add_argument("--run", default=None,
                   help="run folder of `nst detect train` (reads config.json, detector.params)")
    p.add_argument("--params", default=None, help="detector parameters (default <run>/"
                                                  "detector.params)")
    p.add_argument("--config", default=None, help="config, when not using --run")
    p.add_argument("--voc-root", default=None, help="VOC root (overrides data.voc_root)")
    p.add_argument("--out", default=None,
                   help="where detections go (default <run>/eval)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _devices(p)

    p = sub.add_parser("table4", help="train and test every Table 4 row, print the table",
                       description="Train and test one detector per Table 4 row (Baseline, "
                                   "KD, FitNet, AT, NST*, KD+NST*) and print the per-class "
                                   "table beside the paper's.")
    _config_options(p)
    p.add_argument("--imagenet-root", default="runs/imagenet",
                   help="folder of the ImageNet runs (<row>/student.params)")
    p.add_argument("--out-root", default=None,
                   help="where the runs go (default runs/voc, or runs/voc_quick with --quick)")
    p.add_argument("--rows", nargs="+", default=None,
                   help="only these rows (keys: baseline kd fitnet at nst kd_nst)")
    p.add_argument("--cifar-root", default=None,
                   help="with --quick: folder holding cifar-10-batches-py/")
    p.add_argument("--kvstore", default=None)
    p.add_argument("--fresh", action="store_true",
                   help="delete the rows' previous runs first")
    _devices(p)

    p = sub.add_parser("make-tiny-voc", help="write the tiny VOC-format dataset of CIFAR-10 "
                                             "images (tests, --quick)")
    p.add_argument("--cifar-root", default=None,
                   help="folder holding cifar-10-batches-py/ (default ../shared/data or data)")
    p.add_argument("--out", default="data/tiny_voc", help="VOC root to write (default "
                                                          "data/tiny_voc)")
    p.add_argument("--trainval", type=int, default=64)
    p.add_argument("--test", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)


def _overrides(args):
    values = {}
    if getattr(args, "voc_root", None):
        values["data.voc_root"] = args.voc_root
    return values


def _train(args):
    from train.devices import parse_contexts

    from .quick_backbone import make_quick_backbone
    from .table4 import prepare_quick_data
    from .train import DetectionTrainer

    path = args.config or (QUICK_CONFIG if args.quick else FULL_CONFIG)
    values = _overrides(args)
    if args.out:
        values["out"] = args.out
    cfg = load_config(path, args.overrides, values)
    backbone = args.backbone
    if args.quick:
        cifar_root = prepare_quick_data(cfg["data"]["voc_root"], args.cifar_root)
        if backbone is None:
            backbone = make_quick_backbone(os.path.join(cfg["out"], "quick_backbone.params"),
                                           cifar_root, width=cfg["backbone"]["width"],
                                           mean=cfg["data"]["mean"], std=cfg["data"]["std"],
                                           log=print)
    if backbone is not None:
        cfg["backbone"]["checkpoint"] = backbone
        if not args.out and not args.quick and not any(o.startswith("out=")
                                                       for o in args.overrides):
            # runs/imagenet/<row>/student.params -> runs/voc/<row>
            row = os.path.basename(os.path.dirname(os.path.abspath(backbone)))
            cfg["out"] = os.path.join("runs", "voc", row or cfg["name"])
    contexts = parse_contexts(args.gpus, args.cpus)
    trainer = DetectionTrainer(cfg, contexts, kvstore=args.kvstore,
                               progress=not args.no_progress)
    results = trainer.fit(resume=args.resume)
    if results is None:
        return 130
    _print_results(results)
    print("detector parameters in %s, detections in %s, log in %s"
          % (results["detector_params"], results["detections"], results["log"]))
    if results.get("voc_eval"):
        print("re-score with: %s" % results["voc_eval"])
    return 0


def _print_results(results):
    name = {"voc07": "VOC2007 11-point AP", "voc10": "VOC2010+ area-under-curve AP"}
    print("%s (%%), IoU >= 0.5" % name[results["metric"]])
    for cls, ap in results["ap"].items():
        print("  %-12s %s" % (cls, "—" if ap is None else "%.1f" % (100 * ap)))
    mean = results["mAP"]
    print("  %-12s %s" % ("mAP", "—" if mean is None else "%.1f" % (100 * mean)))


def _eval(args):
    from train.devices import parse_contexts

    from .config import validate_config
    from .train import evaluate, load_detector, test_dataset, voc_eval_command

    if args.run is None and (args.config is None or args.params is None):
        raise NSTError("pass --run DIR (a folder written by `nst detect train`) or both "
                       "--config and --params")
    if args.run is not None:
        path = os.path.join(args.run, "config.json")
        if not os.path.isfile(path):
            raise NSTError("%s has no config.json; is it a run folder of `nst detect train`?"
                           % args.run)
        with open(path, "r", encoding="utf-8") as handle:
            raw = json.load(handle)
        from train.config import apply_overrides, set_values
        raw = set_values(apply_overrides(raw, args.overrides), _overrides(args))
        cfg = validate_config(raw, source=path)
        params = args.params or os.path.join(args.run, "detector.params")
        out = args.out or os.path.join(args.run, "eval")
    else:
        cfg = load_config(args.config, args.overrides, _overrides(args))
        params = args.params
        out = args.out or os.path.join(cfg["out"], "eval")
    contexts = parse_contexts(args.gpus, args.cpus)
    net = load_detector(cfg, params, contexts)
    dataset = test_dataset(cfg)
    result = evaluate(net, dataset, cfg, contexts, out, progress=not args.no_progress)
    if args.json:
        print(json.dumps({"mAP": result["mAP"], "ap": result["ap"],
                          "metric": result["metric"]}, indent=2))
        return 0
    _print_results(result)
    print("detections in %s" % result["detections"])
    command = voc_eval_command(cfg, result["detections"])
    if command:
        print("re-score with: %s" % command)
    return 0


def _table4(args):
    from train.config import parse_override
    from train.devices import parse_contexts
    from train.report.tables import TABLE4_QUICK_BANNER

    from .table4 import run_table4, write_table4

    if args.config:
        raise NSTError("table4 uses configs/voc/faster_rcnn.yaml (or quick.yaml with --quick); "
                       "change single values with --set KEY=VALUE")
    for text in args.overrides:
        parse_override(text)  # fail early on a malformed override
    contexts = parse_contexts(args.gpus, args.cpus)
    out_root = args.out_root or ("runs/voc_quick" if args.quick else "runs/voc")
    results = run_table4(quick=args.quick, imagenet_root=args.imagenet_root,
                         voc_root=args.voc_root, out_root=out_root, cifar_root=args.cifar_root,
                         contexts=contexts, kvstore=args.kvstore, progress=not args.no_progress,
                         rows=args.rows, overrides=args.overrides, fresh=args.fresh)
    print()
    print(write_table4(results, out_root, args.quick, args.rows))
    print("\nwritten: %s/table4.md and %s/table4.json" % (out_root, out_root))
    if args.quick:
        print(TABLE4_QUICK_BANNER)
    return 0


def _make_tiny_voc(args):
    from .table4 import default_cifar_root
    from .tiny_voc import make_tiny_voc

    root = args.cifar_root or default_cifar_root()
    if root is None:
        raise NSTError("no CIFAR-10 images found: pass --cifar-root DIR (the folder holding "
                       "cifar-10-batches-py/) or download them with `nst data cifar10 --root "
                       "data`")
    stamp = make_tiny_voc(args.out, root, trainval=args.trainval, test=args.test,
                          seed=args.seed, log=print)
    print("tiny VOC dataset in %s/VOC2007: %d trainval + %d test images, classes %s"
          % (args.out, stamp["params"]["trainval"], stamp["params"]["test"],
             ", ".join(stamp["classes"])))
    return 0


def run(args):
    actions = {"train": _train, "eval": _eval, "table4": _table4,
               "make-tiny-voc": _make_tiny_voc}
    return actions[args.action](args)
