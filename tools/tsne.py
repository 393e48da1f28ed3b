"""``nst tsne``: t-SNE of teacher vs student neuron selectivity patterns (the paper's Fig. 5).

Every channel (neuron) of the transfer layer is one point: its H*W activation
map, L2-normalised -- the samples whose distributions NST matches (Eq. 4).
For each student checkpoint the teacher's and the student's points are
embedded *together* by scikit-learn's ``TSNE`` (fixed seed, PCA
initialisation) and drawn in one panel, teacher as blue dots, student as red
triangles, with the squared MMD between the two point sets in the title.
"Before / after NST" is two panels: the student trained alone and the student
trained with NST, against the same teacher.

Points
------
* default: one point per channel, the **mean over the images** of the
  channel's normalised map, normalised again -- a channel's average
  selectivity pattern over the batch (C_T + C_S points);
* ``--per-image``: one point per channel *and* image (N (C_T + C_S) points;
  keep ``--images`` small, t-SNE is quadratic).

Maps of different spatial sizes are first brought to the smaller size as the
losses do (average pooling for integer ratios, else bilinear,
:mod:`train.losses.utils`).  The perplexity is clamped to ``(points - 1) / 3``
when there are too few points for the requested one (the effective value is
in the JSON).

Numbers
-------
* ``mmd2``, in the panel title: the squared MMD between the plotted teacher
  and student point sets, with ``--kernel`` (polynomial d = 2, c = 0 by
  default, as the paper's NST*);
* ``loss_mmd2``: the batch mean over the images of the per-image MMD^2, i.e.
  the value of the training loss ``train.losses.get_loss("nst_<kernel>")`` on
  this batch (without its weight).

With a single image the two coincide.  The JSON beside the PNG holds, per
panel, both numbers, the embedded coordinates and the settings.

Models are given as run folders (networks, widths, layers and the teacher
read from the run's ``checkpoint.json``) or explicitly::

    nst tsne runs/demo/student runs/demo/nst_poly --teacher runs/demo/teacher \\
        --labels "student" "NST" -o tsne.png
    nst tsne --teacher-net preact_resnet20_cifar --teacher-params T.params \\
        --teacher-feature stage3 --student-net inception_bn_small \\
        --student-width 0.25 --student-params S.params --student-feature in5b_bn
"""

import os

import numpy as np

from nst.errors import NSTError
from nst.io import atomic_path, write_json

from .features import (KERNELS, ModelSpec, extract, load_images, load_network, match_maps,
                       mmd2, read_run_config, resolve_path, selectivity_points, spec_from_run,
                       teacher_spec_from_run, transfer_feature)

__all__ = ["make_tsne_figure", "resolve_models", "embed", "effective_perplexity",
           "figure_pixels", "add_arguments", "run"]

TEACHER_STYLE = {"color": "#1f77b4", "marker": "o", "s": 16, "alpha": 0.75}
STUDENT_STYLE = {"color": "#d62728", "marker": "^", "s": 20, "alpha": 0.75}
PANEL_PX = (460, 480)     # width, height in pixels of one panel (at DPI)
DPI = 100


def figure_pixels(panels):
    """(height, width) in pixels of the PNG with ``panels`` panels."""
    return PANEL_PX[1], PANEL_PX[0] * panels


# ---------------------------------------------------------------------------
# Which models
# ---------------------------------------------------------------------------

def _explicit(network, params_file, width, feature, classes, label):
    if not network:
        raise NSTError("%s is a .params file: also give its network with --%s-net NAME "
                       "(or pass the run folder instead)" % (params_file, label))
    params = {} if width is None else {"width": float(width)}
    return ModelSpec(network=network, checkpoint=params_file, params=params, feature=feature,
                     classes=classes, label=None)


