"""``nst hints``: propose hint (transfer) layers by clustering the teacher's layers by CKA.

Which teacher layers should a feature-transfer method (FitNet, AT, NST, ...)
use as hints?  Following the clustering-based hint selection of the related
work (the teacher's candidate layers are clustered by the similarity of their
representations and the cluster centres become the hint points), this tool:

1. runs a fixed sample of images (``--dataset digits`` by default, or CIFAR)
   through the teacher and the student, keeping every candidate layer's
   output (all the networks' stages by default: ``net.stage_names``);
2. measures the similarity of every pair of teacher layers with **linear
   CKA** (centred kernel alignment; Kornblith, Norouzi, Lee & Hinton,
   "Similarity of Neural Network Representations Revisited", ICML 2019) on
   the flattened activations (optionally average-pooled first, ``--pool``):

       CKA(X, Y) = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F),

   ``X_c``, ``Y_c`` the (images x features) activations with every column
   centred.  It is 1 for identical representations and invariant to
   orthogonal transforms and isotropic scaling, so layers of different
   widths compare; it is computed from the n x n Gram matrices, in float64;
3. clusters the teacher's layers on the CKA distance ``1 - CKA`` into
   ``--hints`` clusters (scikit-learn ``AgglomerativeClustering``, average
   linkage on the precomputed distances, or ``KMeans`` on each layer's row of
   CKA similarities with ``--method kmeans``) and proposes each cluster's
   **medoid** (the member with the smallest summed distance to the others;
   ties go to the earlier layer) as a hint point, in network order;
4. pairs every proposed teacher layer with the student layer of highest CKA.

The result is printed, and written as JSON (every matrix, cluster and
proposal) and as a PNG with two heat maps: teacher x teacher CKA with the
clusters outlined and the medoids marked, and teacher x student CKA with the
proposed pairs marked.

The student need not be trained: without ``--student`` weights the network
is initialised with a fixed seed (Xavier), the situation before distillation;
CKA then reflects what its architecture computes on these images.

Examples::

    nst hints runs/demo/teacher --student-net inception_bn_small --student-width 0.25
    nst hints --teacher-net preact_resnet20_cifar --teacher-params T.params \\
        --student-net inception_bn_small --dataset cifar10 --root data --hints 3
"""

import os

import numpy as np

from nst.errors import NSTError
from nst.io import atomic_path, write_json

from .features import ModelSpec, build_untrained, extract, feature_table, load_images, load_network, \
    read_run_config, resolve_path, spec_from_run, stage_ends

__all__ = ["linear_cka", "gram", "cka_from_grams", "cka_matrix", "cluster_layers", "medoids",
           "propose_hints", "make_hints", "add_arguments", "run"]

METHODS = ("agglomerative", "kmeans")
IMAGE_SHAPE = (3, 32, 32)  # the image samples (digits, CIFAR)


# ---------------------------------------------------------------------------
# Linear CKA
# ---------------------------------------------------------------------------

def _flat(x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or len(x) < 2:
        raise NSTError("CKA needs a (images, features...) array with at least 2 images, got "
                       "shape %s" % (x.shape,))
    return x.reshape(len(x), -1)


def gram(x):
    """The centred Gram matrix ``H X X^T H`` (n x n) of (n, ...) activations, float64."""
    x = _flat(x)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def cka_from_grams(k, l):
    """Linear CKA from two centred Gram matrices; 0 when either is all zero."""
    hsic = float(np.sum(k * l))
    norm = float(np.sqrt(np.sum(k * k) * np.sum(l * l)))
    return hsic / norm if norm > 0 else 0.0


def linear_cka(x, y):
    """Linear CKA of two representations of the same n images, (n, ...) each."""
    x, y = _flat(x), _flat(y)
    if len(x) != len(y):
        raise NSTError("CKA compares two representations of the same images: %d vs %d rows"
                       % (len(x), len(y)))
    return cka_from_grams(gram(x), gram(y))


def cka_matrix(rows, cols=None):
    """CKA between every pair of (n, ...) activations: rows x cols (cols default rows)."""
    g_rows = [gram(a) for a in rows]
    g_cols = g_rows if cols is None else [gram(a) for a in cols]
    out = np.zeros((len(g_rows), len(g_cols)))
    for i, k in enumerate(g_rows):
        for j, l in enumerate(g_cols):
            if cols is None and j < i:
                out[i, j] = out[j, i]
            else:
                out[i, j] = cka_from_grams(k, l)
    return out


# ---------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------

def cluster_layers(similarity, k, method="agglomerative", seed=0):
    """Cluster labels (0..k-1, numbered in order of first appearance) of the layers."""
    sim = np.asarray(similarity, dtype=np.float64)
    n = len(sim)
    if not 1 <= k <= n:
        raise NSTError("--hints must be between 1 and the number of teacher candidate layers "
                       "(%d), got %d" % (n, k))
    if method not in METHODS:
        raise NSTError("unknown clustering method %r; choose one of %s"
                       % (method, ", ".join(METHODS)))
    if k == n:
        labels = np.arange(n)
    elif k == 1:
        labels = np.zeros(n, dtype=int)
    elif method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering
        dist = np.clip(1.0 - (sim + sim.T) / 2.0, 0.0, None)
        np.fill_diagonal(dist, 0.0)
        labels = AgglomerativeClustering(n_clusters=k, metric="precomputed",
                                         linkage="average").fit_predict(dist)
    else:
        from sklearn.cluster import KMeans
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(sim)
    order = {}
    for label in labels:
        order.setdefault(int(label), len(order))
    return np.array([order[int(label)] for label in labels])


def medoids(similarity, labels):
    """Index of each cluster's medoid (smallest summed 1 - CKA to its members), by label."""
    dist = 1.0 - np.asarray(similarity, dtype=np.float64)
    out = []
    for label in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == label)
        cost = dist[np.ix_(members, members)].sum(axis=1)
        out.append(int(members[int(np.argmin(cost))]))
    return out


