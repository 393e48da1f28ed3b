"""Detection configs: YAML data in ``configs/voc/``, validated like the trainer's.

A config describes one Faster R-CNN run: the VOC data, the Inception-BN
backbone (which classification checkpoint, where it is split, which stages
are frozen), the detector's own settings (the keyword arguments of GluonCV's
``FasterRCNN``), the losses and the optimiser.  The file format, ``extends:``
and ``--set key=value`` overrides are those of :mod:`train.config` (the same
reader and the same validation messages); only the schema differs.

``configs/voc/faster_rcnn.yaml`` is the full recipe (GluonCV's
``faster_rcnn_resnet50_v1b_voc`` with an Inception-BN backbone), and
``configs/voc/quick.yaml`` extends it into the CPU pipeline check.
"""

import os

from nst.errors import NSTError
from train import config as tconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs", "voc")
FULL_CONFIG = os.path.join(CONFIG_DIR, "faster_rcnn.yaml")
QUICK_CONFIG = os.path.join(CONFIG_DIR, "quick.yaml")

REQUIRED = tconfig.REQUIRED
NUMBER = tconfig.NUMBER

SCHEMA = {
    "extends": (str, None),
    "name": (str, REQUIRED),
    "seed": (int, 233),
    "epochs": (int, REQUIRED),
    "out": (str, None),                              # default runs/voc/<name>
    "data": {
        "voc_root": (str, os.path.join("~", ".mxnet", "datasets", "voc")),
        "train_splits": (list, [[2007, "trainval"], [2012, "trainval"]]),
        "test_splits": (list, [[2007, "test"]]),
        "classes": (list, None),                     # default: the 20 VOC classes
        "short": (int, 600),
        "max_size": (int, 1000),
        "flip": (NUMBER, 0.5),
        "mean": (list, [0.485, 0.456, 0.406]),
        "std": (list, [0.229, 0.224, 0.225]),
        "num_workers": (int, 4),
        "train_limit": (int, None),                  # use only the first N images
        "test_limit": (int, None),
    },
    "backbone": {
        "network": (str, "inception_bn"),
        "width": (NUMBER, 1.0),
        "checkpoint": (str, None),                   # classification student .params
        "split": (str, "4b"),                        # last stage of `features`
        "freeze_until": (str, "pool2"),              # last frozen stage ("" = none)
    },
    "model": {                                       # GluonCV FasterRCNN keyword arguments
        "roi_mode": (str, "align"),
        "roi_size": (list, [14, 14]),
        "strides": (int, 16),
        "clip": (NUMBER, None),
        "rpn_channel": (int, 1024),
        "base_size": (int, 16),
        "scales": (list, [2, 4, 8, 16, 32]),
        "ratios": (list, [0.5, 1, 2]),
        "alloc_size": (list, [128, 128]),
        "rpn_nms_thresh": (NUMBER, 0.7),
        "rpn_train_pre_nms": (int, 12000),
        "rpn_train_post_nms": (int, 2000),
        "rpn_test_pre_nms": (int, 6000),
        "rpn_test_post_nms": (int, 300),
        "rpn_min_size": (int, 16),
        "num_sample": (int, 128),
        "pos_iou_thresh": (NUMBER, 0.5),
        "pos_ratio": (NUMBER, 0.25),
        "max_num_gt": (int, 100),
        "nms_thresh": (NUMBER, 0.3),
        "nms_topk": (int, 400),
        # detections kept per image after the per-class NMS (the top scores over all
        # classes; -1 keeps all).  GluonCV 0.10's FasterRCNN stores its post_nms
        # but never applies it, so -1 is what its published VOC run did.
        "post_nms": (int, -1),
    },
    "loss": {
        "rpn_smoothl1_rho": (NUMBER, 1.0 / 9.0),
        "rcnn_smoothl1_rho": (NUMBER, 1.0),
    },
    "optimizer": {
        "name": (str, "sgd"),
        # the learning rate itself, never scaled by the images per step: GluonCV's
        # VOC default, published at 4 images per step (4 GPUs x 1 image)
        "lr": (NUMBER, 0.001),
        "momentum": (NUMBER, 0.9),
        "wd": (NUMBER, 5e-4),
        "lr_steps": (list, [14, 20]),                # epochs at which lr *= lr_factor
        "lr_factor": (NUMBER, 0.1),
        "warmup_steps": (int, 0),
        "warmup_factor": (NUMBER, 1.0 / 3.0),
        "clip_gradient": (NUMBER, None),
    },
    "train": {
        "images_per_device": (int, 1),
        "kvstore": (str, "device"),
        "log_interval": (int, 100),                  # steps between NaN checks / postfix
        "eval_every": (int, 1),                      # epochs between VOC07 evaluations
        "keep_checkpoints": (int, 2),
        "hybridize": (bool, True),
    },
    "eval": {
        "metric": (str, "voc07"),
        "devkit_files": (bool, True),                # also write comp4_det_test_<cls>.txt
    },
}


