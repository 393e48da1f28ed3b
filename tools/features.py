"""Shared helpers of the visualisation tools: models from run folders, images, feature maps.

* :class:`ModelSpec` names one network checkpoint and the layer to read;
  :func:`spec_from_run` builds it from a run folder written by ``nst train``
  (``<run>/checkpoint.json`` holds the validated config, ``<run>/student.params``
  the weights), :func:`teacher_spec_from_run` gives the teacher a distilled
  run was trained against.  Relative checkpoint paths in a config were
  relative to the folder training ran in; they are looked up there *and*
  relative to the folder the run's ``out`` implies, so the tools work from any
  working directory.
* :func:`load_network` builds and loads the network with the requested
  feature taps; :func:`extract` runs a batch through it (NumPy in, NumPy out).
* :func:`load_images` picks a fixed, reproducible set of images of a data set
  and normalises them as the trainer does.
* :func:`match_maps`, :func:`normalise_maps` and :func:`mmd2` reproduce the NST
  loss's samples (Eq. 4): the larger map resized to the smaller one exactly as
  :mod:`train.losses.utils` does, every channel's H*W map L2-normalised with
  the same ``eps``, and the squared MMD between two sample sets with the
  linear, polynomial or Gaussian kernel, in float64.

* ``nst features NETWORK`` (:func:`run`) lists the feature names a network
  offers, with their shapes at a given input (:func:`feature_table`, by shape
  inference: no weights needed), and with ``--pair OTHER`` the candidate
  student/teacher pairs: the last feature map of each spatial size
  (:func:`stage_ends`) on both sides, paired when the sizes are equal or an
  integer ratio apart (:func:`candidate_pairs`).

Every problem (a missing folder or checkpoint, an unknown layer, a checkpoint
that does not fit the network) is one :class:`nst.errors.NSTError` with the fix.
"""

import json
import os
from dataclasses import dataclass, field

import numpy as np

from nst.errors import NSTError, first_line
from nst.io import read_json

__all__ = ["ModelSpec", "read_run_config", "spec_from_run", "teacher_spec_from_run",
           "transfer_feature", "resolve_path", "load_network", "extract", "load_images",
           "denormalise", "match_maps", "normalise_maps", "selectivity_points", "mmd2",
           "KERNELS", "EPS", "default_input", "parse_input", "build_untrained", "feature_table",
           "stage_ends", "spatial_ratio", "candidate_pairs", "list_features", "add_arguments",
           "run"]

#: the NST loss's normalisation constant (train.losses.nst: ``eps`` = 1e-10)
EPS = 1e-10
#: --kernel choices -> loss names of train.losses
KERNELS = {"poly": "nst_poly", "linear": "nst_linear", "gaussian": "nst_gaussian"}


@dataclass
class ModelSpec:
    """One network checkpoint and the layer the tools read from it."""

    network: str
    checkpoint: str
    params: dict = field(default_factory=dict)   # get_model options, e.g. {"width": 0.25}
    feature: str = None                          # the layer (feature name) to read
    classes: int = None                          # None: the network's default
    label: str = None
    run: str = None                              # the run folder it came from, if any

    def describe(self):
        """A JSON-able summary for the tools' output files."""
        return {"network": self.network, "params": dict(self.params), "feature": self.feature,
                "checkpoint": self.checkpoint, "classes": self.classes, "run": self.run,
                "label": self.label}


# ---------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------