def resolve_models(teacher=None, students=(), labels=None, teacher_feature=None,
                   student_feature=None, teacher_net=None, teacher_width=None,
                   student_net=None, student_width=None, classes=None):
    """The teacher :class:`ModelSpec` and the student specs, with their layers filled in.

    ``teacher``: a run folder, a .params file (with ``teacher_net``), a
    ModelSpec, or None for the teacher named by the first distilled student
    run.  ``students``: run folders, .params files (with ``student_net``) or
    ModelSpecs.  A student run trained without a feature transfer borrows the
    layer of another student of the same network; explicit ``*_feature``
    arguments override the runs'.
    """
    specs, hints = [], []
    for item in students:
        if isinstance(item, ModelSpec):
            spec = item
        elif os.path.isdir(item):
            spec = spec_from_run(item)
            cfg = read_run_config(item)
            if cfg.get("teacher"):
                hints.append((item, cfg))
        elif os.path.isfile(item):
            spec = _explicit(student_net, item, student_width, None, classes, "student")
        else:
            raise NSTError("student %s does not exist; give a run folder (e.g. runs/demo/"
                           "nst_poly) or a .params file with --student-net" % item)
        specs.append(spec)
    if not specs:
        raise NSTError("no student given: pass one or more run folders (e.g. runs/demo/student "
                       "runs/demo/nst_poly) or --student-params FILE --student-net NAME")
    if labels:
        if len(labels) != len(specs):
            raise NSTError("%d labels for %d students; give one label per student"
                           % (len(labels), len(specs)))
        for spec, label in zip(specs, labels):
            spec.label = label
    for index, spec in enumerate(specs):
        if not spec.label:
            spec.label = "student %d" % (index + 1) if len(specs) > 1 else "student"

    # teacher
    if isinstance(teacher, ModelSpec):
        tspec = teacher
    elif teacher and os.path.isdir(teacher):
        tspec = spec_from_run(teacher, label="teacher")
        tspec.feature = None      # a teacher run's own transfer layer (if any) is not its role here
    elif teacher and os.path.isfile(teacher):
        tspec = _explicit(teacher_net, teacher, teacher_width, None, classes, "teacher")
    elif teacher:
        raise NSTError("teacher %s does not exist; give its run folder or .params file" % teacher)
    elif hints:
        tspec = teacher_spec_from_run(*hints[0])
    else:
        raise NSTError("which teacher? none of the students is a distilled run naming one: pass "
                       "--teacher RUN_FOLDER or --teacher-params FILE --teacher-net NAME")
    tspec.label = "teacher"

    # layers
    if teacher_feature:
        tspec.feature = teacher_feature
    if not tspec.feature:
        tspec.feature = next((transfer_feature(cfg, "teacher") for _, cfg in hints
                              if transfer_feature(cfg, "teacher")), None)
    if not tspec.feature:
        raise NSTError("which teacher layer? no student run used a feature-map transfer: pass "
                       "--teacher-feature NAME (e.g. stage3 for the CIFAR ResNets)")
    for spec in specs:
        if student_feature:
            spec.feature = student_feature
    for spec in specs:
        if not spec.feature:
            spec.feature = next((o.feature for o in specs
                                 if o.feature and o.network == spec.network), None)
        if not spec.feature:
            raise NSTError("which layer of student %s (%s)? it was trained without a feature "
                           "transfer and no other student of that network names one: pass "
                           "--student-feature NAME (e.g. in5b_bn for Inception-BN)"
                           % (spec.label, spec.network))
    return tspec, specs


# ---------------------------------------------------------------------------
# Embedding and plot
# ---------------------------------------------------------------------------

def effective_perplexity(perplexity, points):
    """``perplexity`` clamped to ``(points - 1) / 3`` (scikit-learn needs it below ``points``)."""
    if perplexity <= 0:
        raise NSTError("--perplexity must be positive, got %g" % perplexity)
    return float(min(perplexity, max(1.0, (points - 1) / 3.0)))