def propose_hints(teacher_cka, cross_cka, teacher_layers, student_layers, k,
                  method="agglomerative", seed=0):
    """The proposals: clusters, medoids (in network order) and their best student layers."""
    labels = cluster_layers(teacher_cka, k, method, seed)
    centres = medoids(teacher_cka, labels)
    proposals = []
    for index in sorted(centres):
        label = int(labels[index])
        best = int(np.argmax(cross_cka[index]))
        proposals.append({"teacher_layer": teacher_layers[index], "teacher_index": index,
                          "cluster": [teacher_layers[i] for i in np.flatnonzero(labels == label)],
                          "student_layer": student_layers[best], "student_index": best,
                          "cka": float(cross_cka[index, best])})
    return labels, proposals


# ---------------------------------------------------------------------------
# Networks and activations
# ---------------------------------------------------------------------------

def _build_untrained(spec, layers, seed):
    import mxnet as mx

    mx.random.seed(seed)
    net = build_untrained(spec.network, dict(spec.params, features=list(layers)), spec.classes)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    net.hybridize(static_alloc=True)
    return net


def _candidate_layers(spec, requested):
    net = build_untrained(spec.network, spec.params, spec.classes)
    if not requested:
        if hasattr(net, "stage_names"):
            return list(net.stage_names)
        # any other network (GluonCV, your own, a checkpoint): the last map of each size
        return [name for name, _ in stage_ends(feature_table(net, IMAGE_SHAPE))]
    layers = []
    for name in requested:
        net.resolve_feature(name)      # NSTError naming the known features
        layers.append(name)
    if len(set(layers)) != len(layers):
        raise NSTError("a layer is named twice in %s" % layers)
    return layers


def _pool(x, size):
    """Average-pool (N, C, H, W) activations to at most size x size (integer blocks)."""
    if size is None or x.ndim != 4:
        return x
    n, c, h, w = x.shape
    kh, kw = max(1, -(-h // size)), max(1, -(-w // size))
    hh, ww = h // kh, w // kw
    x = x[:, :, :hh * kh, :ww * kw].reshape(n, c, hh, kh, ww, kw)
    return x.mean(axis=(3, 5))


def _activations(spec, layers, data, seed, pool, progress, untrained=False):
    net = _build_untrained(spec, layers, seed) if untrained else load_network(spec, layers)
    feats = extract(net, data, progress=progress, desc=spec.label or spec.network)
    return [_pool(f, pool) for f in feats], [list(f.shape[1:]) for f in feats]


# ---------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------

def _plot(path, teacher_cka, cross_cka, t_layers, s_layers, labels, proposals, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    nt, ns = len(t_layers), len(s_layers)
    width = 3.0 + 0.28 * (nt + ns)
    height = 2.6 + 0.28 * nt
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, width), max(4.0, height)),
                             gridspec_kw={"width_ratios": [max(nt, 1), max(ns, 1)]})
    # one colour scale for both panels, from a round value below the smallest CKA
    low = float(min(np.min(teacher_cka), np.min(cross_cka)))
    vmin = max(0.0, np.floor(low * 10.0) / 10.0) if np.isfinite(low) else 0.0
    vmin = min(vmin, 0.9)
    for ax, matrix, cols, name in ((axes[0], teacher_cka, t_layers, "teacher x teacher"),
                                   (axes[1], cross_cka, s_layers, "teacher x student")):
        im = ax.imshow(matrix, vmin=vmin, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=90, fontsize=7)
        ax.set_yticks(range(nt))
        ax.set_yticklabels(t_layers, fontsize=7)
        ax.set_title("linear CKA, %s" % name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    # clusters: outline each run of consecutive members on the diagonal
    for label in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == label)
        for start in members:
            if start - 1 in members:
                continue
            end = start
            while end + 1 in members:
                end += 1
            axes[0].add_patch(Rectangle((start - 0.5, start - 0.5), end - start + 1,
                                        end - start + 1, fill=False, edgecolor="white", lw=1.6))
    for p in proposals:
        i = p["teacher_index"]
        axes[0].plot(i, i, marker="*", color="red", markersize=11)
        axes[1].plot(p["student_index"], i, marker="*", color="red", markersize=11)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------