def read_run_config(run):
    """The validated config a run folder was trained with (``checkpoint.json`` → ``config``)."""
    if not os.path.isdir(run):
        raise NSTError("run folder %s does not exist; give the folder `nst train` wrote "
                       "(its `out`, e.g. runs/demo/nst_poly)" % run)
    manifest = os.path.join(run, "checkpoint.json")
    if not os.path.isfile(manifest):
        raise NSTError("%s has no checkpoint.json, so it is not a run folder of `nst train` "
                       "(or training has not written its first checkpoint yet); give a "
                       "trained run folder, or a .params file with the network options "
                       "(--net / --teacher-net / --student-net)" % run)
    data = read_json(manifest, "run manifest", "the run folder is damaged: retrain it or "
                     "pass a .params file instead")
    cfg = data.get("config") if isinstance(data, dict) else None
    if not isinstance(cfg, dict) or "student" not in cfg:
        raise NSTError("%s has no `config` section; it was not written by `nst train` of this "
                       "project: pass a .params file with the network options instead" % manifest)
    return cfg


def _run_base(run, cfg):
    """The folder training ran in, if the run folder's path ends with the config's ``out``."""
    out = cfg.get("out")
    if not out or os.path.isabs(out):
        return None
    run_abs = os.path.normpath(os.path.abspath(run))
    out_norm = os.path.normpath(out)
    if run_abs == out_norm or run_abs.endswith(os.sep + out_norm):
        return run_abs[:len(run_abs) - len(out_norm)].rstrip(os.sep) or os.sep
    return None


def resolve_path(path, run=None, cfg=None):
    """``path`` as given, else relative to the folder the run was trained in; None if neither."""
    if path is None:
        return None
    candidates = [path]
    if not os.path.isabs(path) and run is not None and cfg is not None:
        base = _run_base(run, cfg)
        if base is not None:
            candidates.append(os.path.join(base, path))
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    return None


def _classes_of(cfg, run=None):
    """The run's number of classes: the data set's, or the lines of ``<run>/classes.txt``
    (written for data sets that know their class names, e.g. image folders)."""
    from train.data import DATASETS

    dataset = (cfg.get("data") or {}).get("dataset")
    info = DATASETS.get(dataset)
    if info is not None:
        return info["num_classes"]
    names = os.path.join(run, "classes.txt") if run else None
    if names and os.path.isfile(names):
        with open(names, "r", encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip()) or None
    return None


def transfer_feature(cfg, side="student"):
    """The ``side`` feature of the run's feature-map transfer (NST first), or None."""
    entries = [e for e in cfg.get("transfer") or []
               if e.get(side) and e.get(side) != "logits" and e.get("student") != "logits"]
    nst = [e for e in entries if str(e.get("loss", "")).startswith("nst")]
    chosen = (nst or entries or [None])[0]
    return None if chosen is None else chosen[side]


def spec_from_run(run, label=None):
    """The trained network of a run folder: its config's ``student`` and ``<run>/student.params``.

    ``feature`` is the student layer of the run's NST (else any feature-map)
    transfer, or None when the run used none.  While a run is still training,
    the latest checkpoint's weights are used instead of ``student.params``.
    """
    cfg = read_run_config(run)
    params_file = os.path.join(run, "student.params")
    if not os.path.isfile(params_file):
        latest = None
        try:
            with open(os.path.join(run, "checkpoint.json"), "r", encoding="utf-8") as handle:
                latest = (json.load(handle).get("files") or {}).get("student")
        except (OSError, ValueError):
            latest = None
        if latest and os.path.isfile(os.path.join(run, latest)):
            params_file = os.path.join(run, latest)
        else:
            raise NSTError("%s has no student.params (training has not finished): finish or "
                           "resume it with `nst train CONFIG` (it resumes), or pass a .params "
                           "file" % run)
    student = cfg["student"]
    return ModelSpec(network=student["network"], params=dict(student.get("params") or {}),
                     checkpoint=params_file, feature=transfer_feature(cfg, "student"),
                     classes=_classes_of(cfg, run), label=label or os.path.basename(
                         os.path.normpath(run)), run=run)