def _check_list(cfg, key, length, kind, source):
    section, name = key.split(".")
    value = cfg[section][name]
    ok = isinstance(value, list) and (length is None or len(value) == length) and all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value)
    if not ok or (length is None and not value):
        what = "%d " % length if length else ""
        raise NSTError("%s: %r must be a list of %s%s, got %r"
                       % (source, key, what, "numbers" if kind is not int else "integers",
                          value))


def _check_splits(cfg, key, source):
    splits = cfg["data"][key]
    good = isinstance(splits, list) and splits and all(
        isinstance(s, list) and len(s) == 2 and isinstance(s[0], (int, str))
        and isinstance(s[1], str) for s in splits)
    if not good:
        raise NSTError("%s: 'data.%s' must be a list of [year, image set] pairs such as "
                       "[[2007, trainval], [2012, trainval]], got %r" % (source, key, splits))
    cfg["data"][key] = [[s[0], s[1]] for s in splits]


def validate_config(data, source="config"):
    """Validate a detection config mapping (fills the defaults); returns a copy."""
    import copy

    cfg = copy.deepcopy(data)
    cfg.pop("extends", None)
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, dict) and "lr_per_image" in optimizer:
        raise NSTError("%s: 'optimizer.lr_per_image' was removed: the learning rate is no "
                       "longer multiplied by the images per step; set 'optimizer.lr' to the "
                       "learning rate itself (GluonCV's recipe: 0.001 at 4 images per step)"
                       % source)
    tconfig._validate(cfg, SCHEMA, "", source)
    tconfig._check_finite(cfg, "", source)
    if cfg["epochs"] < 1:
        raise NSTError("%s: 'epochs' must be at least 1, got %d" % (source, cfg["epochs"]))
    _check_splits(cfg, "train_splits", source)
    _check_splits(cfg, "test_splits", source)
    for key, length, kind in (("data.mean", 3, (int, float)), ("data.std", 3, (int, float)),
                              ("model.roi_size", 2, int), ("model.alloc_size", 2, int),
                              ("model.scales", None, (int, float)),
                              ("model.ratios", None, (int, float)),
                              ("optimizer.lr_steps", None, int)):
        if key == "optimizer.lr_steps" and not cfg["optimizer"]["lr_steps"]:
            continue
        _check_list(cfg, key, length, kind, source)
    if cfg["data"]["classes"] is not None:
        classes = cfg["data"]["classes"]
        if not classes or not all(isinstance(c, str) and c == c.strip().lower() and c
                                  for c in classes) or len(set(classes)) != len(classes):
            raise NSTError("%s: 'data.classes' must be a list of distinct lower-case class "
                           "names, got %r" % (source, classes))
    if cfg["data"]["short"] < 32 or cfg["data"]["max_size"] < cfg["data"]["short"]:
        raise NSTError("%s: need 32 <= data.short <= data.max_size, got short=%d, max_size=%d"
                       % (source, cfg["data"]["short"], cfg["data"]["max_size"]))
    if cfg["train"]["images_per_device"] < 1:
        raise NSTError("%s: 'train.images_per_device' must be at least 1" % source)
    if cfg["eval"]["metric"] not in ("voc07", "voc10"):
        raise NSTError("%s: 'eval.metric' must be voc07 (the paper's) or voc10, got %r"
                       % (source, cfg["eval"]["metric"]))
    if cfg["model"]["post_nms"] == 0 or cfg["model"]["post_nms"] < -1:
        raise NSTError("%s: 'model.post_nms' must be a positive number of detections per "
                       "image or -1 (keep all, GluonCV 0.10's behaviour), got %d"
                       % (source, cfg["model"]["post_nms"]))
    if cfg["optimizer"]["lr"] <= 0:
        raise NSTError("%s: 'optimizer.lr' must be positive, got %r (GluonCV's recipe: 0.001)"
                       % (source, cfg["optimizer"]["lr"]))
    if cfg["model"]["roi_mode"] not in ("align", "pool"):
        raise NSTError("%s: 'model.roi_mode' must be align or pool, got %r"
                       % (source, cfg["model"]["roi_mode"]))
    if cfg["out"] is None:
        cfg["out"] = os.path.join("runs", "voc", cfg["name"])
    return cfg


def load_config(path=None, overrides=(), values=None):
    """Read, merge (``extends``), override (``--set``) and validate a detection config."""
    path = path or FULL_CONFIG
    data = tconfig.read_config(path)
    tconfig.apply_overrides(data, overrides)
    tconfig.set_values(data, values)
    return validate_config(data, source=os.fspath(path))


def model_kwargs(cfg):
    """Keyword arguments of GluonCV's ``FasterRCNN`` from ``cfg['model']`` and ``cfg['data']``."""
    m = dict(cfg["model"])
    m["roi_size"] = tuple(m["roi_size"])
    m["alloc_size"] = tuple(m["alloc_size"])
    m["scales"] = tuple(m["scales"])
    m["ratios"] = tuple(m["ratios"])
    m["short"] = cfg["data"]["short"]
    m["max_size"] = cfg["data"]["max_size"]
    m["per_device_batch_size"] = cfg["train"]["images_per_device"]
    return m
