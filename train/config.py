"""Experiment configs: YAML files that are data, not code.

A config describes one training run: the data, the student, an optional
teacher, the transfer losses of Eq. 3 and the optimiser.  Files are read with
``yaml.safe_load`` (a Python tag such as ``!!python/object`` is refused) and
validated against :data:`SCHEMA`: an unknown key or a value of the wrong type is
one clear :class:`~nst.errors.NSTError` naming the key, the file and the fix.

A file may start from another with ``extends: other.yaml`` (a path relative to
the file); the child's keys override the parent's, mappings merged key by key,
lists replaced.  Command-line overrides use dotted keys:
``--set epochs=2 --set data.batch_size=64``.

Example (``configs/cifar10/kd_nst.yaml``)::

    extends: student.yaml
    name: cifar10_kd_nst
    teacher:
      network: preact_resnet1001_cifar
      checkpoint: runs/cifar10_teacher/student.params
    transfer:
      - {loss: kd, weight: 16, student: logits, teacher: logits}
      - {loss: nst_poly, weight: 25, student: in5b, teacher: stage3}
"""

import copy
import difflib
import math
import os

import yaml

from nst.errors import NSTError

# key -> (type or tuple of types, default).  A nested dict is a sub-schema;
# ``REQUIRED`` marks keys without a default.
REQUIRED = object()
NUMBER = (int, float)

TRANSFER_SCHEMA = {
    "loss": (str, REQUIRED),
    "weight": (NUMBER + (type(None),), None),    # None: the loss's paper default
    "student": ((str, list), REQUIRED),          # feature name, "logits", or a list of names
    "teacher": ((str, list), REQUIRED),
    "params": (dict, {}),
    "start_epoch": (int, 0),                     # active for start_epoch <= epoch < end_epoch
    "end_epoch": (int, None),                    # (epochs counted from 0; None: to the end)
    "pretrain_epochs": (int, 0),                 # epochs of the loss's own pre-training stage
}

SCHEMA = {
    "extends": (str, None),
    "name": (str, REQUIRED),
    "seed": (int, 0),
    "epochs": (int, REQUIRED),
    "out": (str, None),                          # default: runs/<name>
    "data": {
        "dataset": (str, REQUIRED),              # cifar10 | cifar100 | digits
        "root": (str, "data"),
        "batch_size": (int, 128),                # total, split over the devices
        "augment": (bool, True),                 # pad 4, random crop, random flip
        "flip": (bool, True),                    # horizontal flips (off for digits)
        "train_limit": (int, None),              # use only the first N images
        "test_limit": (int, None),
        "test_batch_size": (int, 256),
        # RecordIO data sets (imagenet): input size, validation resize, decoding threads
        "image_size": (int, 224),
        "val_resize": (int, 256),
        "threads": (int, 4),
        # image folders (dataset: folder): val_fraction, split_seed, corrupt (train.data.folder)
        "folder": (dict, {}),
    },
    "student": {
        "network": (str, REQUIRED),
        "params": (dict, {}),
        "checkpoint": (str, None),               # optional initialisation
    },
    "teacher": {
        "network": (str, REQUIRED),
        "params": (dict, {}),
        # a Gluon .params file; may be omitted for networks that load their own
        # weights (an MXNet symbol checkpoint, a GluonCV model-zoo model)
        "checkpoint": (str, None),
        # BatchNorm statistics of the frozen teacher: "running" (inference mode)
        # or "batch" (each batch's own statistics, as the authors' solver)
        "batchnorm": (str, "running"),
        # evaluate the teacher once on the test split before the first distillation
        # step (top-1/top-5 error logged and stored; a warning when it is no better
        # than chance or its top-1 error is above max_top1_err, in percent)
        "evaluate": (bool, True),
        "max_top1_err": (NUMBER, None),
    },
    "transfer": (list, []),
    "optimizer": {
        "name": (str, "nag"),
        "lr": (NUMBER, 0.2),
        "momentum": (NUMBER, 0.9),
        "wd": (NUMBER, 1e-4),
        "lr_steps": (list, []),                  # epochs at which lr *= lr_factor
        "lr_factor": (NUMBER, 0.1),
        "warmup_epochs": (NUMBER, 0),            # linear warm-up from 0 over these epochs
        "clip_gradient": (NUMBER, None),         # clip each gradient element to +-this
        # parameter kinds (name suffixes) without weight decay; [beta, bias] is
        # MXNet Module's rule (the authors' code), [] Gluon's (decay everything)
        "no_wd": (list, []),
    },
    "train": {
        "ce_start_epoch": (int, 0),              # cross-entropy from this epoch on (AB's init stage)
        "kvstore": (str, "device"),
        "log_interval": (int, 20),               # steps between progress/NaN checks
        "eval_every": (int, 1),
        "keep_checkpoints": (int, 2),
        # mid-epoch checkpoints (besides each epoch's end), so a SIGKILL loses little:
        # every N optimiser steps and/or every M minutes of wall time (0: never; null, as
        # for every key, means the default: no step checkpoints, one every 30 minutes)
        "checkpoint_every_steps": (int, None),
        "checkpoint_every_minutes": (NUMBER, 30),
    },
}