def embed(points, perplexity=30.0, seed=0, iterations=1000):
    """2-D t-SNE of the rows of ``points``, deterministic for a fixed seed: (coords, perplexity)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    points = np.asarray(points, dtype=np.float64)
    if len(points) < 5:
        raise NSTError("t-SNE needs at least 5 points, got %d; use more channels or images"
                       % len(points))
    if iterations < 250:
        raise NSTError("--iterations must be at least 250 (scikit-learn's minimum), got %d"
                       % iterations)
    perp = effective_perplexity(perplexity, len(points))
    kwargs = dict(n_components=2, perplexity=perp, random_state=int(seed), init="pca",
                  learning_rate="auto")
    import inspect
    key = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    kwargs[key] = int(iterations)
    # One OpenMP thread: bitwise reproducible, and on a busy 2-core machine ~10x
    # faster than spinning threads fighting over the cores.
    with threadpool_limits(limits=1):
        coords = TSNE(**kwargs).fit_transform(points)
    return coords, perp


def _panel_title(label, kernel, value):
    return "%s\nMMD$^2$ (%s) = %.4g" % (label, kernel, value)


def _plot(panels, teacher, settings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(panels)
    height, width = figure_pixels(k)
    # +0.25 px: the canvas size is truncated to whole pixels; keep it exact
    fig, axes = plt.subplots(1, k, figsize=((width + 0.25) / DPI, (height + 0.25) / DPI),
                             dpi=DPI, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        t = np.asarray(panel["teacher_xy"])
        s = np.asarray(panel["student_xy"])
        ax.scatter(t[:, 0], t[:, 1], label="teacher %s (%d)" % (teacher.feature, len(t)),
                   edgecolors="none", **TEACHER_STYLE)
        ax.scatter(s[:, 0], s[:, 1], label="student %s (%d)" % (panel["student"]["feature"],
                                                               len(s)),
                   edgecolors="none", **STUDENT_STYLE)
        ax.set_title(_panel_title(panel["label"], settings["kernel"], panel["mmd2"]),
                     fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7.5, loc="lower right", framealpha=0.85, markerscale=1.3)
    mode = "per image" if settings["per_image"] else "mean over images"
    parts = ["t-SNE of neuron selectivity patterns", "teacher %s %s" % (teacher.network,
                                                                       teacher.feature),
             "%s %s split, %d images (%s)" % (settings["dataset"], settings["split"],
                                              settings["images"], mode)]
    if k > 1:
        fig.suptitle("%s: %s, %s" % tuple(parts), fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
    else:                                 # one panel: too narrow for one line
        fig.suptitle("\n".join(parts), fontsize=8.5)
        fig.tight_layout(rect=(0, 0, 1, 0.92))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def _features(spec, data, progress):
    net = load_network(spec, [spec.feature])
    return extract(net, data, progress=progress and len(data) > 256, desc=spec.label)[0]


def make_tsne_figure(teacher, students, out_png, labels=None, json_path=None, dataset=None,
                     root=None, split="test", images=64, indices=None, per_image=False,
                     kernel="poly", perplexity=30.0, seed=0, iterations=1000,
                     teacher_feature=None, student_feature=None, teacher_net=None,
                     teacher_width=None, student_net=None, student_width=None, classes=None,
                     progress=False, log=print):
    """Write the Fig. 5 PNG (one panel per student) and its JSON; returns the JSON dict.

    ``teacher`` / ``students``: run folders, .params files (with ``*_net``) or
    :class:`~tools.features.ModelSpec` objects (see :func:`resolve_models`).
    ``dataset`` / ``root`` default to the first student run's data section,
    else ``digits``.  ``json_path`` defaults to ``out_png`` with ``.json``.
    """
    if kernel not in KERNELS:
        raise NSTError("unknown kernel %r; choose one of %s" % (kernel, ", ".join(KERNELS)))
    tspec, specs = resolve_models(teacher, students, labels, teacher_feature, student_feature,
                                  teacher_net, teacher_width, student_net, student_width, classes)
    run = next((s.run for s in specs if s.run), None)
    cfg = read_run_config(run) if run else {}
    data_cfg = cfg.get("data") or {}
    if dataset is None:
        dataset = data_cfg.get("dataset", "digits")
    if root is None and data_cfg.get("root") and data_cfg.get("dataset") == dataset:
        root = resolve_path(data_cfg["root"], run, cfg) or data_cfg["root"]
    if dataset not in ("cifar10", "cifar100", "digits"):
        raise NSTError("nst tsne reads cifar10, cifar100 or digits images, not %r: pass "
                       "--dataset" % dataset)
    from train.data import dataset_info
    for spec in [tspec] + specs:
        if spec.classes is None:
            spec.classes = dataset_info(dataset)["num_classes"]
    _, _, chosen, data, _, _ = load_images(dataset, root, split, images, indices)
    log("nst tsne: %d %s %s images; teacher %s %s; %d student(s)"
        % (len(chosen), dataset, split, tspec.network, tspec.feature, len(specs)))

    from train.losses import get_loss
    import mxnet as mx

    t_feat = _features(tspec, data, progress)
    settings = {"dataset": dataset, "root": root, "split": split, "images": len(chosen),
                "indices": chosen, "per_image": bool(per_image), "kernel": kernel,
                "kernel_params": {"degree": 2, "c": 0.0} if kernel == "poly" else {},
                "perplexity": float(perplexity), "seed": int(seed), "iterations": int(iterations),
                "points": "per image" if per_image else
                          "mean over images of each channel's L2-normalised map, re-normalised"}
    panels = []
    for spec in specs:
        s_feat = _features(spec, data, progress)
        s_map, t_map = match_maps(s_feat, t_feat)
        t_pts = selectivity_points(t_map, per_image)
        s_pts = selectivity_points(s_map, per_image)
        value = mmd2(t_pts, s_pts, kernel)
        loss = get_loss(KERNELS[kernel])
        loss_value = float(loss(mx.nd.array(s_feat), mx.nd.array(t_feat)).asscalar())
        coords, perp = embed(np.concatenate([t_pts, s_pts]), perplexity, seed, iterations)
        panel = {"label": spec.label, "student": spec.describe(), "mmd2": value,
                 "loss_mmd2": loss_value, "perplexity": perp,
                 "common_size": list(s_map.shape[2:]),
                 "teacher_shape": list(t_feat.shape[1:]), "student_shape": list(s_feat.shape[1:]),
                 "zero_maps": {"teacher": int(np.sum(~np.any(t_pts, axis=1))),
                               "student": int(np.sum(~np.any(s_pts, axis=1)))},
                 "teacher_xy": coords[:len(t_pts)].tolist(),
                 "student_xy": coords[len(t_pts):].tolist()}
        panels.append(panel)
        log("  %s: %s %s, MMD^2 (%s) of the plotted points %.6g; training-loss value on "
            "this batch %.6g" % (spec.label, spec.network, spec.feature, kernel, value,
                                 loss_value))
    _plot(panels, tspec, settings, out_png)
    result = {"figure": out_png, "size_px": list(figure_pixels(len(panels))),
              "settings": settings, "teacher": tspec.describe(), "panels": panels}
    json_path = json_path or os.path.splitext(out_png)[0] + ".json"
    write_json(json_path, result)
    log("written: %s, %s" % (out_png, json_path))
    return result


# ---------------------------------------------------------------------------
# nst tsne
# ---------------------------------------------------------------------------

def add_arguments(parser):
    parser.description = (
        "t-SNE of teacher vs student neuron selectivity patterns (the paper's Fig. 5): every "
        "channel's L2-normalised map at the transfer layer is a point; one panel per student, "
        "with the MMD^2 between the two point sets in its title.")
    parser.add_argument("students", nargs="*", metavar="STUDENT_RUN",
                        help="student run folders (e.g. runs/demo/student runs/demo/nst_poly); "
                             "network, width and layer come from each run's config")
    parser.add_argument("--teacher", default=None, metavar="RUN_OR_PARAMS",
                        help="teacher run folder or .params file (default: the teacher the "
                             "first distilled student run was trained against)")
    parser.add_argument("--teacher-net", default=None, help="teacher network of a .params file")
    parser.add_argument("--teacher-params", default=None, metavar="FILE",
                        help="teacher .params file (with --teacher-net)")
    parser.add_argument("--teacher-width", type=float, default=None)
    parser.add_argument("--teacher-feature", default=None, metavar="LAYER",
                        help="teacher layer (default: the runs' NST teacher layer)")
    parser.add_argument("--student-net", default=None, help="student network of .params files")
    parser.add_argument("--student-params", nargs="+", default=[], metavar="FILE",
                        help="student .params files (with --student-net), one panel each")
    parser.add_argument("--student-width", type=float, default=None)
    parser.add_argument("--student-feature", default=None, metavar="LAYER",
                        help="student layer (default: the runs' NST student layer)")
    parser.add_argument("--classes", type=int, default=None,
                        help="classes of the .params networks (default: the data set's)")
    parser.add_argument("--labels", nargs="+", default=None, help="one panel title per student")
    parser.add_argument("--dataset", default=None, choices=("cifar10", "cifar100", "digits"),
                        help="images to feed (default: the first run's data set, else digits)")
    parser.add_argument("--root", default=None, help="data folder of CIFAR")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--images", type=int, default=None,
                        help="number of images, the first of the split (default 64; 8 with "
                             "--per-image)")
    parser.add_argument("--per-image", action="store_true",
                        help="one point per channel and image instead of per channel")
    parser.add_argument("--kernel", default="poly", choices=sorted(KERNELS),
                        help="MMD kernel of the panel titles (default poly: d=2, c=0)")
    parser.add_argument("--perplexity", type=float, default=30.0,
                        help="t-SNE perplexity (clamped to (points-1)/3; default 30)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE random state (default 0)")
    parser.add_argument("--iterations", type=int, default=1000, help="t-SNE iterations")
    parser.add_argument("-o", "--out", default="tsne.png", help="output PNG (default tsne.png)")
    parser.add_argument("--json", default=None, help="output JSON (default: OUT with .json)")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    students = list(args.students) + list(args.student_params)
    if args.student_params and not args.student_net:
        raise NSTError("--student-params needs --student-net NAME (the network of the files)")
    teacher = args.teacher
    if args.teacher_params:
        if teacher:
            raise NSTError("give the teacher once: --teacher or --teacher-params, not both")
        if not os.path.isfile(args.teacher_params):
            raise NSTError("teacher checkpoint %s does not exist" % args.teacher_params)
        teacher = args.teacher_params
    images = args.images if args.images is not None else (8 if args.per_image else 64)
    for path in args.student_params:
        if not os.path.isfile(path):
            raise NSTError("student checkpoint %s does not exist" % path)
    make_tsne_figure(teacher, students, args.out, labels=args.labels, json_path=args.json,
                     dataset=args.dataset, root=args.root, split=args.split, images=images,
                     per_image=args.per_image, kernel=args.kernel, perplexity=args.perplexity,
                     seed=args.seed, iterations=args.iterations,
                     teacher_feature=args.teacher_feature, student_feature=args.student_feature,
                     teacher_net=args.teacher_net, teacher_width=args.teacher_width,
                     student_net=args.student_net, student_width=args.student_width,
                     classes=args.classes, progress=not args.no_progress)
    return 0