# The whole proposal
# ---------------------------------------------------------------------------

def make_hints(teacher, student, out_png="hints.png", json_path=None, hints=3,
               method="agglomerative", dataset="digits", root=None, split="train", images=256,
               teacher_layers=None, student_layers=None, pool=None, seed=0, progress=False,
               log=print):
    """Compute the CKA matrices, cluster, propose; write PNG and JSON; return the JSON dict.

    ``teacher``: a :class:`~tools.features.ModelSpec` with a checkpoint.
    ``student``: a ModelSpec; without a checkpoint its network is initialised
    with ``seed`` (an untrained student).
    """
    from train.data import dataset_info

    if images < 2:
        raise NSTError("--images must be at least 2 (CKA centres over the images), got %d"
                       % images)
    if pool is not None and pool < 1:
        raise NSTError("--pool must be a positive size, got %d" % pool)
    if dataset not in ("cifar10", "cifar100", "digits"):
        raise NSTError("nst hints reads cifar10, cifar100 or digits images, not %r" % dataset)
    classes = dataset_info(dataset)["num_classes"]
    for spec in (teacher, student):
        if spec.classes is None:
            spec.classes = classes
    t_layers = _candidate_layers(teacher, teacher_layers)
    s_layers = _candidate_layers(student, student_layers)
    if hints > len(t_layers):
        raise NSTError("--hints %d is more than the %d teacher candidate layers (%s)"
                       % (hints, len(t_layers), ", ".join(t_layers)))
    _, _, chosen, data, _, _ = load_images(dataset, root, split, images)
    untrained = not student.checkpoint
    log("nst hints: %d %s %s images; teacher %s (%d candidate layers), student %s%s "
        "(%d candidate layers)" % (len(chosen), dataset, split, teacher.network, len(t_layers),
                                   student.network, " (untrained)" if untrained else "",
                                   len(s_layers)))
    t_act, t_shapes = _activations(teacher, t_layers, data, seed, pool, progress)
    s_act, s_shapes = _activations(student, s_layers, data, seed, pool, progress, untrained)
    t_grams = [gram(a) for a in t_act]
    s_grams = [gram(a) for a in s_act]
    del t_act, s_act
    teacher_cka = np.array([[cka_from_grams(a, b) for b in t_grams] for a in t_grams])
    cross_cka = np.array([[cka_from_grams(a, b) for b in s_grams] for a in t_grams])
    labels, proposals = propose_hints(teacher_cka, cross_cka, t_layers, s_layers, hints,
                                      method, seed)
    title = ("hint proposal: teacher %s, student %s%s, %d %s images, %s clustering, k=%d"
             % (teacher.network, student.network, " (untrained)" if untrained else "",
                len(chosen), dataset, method, hints))
    _plot(out_png, teacher_cka, cross_cka, t_layers, s_layers, labels, proposals, title)
    result = {"figure": out_png, "metric": "linear CKA (Kornblith et al., ICML 2019) on "
                                           "flattened activations" +
                                           (", average-pooled to at most %dx%d" % (pool, pool)
                                            if pool else ""),
              "method": method, "hints": hints, "seed": seed,
              "data": {"dataset": dataset, "root": root, "split": split,
                       "images": len(chosen), "indices": list(chosen)},
              "teacher": teacher.describe(), "student": dict(student.describe(),
                                                             untrained=untrained),
              "teacher_layers": t_layers, "student_layers": s_layers,
              "teacher_shapes": t_shapes, "student_shapes": s_shapes,
              "teacher_cka": teacher_cka.tolist(), "teacher_student_cka": cross_cka.tolist(),
              "clusters": [[t_layers[i] for i in np.flatnonzero(labels == c)]
                           for c in range(int(labels.max()) + 1)],
              "proposals": proposals}
    json_path = json_path or os.path.splitext(out_png)[0] + ".json"
    write_json(json_path, result)
    log("")
    log("| hint | teacher layer | its cluster | student layer | CKA |")
    log("|---|---|---|---|---|")
    for i, p in enumerate(proposals):
        log("| %d | %s | %s | %s | %.3f |" % (i + 1, p["teacher_layer"], ", ".join(p["cluster"]),
                                              p["student_layer"], p["cka"]))
    log("")
    log("config: student: %s  teacher: %s"
        % ([p["student_layer"] for p in proposals], [p["teacher_layer"] for p in proposals]))
    log("written: %s, %s" % (out_png, json_path))
    return result