OPTIONAL_SECTIONS = ("teacher",)


def _type_name(types):
    if not isinstance(types, tuple):
        types = (types,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             list: "a list", dict: "a mapping", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _unknown_key(where, key, allowed, source):
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = " (did you mean %r?)" % close[0] if close else ""
    raise NSTError("%s: unknown key %r%s; allowed keys here: %s"
                   % (source, where + key, hint, ", ".join(sorted(allowed))))


def _validate(section, schema, where, source):
    """Fill defaults and check types of one (nested) mapping, in place."""
    if not isinstance(section, dict):
        raise NSTError("%s: %r must be a mapping of keys to values, got %s"
                       % (source, where.rstrip(".") or "the file", type(section).__name__))
    for key in section:
        if key not in schema:
            _unknown_key(where, key, schema, source)
    for key, spec in schema.items():
        if isinstance(spec, dict):
            if key not in section:
                if key in OPTIONAL_SECTIONS:
                    section[key] = None
                    continue
                section[key] = {}
            if section[key] is None and key in OPTIONAL_SECTIONS:
                continue
            _validate(section[key], spec, where + key + ".", source)
            continue
        types, default = spec
        if key not in section or section[key] is None and default is not REQUIRED:
            if default is REQUIRED:
                raise NSTError("%s: missing required key %r" % (source, where + key))
            section[key] = copy.deepcopy(default)
            continue
        value = section[key]
        ok_types = types if isinstance(types, tuple) else (types,)
        if isinstance(value, bool) and bool not in ok_types:
            ok = False
        elif float in ok_types and isinstance(value, int):
            ok = True
        else:
            ok = isinstance(value, ok_types)
        if not ok:
            raise NSTError("%s: key %r must be %s, got %r"
                           % (source, where + key, _type_name(types), value))


def _validate_transfer(cfg, source):
    entries = cfg["transfer"]
    for i, entry in enumerate(entries):
        _validate(entry, TRANSFER_SCHEMA, "transfer[%d]." % i, source)
        for side in ("student", "teacher"):
            names = entry[side] if isinstance(entry[side], list) else [entry[side]]
            if not names or not all(isinstance(n, str) and n for n in names):
                raise NSTError("%s: transfer[%d].%s must be a feature name or a non-empty list "
                               "of feature names, got %r" % (source, i, side, entry[side]))
    if entries and cfg.get("teacher") is None:
        raise NSTError("%s: transfer losses are configured but there is no 'teacher' "
                       "section; add teacher.network and teacher.checkpoint" % source)


def _merge(base, child):
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path, chain=()):
    path = os.path.abspath(path)
    if path in chain:
        raise NSTError("config %s extends itself (through %s)" % (path, " -> ".join(chain)))
    if not os.path.isfile(path):
        raise NSTError("config file %s does not exist; pass the path of a YAML file "
                       "such as configs/cifar10/kd_nst.yaml" % path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
        # aliases let a few lines expand into an exponentially large document
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise NSTError("config %s uses YAML aliases (*name); write the values out, or "
                           "share settings with `extends:`" % path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise NSTError("config %s is not valid YAML (only plain data is accepted, no "
                       "Python tags): %s" % (path, str(err).replace("\n", " "))) from err
    except RecursionError as err:
        raise NSTError("config %s is nested too deeply to be a config" % path) from err
    except (OSError, UnicodeDecodeError) as err:
        raise NSTError("cannot read config %s: %s" % (path, err)) from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise NSTError("config %s must be a mapping of keys to values at the top level"
                       % path)
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise NSTError("%s: key 'extends' must be a string path" % path)
        parent_path = os.path.join(os.path.dirname(path), parent)
        data = _merge(_read_yaml(parent_path, chain + (path,)), data)
        data.pop("extends", None)
    return data


def parse_override(text):
    """``'data.batch_size=64'`` -> (['data', 'batch_size'], 64); values are YAML."""
    if "=" not in text:
        raise NSTError("override %r must look like key=value, e.g. epochs=2 or "
                       "data.batch_size=64" % text)
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise NSTError("override %r: the value is not valid YAML (%s)" % (text, err)) from err
    return key.strip().split("."), value


def apply_overrides(data, overrides):
    """Apply ``key=value`` strings (``--set``) to a raw config mapping."""
    for text in overrides or ():
        keys, value = parse_override(text)
        set_values(data, {".".join(keys): value})
    return data


def validate_config(data, source="config"):
    """Validate a config mapping (fills defaults); returns it."""
    cfg = copy.deepcopy(data)
    cfg.pop("extends", None)
    _validate(cfg, SCHEMA, "", source)
    _validate_transfer(cfg, source)
    if cfg["epochs"] < 1:
        raise NSTError("%s: 'epochs' must be at least 1, got %d" % (source, cfg["epochs"]))
    if cfg["data"]["batch_size"] < 1:
        raise NSTError("%s: 'data.batch_size' must be at least 1" % source)
    for step in cfg["optimizer"]["lr_steps"]:
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise NSTError("%s: 'optimizer.lr_steps' must be a list of positive epoch "
                           "numbers, got %r" % (source, cfg["optimizer"]["lr_steps"]))
    _check_fidelity_keys(cfg, source)
    if cfg["out"] is None:
        cfg["out"] = os.path.join("runs", cfg["name"])
    return cfg


TEACHER_BATCHNORM = ("running", "batch")


def _check_fidelity_keys(cfg, source):
    """Finite numbers everywhere; teacher.batchnorm and optimizer.no_wd values."""
    _check_finite(cfg, "", source)
    teacher = cfg.get("teacher")
    if teacher is not None and teacher["batchnorm"] not in TEACHER_BATCHNORM:
        raise NSTError("%s: 'teacher.batchnorm' must be one of %s, got %r"
                       % (source, ", ".join(TEACHER_BATCHNORM), teacher["batchnorm"]))
    no_wd = cfg["optimizer"]["no_wd"]
    if not all(isinstance(v, str) and v.isidentifier() for v in no_wd):
        raise NSTError("%s: 'optimizer.no_wd' must be a list of parameter kinds such as "
                       "[beta, bias], got %r" % (source, no_wd))


def _check_finite(node, where, source):
    """One error for the first NaN or infinite number (``lr: .nan``) anywhere."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, "%s%s." % (where, key), source)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, "%s%d." % (where, i), source)
    elif isinstance(node, float) and not math.isfinite(node):
        raise NSTError("%s: key %r must be a finite number, got %r; write a number such as "
                       "0.1" % (source, where.rstrip("."), node))


def set_values(data, values):
    """Set dotted keys in a raw config mapping: ``{'data.batch_size': 64}``;
    a number selects a list item: ``{'transfer.0.end_epoch': 1}``."""
    for dotted, value in (values or {}).items():
        keys = dotted.split(".")
        node = data
        for depth, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, key, dotted)]
                continue
            if not isinstance(node.get(key), (dict, list)):
                node[key] = {}
            node = node[key]
        if isinstance(node, list):
            node[_list_index(node, keys[-1], dotted)] = copy.deepcopy(value)
        else:
            node[keys[-1]] = copy.deepcopy(value)
    return data


def _list_index(items, key, dotted):
    try:
        index = int(key)
        items[index]
    except (ValueError, IndexError):
        raise NSTError("override %r: %r is not an index of a list of %d item(s)"
                       % (dotted, key, len(items))) from None
    return index


def read_config(path):
    """The raw (unvalidated) mapping of a config file, ``extends`` resolved."""
    return _read_yaml(path)


def load_config(path, overrides=(), values=None):
    """Read, merge (``extends``), override and validate a YAML config file.

    ``overrides`` are ``key=value`` strings (``--set``), ``values`` a mapping of
    dotted keys to values; both are applied before validation.
    """
    data = set_values(apply_overrides(_read_yaml(path), overrides), values)
    return validate_config(data, source=os.fspath(path))
