"""Table 4 of the paper: Faster R-CNN on VOC with each distilled Inception-BN backbone.

The rows, the paper's numbers and the column headers are data in
``configs/voc/table4.yaml``.  :func:`run_table4` trains and tests one detector
per row, identical except for the backbone checkpoint, keeps finished rows
(``results.json``) and resumes interrupted ones; :func:`write_table4` writes
the per-class table in the paper's layout, each measured row under the paper's
(rendered by :func:`train.report.tables.format_table4`).

``--quick`` runs the same code on the tiny VOC-format dataset of CIFAR-10
images (:mod:`detection.tiny_voc`) with ``configs/voc/quick.yaml``, and, for
rows whose ImageNet student does not exist, with stand-in backbones
(:mod:`detection.quick_backbone`): a pipeline check, not a reproduction.  A
row whose ImageNet student exists uses it, at its own width (slower).
"""

import json
import os
import shutil

from nst.errors import NSTError
from nst.io import write_json, write_text
from train.report.tables import format_table4, load_table4, select_table4_rows

from .config import FULL_CONFIG, QUICK_CONFIG, REPO, load_config


def imagenet_checkpoint(row, imagenet_root):
    """The first existing ``<imagenet_root>/<run>/student.params`` of the row, or None."""
    for run in row.get("imagenet_runs") or [row["key"]]:
        path = os.path.join(imagenet_root, run, "student.params")
        if os.path.isfile(path):
            return path
    return None


def default_cifar_root():
    for root in (os.environ.get("NST_SHARED_DATA"),
                 os.path.join(REPO, "..", "shared", "data"),
                 "data"):
        if root and os.path.isfile(os.path.join(root, "cifar-10-batches-py", "batches.meta")):
            return os.path.normpath(root)
    return None


def prepare_quick_data(voc_root, cifar_root, log=print):
    """Write (or reuse) the tiny VOC dataset of the quick run under ``voc_root``."""
    from .tiny_voc import make_tiny_voc

    cifar_root = cifar_root or default_cifar_root()
    if cifar_root is None:
        raise NSTError("--quick builds its tiny VOC dataset from CIFAR-10 images, but none were "
                       "found: pass --cifar-root DIR (the folder holding cifar-10-batches-py/) "
                       "or download them with `nst data cifar10 --root data`")
    make_tiny_voc(voc_root, cifar_root, log=log)
    return cifar_root


def run_table4(quick=False, imagenet_root="runs/imagenet", voc_root=None, out_root=None,
               cifar_root=None, contexts=None, kvstore=None, progress=True, rows=None,
               overrides=(), fresh=False, log=print):
    """Train and test every row; returns ``{row key: results dict}``."""
    from train.devices import parse_contexts

    from .model import checkpoint_width
    from .quick_backbone import make_quick_backbone
    from .train import DetectionTrainer

    spec = load_table4()
    out_root = out_root or ("runs/voc_quick" if quick else "runs/voc")
    base = load_config(QUICK_CONFIG if quick else FULL_CONFIG, overrides)
    voc_root = voc_root or base["data"]["voc_root"]
    if quick:
        cifar_root = prepare_quick_data(voc_root, cifar_root, log)
    contexts = contexts or parse_contexts()
    selected = select_table4_rows(spec, rows)
    results = {}
    for index, row in enumerate(selected):
        out = os.path.join(out_root, row["key"])
        if fresh and os.path.isdir(out):
            shutil.rmtree(out)
        done = os.path.join(out, "results.json")
        if os.path.isfile(done):
            with open(done, "r", encoding="utf-8") as handle:
                results[row["key"]] = json.load(handle)
            log("[%d/%d] %s: already finished (%s)" % (index + 1, len(selected), row["method"],
                                                      out))
            continue
        backbone = imagenet_checkpoint(row, imagenet_root)
        values = {"out": out, "name": "voc_" + row["key"], "data.voc_root": voc_root}
        if backbone is not None and quick:
            # the real student, at its own width (the quick config's 0.25 is for stand-ins)
            values["backbone.width"] = checkpoint_width(backbone, base["backbone"]["network"])
            log("%s: using the ImageNet student %s (width %g)"
                % (row["method"], backbone, values["backbone.width"]))
        if backbone is None:
            if not quick:
                raise NSTError("no ImageNet student for row %s: none of %s exists; train the "
                               "ImageNet rows first (Table 3) or pass --imagenet-root"
                               % (row["method"], ", ".join(
                                   os.path.join(imagenet_root, r, "student.params")
                                   for r in row.get("imagenet_runs") or [row["key"]])))
            backbone = make_quick_backbone(
                os.path.join(out_root, "backbones", row["key"] + ".params"), cifar_root,
                width=base["backbone"]["width"],
                seed=1 + [r["key"] for r in spec["rows"]].index(row["key"]),
                mean=base["data"]["mean"], std=base["data"]["std"], log=log)
        values["backbone.checkpoint"] = backbone
        cfg = load_config(QUICK_CONFIG if quick else FULL_CONFIG, overrides, values=values)
        log("[%d/%d] %s: Faster R-CNN from %s -> %s" % (index + 1, len(selected),
                                                       row["method"], backbone, out))
        trainer = DetectionTrainer(cfg, contexts, kvstore=kvstore, progress=progress, log=log)
        result = trainer.fit(resume=True)
        if result is None:
            raise NSTError("interrupted while training %s; run the same command again to "
                           "resume" % row["method"])
        results[row["key"]] = result
    return results


def write_table4(results, out_root, quick=False, rows=None):
    text = format_table4(results, quick, rows)
    write_text(os.path.join(out_root, "table4.md"), text + "\n")
    write_json(os.path.join(out_root, "table4.json"), {"quick": quick, "rows": results})
    return text