# ---------------------------------------------------------------------------
# nst hints
# ---------------------------------------------------------------------------

def _spec(model, net, params, width, label):
    """A ModelSpec from a run folder, a .params file (+ network) or a network name alone."""
    if model and os.path.isdir(model):
        spec = spec_from_run(model, label=label)
        spec.feature = None
        return spec, read_run_config(model)
    path = model or params
    if path and not os.path.isfile(path):
        raise NSTError("%s checkpoint %s does not exist; give a run folder of `nst train` or "
                       "a .params file" % (label, path))
    if path and not net:
        raise NSTError("%s is a .params file: also give its network with --%s-net NAME (or "
                       "pass the run folder instead)" % (path, label))
    if not path and not net:
        return None, None
    return ModelSpec(network=net, checkpoint=path, label=label,
                     params={} if width is None else {"width": float(width)}), None


def add_arguments(parser):
    parser.add_argument("teacher", nargs="?", default=None, metavar="TEACHER_RUN_OR_PARAMS",
                        help="the teacher's run folder (network and weights from it) or .params")
    parser.add_argument("--teacher-net", default=None, help="teacher network of a .params file")
    parser.add_argument("--teacher-params", default=None, metavar="FILE",
                        help="teacher .params file (with --teacher-net)")
    parser.add_argument("--teacher-width", type=float, default=None)
    parser.add_argument("--student", default=None, metavar="RUN_OR_PARAMS",
                        help="a trained student (run folder or .params with --student-net); "
                             "default: --student-net initialised with --seed")
    parser.add_argument("--student-net", default=None, help="student network")
    parser.add_argument("--student-width", type=float, default=None)
    parser.add_argument("--teacher-layers", nargs="+", default=None, metavar="LAYER",
                        help="teacher candidate layers (default: all its stages)")
    parser.add_argument("--student-layers", nargs="+", default=None, metavar="LAYER",
                        help="student candidate layers (default: all its stages)")
    parser.add_argument("--hints", type=int, default=3,
                        help="number of hint layers to propose = clusters (default 3)")
    parser.add_argument("--method", default="agglomerative", choices=METHODS,
                        help="clustering of the CKA distances (default agglomerative)")
    parser.add_argument("--dataset", default=None, choices=("digits", "cifar10", "cifar100"),
                        help="image sample (default: the teacher run's data set, else digits)")
    parser.add_argument("--root", default=None, help="data folder of CIFAR")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--images", type=int, default=256,
                        help="images in the sample (default 256, the first of the split)")
    parser.add_argument("--pool", type=int, default=None, metavar="SIZE",
                        help="average-pool every map to at most SIZE x SIZE before CKA "
                             "(default: full flattened maps)")
    parser.add_argument("--seed", type=int, default=0,
                        help="initialisation of an untrained student and KMeans (default 0)")
    parser.add_argument("-o", "--out", default="hints.png", help="output PNG (default hints.png)")
    parser.add_argument("--json", default=None, help="output JSON (default: OUT with .json)")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    if args.teacher and args.teacher_params:
        raise NSTError("give the teacher once: a positional run folder/.params or "
                       "--teacher-params, not both")
    teacher, t_cfg = _spec(args.teacher, args.teacher_net, args.teacher_params,
                           args.teacher_width, "teacher")
    if teacher is None or not teacher.checkpoint:
        raise NSTError("which teacher? pass its run folder (e.g. runs/demo/teacher) or "
                       "--teacher-params FILE --teacher-net NAME")
    student, _ = _spec(args.student, args.student_net, None, args.student_width, "student")
    if student is None:
        raise NSTError("which student? pass --student-net NAME (an untrained network) or "
                       "--student RUN_FOLDER")
    dataset, root = args.dataset, args.root
    data_cfg = (t_cfg or {}).get("data") or {}
    if dataset is None:
        dataset = data_cfg.get("dataset", "digits")
        if dataset not in ("digits", "cifar10", "cifar100"):
            dataset = "digits"
    if root is None and data_cfg.get("dataset") == dataset and data_cfg.get("root"):
        root = resolve_path(data_cfg["root"], args.teacher, t_cfg) or data_cfg["root"]
    make_hints(teacher, student, args.out, args.json, hints=args.hints, method=args.method,
               dataset=dataset, root=root, split=args.split, images=args.images,
               teacher_layers=args.teacher_layers, student_layers=args.student_layers,
               pool=args.pool, seed=args.seed, progress=not args.no_progress)
    return 0