def teacher_spec_from_run(run, cfg=None):
    """The teacher a distilled run was trained against (None if it had no teacher)."""
    cfg = cfg or read_run_config(run)
    teacher = cfg.get("teacher")
    if not teacher:
        return None
    path = resolve_path(teacher.get("checkpoint"), run, cfg)
    if path is None:
        raise NSTError("the teacher checkpoint %r named by %s/checkpoint.json does not exist "
                       "(relative to here or to the folder the run was trained in); pass the "
                       "teacher explicitly with --teacher RUN_FOLDER or --teacher-params FILE "
                       "--teacher-net NAME" % (teacher.get("checkpoint"), run))
    return ModelSpec(network=teacher["network"], params=dict(teacher.get("params") or {}),
                     checkpoint=path, feature=transfer_feature(cfg, "teacher"),
                     classes=_classes_of(cfg, run), label="teacher", run=None)


# ---------------------------------------------------------------------------
# Networks and features
# ---------------------------------------------------------------------------

def checkpoint_params(spec):
    """``spec.params`` for building the network its checkpoint fills: a GluonCV model
    without ``pretrained`` weights (they come from the checkpoint: no download)."""
    params = dict(spec.params)
    if str(spec.network).strip().lower().startswith("gluoncv:"):
        params["pretrained"] = False
    return params


def load_network(spec, features, ctx=None):
    """Build ``spec.network`` returning ``(logits, *features)`` and load its checkpoint."""
    import mxnet as mx
    import symbols

    ctx = ctx or mx.cpu()
    if not spec.checkpoint or not os.path.isfile(spec.checkpoint):
        raise NSTError("checkpoint %s does not exist; give the .params file `nst train` wrote "
                       "(<run>/student.params) or the run folder" % spec.checkpoint)
    net = symbols.get_model(spec.network, classes=spec.classes, features=list(features),
                            **checkpoint_params(spec))
    try:
        net.load_parameters(spec.checkpoint, ctx=ctx)
    except Exception as err:  # AssertionError / MXNetError on a mismatch
        first = first_line(err)
        raise NSTError("checkpoint %s does not fit network %s %s with %s classes (%s); give "
                       "the network, width and classes it was trained with (a run folder "
                       "carries them)" % (spec.checkpoint, spec.network, spec.params or "",
                                          spec.classes or "default", first)) from err
    net.hybridize(static_alloc=True)
    return net


def extract(net, data, batch_size=64, ctx=None, progress=False, desc="features"):
    """Run float32 NCHW ``data`` through ``net``; returns the list of feature arrays (no logits)."""
    import mxnet as mx

    ctx = ctx or mx.cpu()
    chunks = None
    starts = range(0, len(data), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    for start in starts:
        out = net(mx.nd.array(data[start:start + batch_size], ctx=ctx))
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        arrays = [o.asnumpy() for o in out[1:]]
        chunks = [[a] for a in arrays] if chunks is None else \
            [c + [a] for c, a in zip(chunks, arrays)]
    return [np.concatenate(c, axis=0) for c in chunks]


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

def load_images(dataset="digits", root=None, split="test", count=64, indices=None):
    """``(images uint8 NHWC, labels, indices, data float32 NCHW, mean, std)``.

    The images are the first ``count`` of the split, or ``indices`` when given
    (a fixed, reproducible choice); ``data`` is normalised with the data set's
    mean and std, as the trainer feeds the network at test time.
    """
    from train.data import dataset_info, load_dataset, normalize_batch

    images, labels = load_dataset(dataset, root, split)
    if indices is not None:
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < len(images)]
        if bad:
            raise NSTError("image index %d is out of range: the %s %s split has %d images "
                           "(0..%d)" % (bad[0], dataset, split, len(images), len(images) - 1))
    else:
        if count < 1:
            raise NSTError("the number of images must be at least 1, got %d" % count)
        indices = list(range(min(count, len(images))))
    info = dataset_info(dataset)
    chosen = images[indices]
    data = normalize_batch(chosen, info["mean"], info["std"])
    return chosen, labels[indices], indices, data, info["mean"], info["std"]


def denormalise(data, mean, std):
    """float32 NCHW normalised batch -> float NHWC in [0, 1], for display."""
    mean = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
    return np.clip(data * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1)


# ---------------------------------------------------------------------------
# Neuron selectivity samples and MMD
# ---------------------------------------------------------------------------

def match_maps(student, teacher):
    """Bring (N, C, H, W) student and teacher maps to their common (smaller) size, as the losses."""
    import mxnet as mx
    from train.losses.utils import match_spatial

    if student.shape[2:] == teacher.shape[2:]:
        return student, teacher
    s, t, _ = match_spatial(mx.nd, mx.nd.array(student), mx.nd.array(teacher),
                            student.shape[1:], teacher.shape[1:])
    return s.asnumpy(), t.asnumpy()


def normalise_maps(maps, eps=EPS):
    """(..., H*W) rows divided by ``sqrt(||row||^2 + eps)`` (the loss's L2 normalisation)."""
    maps = np.asarray(maps, dtype=np.float64)
    return maps / np.sqrt(np.sum(maps * maps, axis=-1, keepdims=True) + eps)


def selectivity_points(feature, per_image=False, eps=EPS):
    """The neuron selectivity samples of a (N, C, H, W) feature map, one row per point.

    ``per_image``: every channel of every image is a point, (N*C, H*W).
    Otherwise (default) one point per channel, (C, H*W): the mean over the
    images of the channel's L2-normalised map, L2-normalised again (so every
    point has unit norm, like the loss's samples; a channel that is zero on
    every image stays at the origin).
    """
    n, c = feature.shape[:2]
    samples = normalise_maps(np.asarray(feature).reshape(n, c, -1), eps)
    if per_image:
        return samples.reshape(n * c, -1)
    return normalise_maps(samples.mean(axis=0), eps)


def _chunked_sum(x, y, fn, chunk=1024):
    total = 0.0
    for start in range(0, len(x), chunk):
        total += float(np.sum(fn(x[start:start + chunk], y)))
    return total


def mmd2(teacher, student, kernel="poly", degree=2, c=0.0):
    """Squared MMD (Eq. 4) between two sets of samples (rows), in float64.

    ``kernel``: ``poly`` (``(x.y + c)^degree``, default d = 2, c = 0),
    ``linear`` (``x.y``) or ``gaussian`` (``exp(-|x-y|^2 / 2 sigma^2)``, sigma^2
    the mean squared distance over all pairs of the pooled samples, as
    ``nst_gaussian``).  The samples are used as given (normalise them first).
    """
    t = np.asarray(teacher, dtype=np.float64)
    s = np.asarray(student, dtype=np.float64)
    if t.ndim != 2 or s.ndim != 2 or t.shape[1] != s.shape[1] or not len(t) or not len(s):
        raise NSTError("mmd2 needs two non-empty sample sets of the same dimension, got %s and %s"
                       % (t.shape, s.shape))
    if kernel == "linear":
        diff = t.mean(axis=0) - s.mean(axis=0)
        return float(diff @ diff)
    if kernel == "poly":
        if degree == 2 and c == 0:     # Eq. 9: || S^T S / C_S - T^T T / C_T ||_F^2
            diff = s.T @ s / len(s) - t.T @ t / len(t)
            return float(np.sum(diff * diff))

        def k(a, b):
            return (a @ b.T + c) ** degree
    elif kernel == "gaussian":
        z = np.concatenate([t, s], axis=0)
        sq = np.sum(z * z, axis=1)
        mean = z.mean(axis=0)
        sigma2 = max(2.0 * sq.mean() - 2.0 * float(mean @ mean), 1e-12)

        def k(a, b):
            d2 = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
            return np.exp(-np.maximum(d2, 0.0) / (2.0 * sigma2))
    else:
        raise NSTError("unknown kernel %r; choose one of %s" % (kernel, ", ".join(KERNELS)))
    k_tt = _chunked_sum(t, t, k) / len(t) ** 2
    k_ss = _chunked_sum(s, s, k) / len(s) ** 2
    k_ts = _chunked_sum(t, s, k) / (len(t) * len(s))
    return float(k_tt + k_ss - 2.0 * k_ts)


# ---------------------------------------------------------------------------
# `nst features`: what a network can be tapped at
# ---------------------------------------------------------------------------

#: built-in networks fed 32 x 32 images (the rest: 224 x 224)
_SMALL_INPUT = ("_cifar", "inception_bn_small")


def default_input(network):
    """The input shape ``(C, H, W)`` a network is meant for (built-in CIFAR nets: 32 x 32)."""
    key = str(network).strip().lower()
    return (3, 32, 32) if key.endswith(_SMALL_INPUT) else (3, 224, 224)


def parse_input(text):
    """``'3,32,32'`` -> ``(3, 32, 32)``."""
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise NSTError("--input must be C,H,W (three positive integers, e.g. 3,224,224), got %r"
                       % (text,))
    return shape


def build_untrained(network, params=None, classes=None):
    """``network`` with feature taps but no weights (shape inference needs none).

    GluonCV models are built with ``pretrained: false`` unless ``params`` says
    otherwise, so listing features downloads nothing.
    """
    import symbols

    params = dict(params or {})
    if str(network).strip().lower().startswith("gluoncv:"):
        params.setdefault("pretrained", False)
    return symbols.get_model(network, classes=classes, **params)


def feature_table(net, data_shape):
    """``[(name, per-sample shape), ...]`` of every feature of ``net``, in network order."""
    names = list(net.feature_names)
    shapes = net.feature_shapes((1,) + tuple(data_shape), names)
    return [(name, tuple(shapes[name][1:])) for name in names]


def stage_ends(table):
    """The last feature map (C, H, W) of each run of equal spatial size, in network order:
    the natural hint points (the output of each resolution stage).  1 x 1 maps (after
    global pooling) are left out: a spatial transfer loss has nothing to compare there."""
    ends = []
    for index, (name, shape) in enumerate(table):
        if len(shape) != 3 or shape[1:] == (1, 1):  # 1 x 1 maps have no spatial pattern
            continue
        following = [s for _, s in table[index + 1:] if len(s) == 3]
        if not following or following[0][1:] != shape[1:]:
            ends.append((name, shape))
    # a size may recur (a branch listed after the next stage): keep its last occurrence
    last = {}
    for name, shape in ends:
        last[shape[1:]] = (name, shape)
    return [item for item in ends if last[item[1][1:]] == item]


def spatial_ratio(student_shape, teacher_shape):
    """Teacher / student spatial size as ``(k, 1)`` (teacher k times larger), ``(1, k)``
    (student k times larger) or ``(1, 1)``; None unless one is an integer multiple of
    the other in both dimensions by the same factor."""
    (hs, ws), (ht, wt) = student_shape[-2:], teacher_shape[-2:]
    if (hs, ws) == (ht, wt):
        return (1, 1)
    if ht % hs == 0 and wt % ws == 0 and ht // hs == wt // ws:
        return (ht // hs, 1)
    if hs % ht == 0 and ws % wt == 0 and hs // ht == ws // wt:
        return (1, hs // ht)
    return None


def candidate_pairs(student_table, teacher_table, max_ratio=4):
    """``[(student name, shape, teacher name, shape, (num, den)), ...]``: every pair of
    stage ends (:func:`stage_ends`) whose spatial sizes are equal or an integer ratio
    of at most ``max_ratio`` apart (the feature-map losses pool the larger map down to
    the smaller one), equal sizes first."""
    pairs = []
    for s_name, s_shape in stage_ends(student_table):
        for t_name, t_shape in stage_ends(teacher_table):
            ratio = spatial_ratio(s_shape, t_shape)
            if ratio is not None and max(ratio) <= max_ratio:
                pairs.append((s_name, s_shape, t_name, t_shape, ratio))
    pairs.sort(key=lambda p: (max(p[4]), -p[1][-1]))
    return pairs


def _shape_text(shape):
    return "x".join(str(d) for d in shape)


def add_arguments(parser):
    parser.add_argument("network", help="a built-in network (e.g. inception_bn_small), "
                        "gluoncv:<model>, python:<module>:<class> or mxnet_checkpoint")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a network param, as in a config's params (repeatable), e.g. "
                             "--param width=0.25, --param kwargs.width=8, --param prefix=models/r")
    parser.add_argument("--input", default=None, metavar="C,H,W",
                        help="input shape (default 3,32,32 for the built-in CIFAR networks, "
                             "else 3,224,224)")
    parser.add_argument("--classes", type=int, default=None,
                        help="number of classes to build the network for")
    parser.add_argument("--pair", default=None, metavar="OTHER",
                        help="a second network (the teacher): list candidate student/teacher "
                             "feature pairs of equal or integer-ratio spatial size")
    parser.add_argument("--pair-param", action="append", default=[], metavar="KEY=VALUE",
                        help="a param of the --pair network (repeatable)")
    parser.add_argument("--max-ratio", type=int, default=4,
                        help="largest spatial size ratio of a listed pair (default 4)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the features (and pairs) as JSON")


def list_features(network, params=None, data_shape=None, classes=None):
    """``(net, [(name, shape)], logits name or None)`` of a network."""
    net = build_untrained(network, params, classes)
    shape = tuple(data_shape or default_input(network))
    return net, feature_table(net, shape), getattr(net, "logits_name", None)


def _print_table(label, shape, table, logits):
    print("%s, input %s: %d features (name, shape per image)"
          % (label, _shape_text(shape), len(table)))
    width = max(len(name) for name, _ in table) if table else 0
    for name, feature_shape in table:
        mark = "  <- logits" if name == logits else ""
        print("  %-*s  %s%s" % (width, name, _shape_text(feature_shape), mark))


def run(args):
    from train.config import apply_overrides

    shape = parse_input(args.input) if args.input else default_input(args.network)
    _, table, logits = list_features(args.network, apply_overrides({}, args.param), shape,
                                     args.classes)
    _print_table(args.network, shape, table, logits)
    result = {"network": args.network, "input": list(shape),
              "features": [{"name": n, "shape": list(s)} for n, s in table]}
    if args.pair:
        _, other, other_logits = list_features(args.pair, apply_overrides({}, args.pair_param),
                                               shape, args.classes)
        print()
        _print_table(args.pair, shape, other, other_logits)
        pairs = candidate_pairs(table, other, max_ratio=args.max_ratio)
        print()
        print("candidate pairs, student %s -> teacher %s (the last feature map of each spatial "
              "size; rank them with `nst hints`):" % (args.network, args.pair))
        if not pairs:
            print("  none: no spatial sizes are equal or an integer ratio apart at this input")
        s_width = max([len(p[0]) for p in pairs] or [0])
        t_width = max([len(p[2]) for p in pairs] or [0])
        for s_name, s_shape, t_name, t_shape, (num, den) in pairs:
            relation = "same size" if num == den else (
                "teacher %dx larger" % num if num > 1 else "student %dx larger" % den)
            print("  %-*s %-10s  %-*s %-10s  %s" % (s_width, s_name, _shape_text(s_shape),
                                                   t_width, t_name, _shape_text(t_shape),
                                                   relation))
        result["pair"] = {"network": args.pair,
                          "features": [{"name": n, "shape": list(s)} for n, s in other]}
        result["pairs"] = [{"student": p[0], "student_shape": list(p[1]), "teacher": p[2],
                            "teacher_shape": list(p[3]), "ratio": list(p[4])} for p in pairs]
    if args.json:
        from nst.io import write_json
        write_json(args.json, result)
    return 0
