"""``nst bench [WHAT]``: benchmarks, printed as Markdown tables or one JSON object.

``nst bench`` (= ``nst bench all``) runs, in one process and in this order,

``losses``
    the NST loss against the original C x C formulation (below);
``step``
    the overhead of a KD + NST distillation step over a student training step
    plus a teacher forward pass (:mod:`benchmarks.step`);
``data``
    the input pipelines' images/s against what the step consumes
    (:mod:`benchmarks.pipeline`);
``scaling``
    images/s on 1, 2, 4 contexts and under dist_sync (:mod:`benchmarks.scaling`);
``threads``
    training images/s with ``nst``'s default OpenMP thread count (one per usable
    core) against one thread, interleaved in two worker processes
    (:mod:`benchmarks.threads`: ``omp_threads_default``,
    ``train_speedup_default_vs_one_thread``),

prints a summary table (or, with ``--json``, one JSON object holding every
figure) and writes ``bench.json`` and a bar chart ``bench.png`` to ``--out``
(default ``runs/bench``).  ``--quick`` shrinks every workload (about a minute
in all, for the smoke test); ``--engine threaded`` and
``--openblas-coretype Haswell`` and ``--omp-threads N`` re-run in a subprocess
with MXNet's threaded engine, OpenBLAS's Haswell kernels or N OpenMP threads,
for comparison (``nst`` itself runs the naive engine on CPU, the kernels the
bundled OpenBLAS picks and one OpenMP thread per usable core, :mod:`nst.runtime`).

Each benchmark is a function registered in :data:`BENCHMARKS` under its name
(:func:`benchmarks.common.benchmark`); it returns a dict with ``metrics`` (its
part of the JSON object), ``markdown`` (the human report) and optionally
``plot`` (panels of the chart).  Timing protocol: :mod:`benchmarks.common`
(interleaved rounds, medians, ratios of the same rounds); figures are ratios
measured in one process, never timed unit tests.

``losses``
    Forward + backward of the NST polynomial loss (``nst_poly``, this
    implementation) at the two paper shapes -- the ``in5b`` features of
    CIFAR (student Inception-BN-small 336x8x8, teacher ResNet-1001 256x8x8,
    batch 128) and ImageNet (student Inception-BN 1024x7x7, teacher
    ResNet-101 2048x7x7, batch 64) -- against

    * the original MXNet formulation (TuSimple/neuron-selectivity-transfer,
      ``symbol/transfer.py::mmd_poly``), rewritten op for op below as
      :class:`OriginalMMDPoly`: C x C channel Grams built with explicit
      transposes and ``batch_dot``, ``MakeLoss(grad_scale=50)``;
    * one training step (forward + backward + SGD update) of the student
      network, ``symbols.get_model("inception_bn_small")`` at 32x32 and
      ``symbols.get_model("inception_bn")`` at 224x224 (the latter skipped
      with ``--quick``).

    Without ``--quick`` it also times the other transfer losses at the CIFAR
    shape.  ``--quick`` uses 3 rounds and a quarter of the ImageNet batch
    (the speedup compares per-sample work; the batch only amortises fixed
    overheads, so it shifts a little), and skips the ImageNet training step.
"""

import json
import os
import subprocess
import sys
import time

import mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import HybridBlock

from benchmarks.common import BENCHMARKS, Timer, benchmark, environment, loadavg
# importing them registers the "data", "scaling", "step" and "threads" benchmarks
from benchmarks import pipeline as _data, scaling as _scaling, step as _step  # noqa: F401
from benchmarks import threads as _threads  # noqa: F401
from nst.errors import NSTError

__all__ = ["add_arguments", "run", "BENCHMARKS", "benchmark", "Timer", "OriginalMMDPoly",
           "ORDER"]

#: what ``nst bench`` / ``nst bench all`` runs, in this order (later ones read earlier results)
ORDER = ("losses", "step", "data", "scaling", "threads")
DEFAULT_OUT = os.path.join("runs", "bench")
ENGINES = {"naive": "NaiveEngine", "threaded": "ThreadedEnginePerDevice"}


def add_arguments(parser):
    parser.add_argument("what", nargs="?", default="all", choices=list(ORDER) + ["all"],
                        help="what to benchmark (default: all, in this order): " + "; ".join(
                            "%s = %s" % (k, BENCHMARKS[k][1]) for k in ORDER))
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the metrics) instead of Markdown tables")
    parser.add_argument("--repeat", type=int, default=None, metavar="N",
                        help="timed rounds per measurement, median reported "
                             "(default 5, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and much smaller workloads (about a minute for all)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write bench.json and bench.png (the chart) here "
                             "(default %s; '' writes nothing)" % DEFAULT_OUT)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--engine", choices=sorted(ENGINES), default=None,
                        help="run in a subprocess with this MXNet engine (nst uses the naive "
                             "engine on CPU; 'threaded' is MXNet's default, for comparison)")
    parser.add_argument("--omp-threads", type=int, default=None, metavar="N",
                        help="run in a subprocess with OMP_NUM_THREADS=N (nst's default is "
                             "one thread per core the process may use)")
    parser.add_argument("--openblas-coretype", default=None, metavar="NAME",
                        help="run in a subprocess with OPENBLAS_CORETYPE=NAME (e.g. Haswell; "
                             "for comparison only: the bundled OpenBLAS picks its own kernels)")


def run(args):
    if args.repeat is not None and args.repeat < 1:
        raise NSTError("--repeat must be >= 1, got %d" % args.repeat)
    if args.engine or args.openblas_coretype or args.omp_threads:
        return _run_variant(args)
    args.progress = not args.no_progress
    names = list(ORDER) if args.what == "all" else [args.what]
    shared, results = {}, {}
    start = time.time()
    load_start = loadavg()
    for name in names:
        func, _ = BENCHMARKS[name]
        results[name] = func(args, shared)
    if len(names) == 1:
        metrics = dict(results[names[0]]["metrics"])
        markdown = results[names[0]]["markdown"]
    else:
        metrics, markdown = _combine(results, args)
    metrics["benchmarks"] = names
    metrics["seconds"] = time.time() - start
    metrics["loadavg_start"], metrics["loadavg_end"] = load_start, loadavg()
    metrics.setdefault("environment", environment())
    metrics["command"] = _command(args)
    out = DEFAULT_OUT if args.out is None else args.out
    written = _write_outputs(out, metrics, results) if out else []
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(markdown)
        print("\n%s; %.0f s; load average %s -> %s.%s" % (
            _machine(metrics["environment"]), metrics["seconds"], load_start,
            metrics["loadavg_end"], " Wrote %s." % ", ".join(written) if written else ""))
    return 0


def _command(args):
    parts = ["nst", "bench"] + ([args.what] if args.what != "all" else [])
    parts += ["--quick"] if args.quick else []
    parts += ["--repeat", str(args.repeat)] if args.repeat else []
    return " ".join(parts)


def _machine(env):
    return "%s, %s cores, MXNet %s, %s, %s operator thread(s), OpenBLAS kernels %s%s" % (
        env.get("cpu_model"), env.get("cpu_count"), env.get("mxnet"), env.get("engine"),
        env.get("mxnet_omp_threads"), env.get("openblas_core"),
        " (OPENBLAS_CORETYPE=%s)" % env["openblas_coretype_env"]
        if env.get("openblas_coretype_env") else "")


def _run_variant(args):
    """Re-run this benchmark in a subprocess with another engine / BLAS kernel choice."""
    env = dict(os.environ)
    label = []
    if args.engine:
        env["MXNET_ENGINE_TYPE"] = ENGINES[args.engine]
        label.append("engine-" + args.engine)
    if args.openblas_coretype:
        env["OPENBLAS_CORETYPE"] = args.openblas_coretype
        label.append("openblas-" + args.openblas_coretype)
    if args.omp_threads:
        if args.omp_threads < 1:
            raise NSTError("--omp-threads must be >= 1, got %d" % args.omp_threads)
        env["OMP_NUM_THREADS"] = str(args.omp_threads)
        label.append("omp-%d" % args.omp_threads)
    out = args.out if args.out is not None else os.path.join(DEFAULT_OUT, "_".join(label))
    command = [sys.executable, "-m", "nst.cli", "bench", args.what, "--out", out]
    command += ["--json"] if args.json else []
    command += ["--quick"] if args.quick else []
    command += ["--no-progress"] if args.no_progress else []
    command += ["--repeat", str(args.repeat)] if args.repeat else []
    if not args.json:
        print("[variant: %s, in a subprocess]" % ", ".join(
            "%s=%s" % kv for kv in (("MXNET_ENGINE_TYPE", env.get("MXNET_ENGINE_TYPE")),
                                    ("OPENBLAS_CORETYPE", env.get("OPENBLAS_CORETYPE")),
                                    ("OMP_NUM_THREADS", env.get("OMP_NUM_THREADS")))
            if kv[1]), flush=True)
    return subprocess.call(command, env=env)


# ------------------------------------------------------------------ the report

_HEADLINES = (
    # key, label, format, target (text), test
    ("step_overhead_cifar", "KD+NST step / (student step + teacher forward), CIFAR", "%.3f",
     "<= 1.10", lambda v: v <= 1.10),
    ("step_overhead_imagenet", "KD+NST step / (student step + teacher forward), "
     "ImageNet 112x112", "%.3f", "<= 1.10", lambda v: v <= 1.10),
    ("step_overhead_expected_cifar", "... expected from the KD + NST losses' own cost, CIFAR",
     "%.3f", "", None),
    ("step_overhead_expected_imagenet", "... expected from the KD + NST losses' own cost, "
     "ImageNet", "%.3f", "", None),
    ("augment_images_per_s", "augmented, normalised CIFAR images/s (batch 128)", "%.0f",
     ">= 40000", lambda v: v >= 40000),
    ("augment_headroom_cifar", "... relative to what the CIFAR KD+NST step consumes", "%.0fx",
     "", None),
    ("recordio_images_per_s", "ImageNet RecordIO iterator images/s (224x224)", "%.0f", "", None),
    ("nst_poly_speedup_cifar", "NST loss speed-up over the original C x C form, CIFAR",
     "%.1fx", ">= 5x", lambda v: v >= 5),
    ("nst_poly_speedup_imagenet", "NST loss speed-up over the original C x C form, ImageNet",
     "%.1fx", ">= 40x", lambda v: v >= 40),
    ("nst_share_of_step_cifar", "NST loss (fwd+bwd) / CIFAR student step", "%.2f%%",
     "<= 3%", lambda v: v <= 0.03),
    ("scaling_2ctx", "images/s on 2 contexts / 1 context (same 2 cores)", "%.2f", "", None),
    ("scaling_4ctx", "images/s on 4 contexts / 1 context (same 2 cores)", "%.2f", "", None),
    ("scaling_dist_sync_2workers", "images/s, dist_sync 2 local workers / 1 context", "%.2f",
     "", None),
    ("omp_threads_default", "OpenMP operator threads nst uses by default (usable cores)", "%d",
     "", None),
    ("train_speedup_default_vs_one_thread", "training images/s, default threads / one thread",
     "%.2fx", ">= 1.7x on 2 cores", None),
)


def _combine(results, args):
    metrics = {}
    for name in ORDER:
        if name in results:
            metrics.update(results[name]["metrics"])
    met = {}
    rows = ["| figure | value | target |", "|---|---:|---|"]
    for key, label, fmt, target, test in _HEADLINES:
        value = metrics.get(key)
        if value is None:
            continue
        shown = fmt % (100 * value if fmt.endswith("%%") else value)
        verdict = ""
        if test is not None:
            met[key] = bool(test(value))
            verdict = "%s: %s" % (target, "met" if met[key] else "NOT met")
        rows.append("| %s | %s | %s |" % (label, shown, verdict))
    metrics["targets_met"] = met
    metrics["meets_targets"] = all(met.values())
    metrics["quick"] = bool(args.quick)
    parts = ["## Summary", ""] + rows
    for name in ORDER:
        if name in results:
            parts += ["", "## %s" % name, "", results[name]["markdown"]]
    return metrics, "\n".join(parts)


def _write_outputs(out, metrics, results):
    from nst.io import write_json

    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise NSTError("cannot create the output folder %s (%s); choose another with --out"
                       % (out, err.strerror or err)) from err
    written = [os.path.join(out, "bench.json")]
    write_json(written[0], metrics)
    panels = {}
    for name in ORDER:
        if name in results:
            panels.update(results[name].get("plot", {}))
    if panels:
        written.append(os.path.join(out, "bench.png"))
        _plot(panels, written[-1], _machine(metrics["environment"]))
    return written


def _plot(panels, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nst.io import atomic_path

    order = [p for p in ("step", "losses", "data", "scaling") if p in panels]
    fig, axes = plt.subplots(len(order), 1, figsize=(9, 2.6 * len(order) + 0.6), squeeze=False)
    for ax, name in zip(axes[:, 0], order):
        rows = panels[name]
        if name == "step":
            labels = [r[0] for r in rows]
            a = [r[1] / 1e3 for r in rows]
            b = [r[2] / 1e3 for r in rows]
            over = [max(0.0, (r[3] - r[1] - r[2]) / 1e3) for r in rows]
            y = range(len(rows))
            ax.barh(y, a, color="#4c72b0", label="(a) student step")
            ax.barh(y, b, left=a, color="#55a868", label="(b) teacher forward")
            ax.barh(y, over, left=[i + j for i, j in zip(a, b)], color="#c44e52",
                    label="overhead of (c) KD+NST step")
            for i, r in enumerate(rows):
                ax.text(r[3] / 1e3, i, "  (c)/((a)+(b)) = %.3f" % r[4], va="center", fontsize=8)
            ax.set_yticks(list(y))
            ax.set_yticklabels(labels)
            ax.set_xlabel("seconds per step")
            ax.set_title("Distillation step breakdown")
            ax.legend(fontsize=7, loc="upper right")
            ax.set_xlim(0, max(r[3] for r in rows) / 1e3 * 1.45)
        elif name == "losses":
            labels = [r[0] for r in rows]
            y = range(len(rows))
            ax.barh([i + 0.2 for i in y], [r[1] for r in rows], height=0.4, color="#8172b2",
                    label="original C x C")
            ax.barh([i - 0.2 for i in y], [r[2] for r in rows], height=0.4, color="#4c72b0",
                    label="this implementation")
            ax.set_xscale("log")
            ax.set_yticks(list(y))
            ax.set_yticklabels(labels)
            ax.set_xlabel("NST poly loss, forward + backward, ms (log)")
            ax.set_title("NST loss vs the original formulation")
            ax.legend(fontsize=7)
        elif name == "data":
            labels = [r[0] for r in rows]
            ax.barh(range(len(rows)), [r[1] for r in rows], color="#dd8452")
            ax.set_xscale("log")
            ax.set_yticks(list(range(len(rows))))
            ax.set_yticklabels(labels)
            for i, r in enumerate(rows):
                ax.text(r[1], i, "  %.0f" % r[1], va="center", fontsize=8)
            ax.set_xlabel("images/s (log)")
            ax.set_title("Input pipelines vs the step's consumption")
        elif name == "scaling":
            labels = [r[0] for r in rows]
            ax.bar(range(len(rows)), [r[2] for r in rows], color="#64b5cd")
            ax.axhline(1.0, color="gray", lw=0.8, ls="--")
            ax.set_xticks(list(range(len(rows))))
            ax.set_xticklabels(labels)
            for i, r in enumerate(rows):
                ax.text(i, r[2], "%.2f\n(%.0f img/s)" % (r[2], r[1]), ha="center",
                        va="bottom", fontsize=8)
            ax.set_ylim(0, max(1.2, max(r[2] for r in rows) * 1.35))
            ax.set_ylabel("images/s relative to 1 context")
            ax.set_title("Data-parallel machinery on one 2-core CPU (contexts share the cores)")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ------------------------------------------------------ the original loss

class OriginalMMDPoly(HybridBlock):
    """``mmd_poly`` of TuSimple/neuron-selectivity-transfer (symbol/transfer.py), op for op.

    C x C channel Grams of the L2-normalised maps, student-student and
    student-teacher only (the constant teacher-teacher term is dropped),
    gradient scaled by ``grad_scale = weight_lambda`` (50 in its
    config/cfgs.py).  The teacher map is a label there: no gradient.
    """

    def __init__(self, c=0.0, weight_lambda=50.0, **kwargs):
        super().__init__(**kwargs)
        self.c = c
        self.weight_lambda = weight_lambda

    def hybrid_forward(self, F, student_fm, teacher_fm):
        c = self.c
        student_mmd_l2norm = F.L2Normalization(student_fm, eps=1e-10, mode="spatial")
        student_mmd_vector = F.Reshape(student_mmd_l2norm, shape=(0, 0, -1))
        student_mmd_vector_T = F.transpose(student_mmd_vector, axes=(0, 2, 1))
        student_mmd_matrix = F.batch_dot(lhs=student_mmd_vector, rhs=student_mmd_vector_T)
        student_mmd_matrix = student_mmd_matrix + c
        student_mmd_square = F.square(student_mmd_matrix)
        student_mmd_mean = F.mean(student_mmd_square, axis=(1, 2))

        teacher_mmd_l2norm = F.L2Normalization(teacher_fm, eps=1e-10, mode="spatial")
        teacher_mmd_vector = F.Reshape(teacher_mmd_l2norm, shape=(0, 0, -1))
        teacher_mmd_vector_T = F.transpose(teacher_mmd_vector, axes=(0, 2, 1))

        ts_mmd_matrix = F.batch_dot(lhs=student_mmd_vector, rhs=teacher_mmd_vector_T)
        ts_mmd_matrix = ts_mmd_matrix + c
        ts_mmd_square = F.square(ts_mmd_matrix)
        ts_mmd_mean = F.mean(ts_mmd_square, axis=(1, 2))

        mmd_diff = student_mmd_mean - 2 * ts_mmd_mean
        return F.MakeLoss(mmd_diff, grad_scale=self.weight_lambda)


# ------------------------------------------------------------------ losses

_CASES = (
    # key, label, batch, student (C, H, W), teacher (C, H, W), student network
    ("cifar", "CIFAR in5b", 128, (336, 8, 8), (256, 8, 8), ("inception_bn_small", 10, 32)),
    ("imagenet", "ImageNet in5b", 64, (1024, 7, 7), (2048, 7, 7), ("inception_bn", 1000, 224)),
)
_TARGETS = {"nst_poly_speedup_cifar": 5.0, "nst_poly_speedup_imagenet": 40.0,
            "nst_share_of_step_cifar": 0.03}


def _loss_step(loss, student, teacher):
    def step():
        with autograd.record():
            value = loss(student, teacher)
        value.backward()
    return step


def _student_step(name, classes, size, batch):
    """One SGD training step of ``symbols.get_model(name)`` on random images."""
    import symbols       # imported on use: only the "losses" benchmark builds networks

    net = symbols.get_model(name, classes=classes)
    net.initialize(mx.init.Xavier(magnitude=2))
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    x = mx.nd.random.uniform(shape=(batch, 3, size, size))
    y = mx.nd.array(mx.nd.random.randint(0, classes, shape=(batch,)).asnumpy())

    def step():
        with autograd.record():
            loss = ce(net(x), y).mean()
        loss.backward()
        trainer.step(1)
    return step


def _features(batch, shape):
    return mx.nd.relu(mx.nd.random.normal(shape=(batch,) + shape))   # post-ReLU-like


def _check_against_original(ours, original, student, teacher):
    """Relative difference of our MMD^2 and the original value + its dropped teacher term."""
    t = mx.nd.L2Normalization(teacher, eps=1e-10, mode="spatial").reshape((0, 0, -1))
    k_tt = mx.nd.mean(mx.nd.square(mx.nd.batch_dot(t, t, transpose_b=True)), axis=(1, 2))
    full = float((original(student, teacher) + k_tt).mean().asscalar())
    mine = float(ours(student, teacher).asscalar())
    return abs(mine - full) / abs(full)


@benchmark("losses", "NST loss vs the original C x C formulation and a student training step")
def bench_losses(args, shared=None):
    from train.losses import get_loss, poly_form

    quick = args.quick
    repeat = args.repeat or (3 if quick else 5)
    mx.random.seed(0)
    metrics = {"repeat": repeat, "quick": quick, "environment": environment(),
               "targets": dict(_TARGETS)}
    rows, extra_rows = [], []
    for key, label, batch, s_shape, t_shape, (net_name, classes, size) in _CASES:
        if quick and key == "imagenet":   # same per-sample work; the batch amortises overheads
            batch //= 4
        student, teacher = _features(batch, s_shape), _features(batch, t_shape)
        student.attach_grad()
        ours = get_loss("nst_poly", student_shape=s_shape, teacher_shape=t_shape)
        original = OriginalMMDPoly()
        for block in (ours, original):
            block.hybridize(static_alloc=True, static_shape=True)
        timer = Timer(repeat, desc="losses %s" % key,
                      show_progress=getattr(args, "progress", False))
        timer.add("original", _loss_step(original, student, teacher))
        timer.add("ours", _loss_step(ours, student, teacher))
        with_step = not (quick and key == "imagenet")
        if with_step:   # the ImageNet step takes ~10 s: 2 rounds are enough for a denominator
            timer.add("step", _student_step(net_name, classes, size, batch),
                      repeat=2 if key == "imagenet" else None)
        if key == "cifar" and not quick:
            for name in ("nst_linear", "nst_gaussian", "at", "fitnet", "kd"):
                if name == "kd":
                    block = get_loss(name, student_shape=(classes,), teacher_shape=(classes,))
                    inputs = (mx.nd.random.normal(shape=(batch, classes)),
                              mx.nd.random.normal(shape=(batch, classes)))
                    inputs[0].attach_grad()
                else:
                    block = get_loss(name, student_shape=s_shape, teacher_shape=t_shape)
                    inputs = (student, teacher)
                block.initialize(mx.init.Xavier(magnitude=2))
                block.hybridize(static_alloc=True, static_shape=True)
                timer.add(name, _loss_step(block, *inputs))
        med = timer.measure()
        diff = _check_against_original(ours, original, student, teacher)
        speedup = med["original"] / med["ours"]
        share = med["ours"] / med["step"] if with_step else None
        hw = s_shape[1] * s_shape[2]
        metrics.update({
            "batch_%s" % key: batch,
            "nst_poly_form_%s" % key: poly_form(t_shape[0], s_shape[0], hw),
            "nst_poly_ms_%s" % key: 1e3 * med["ours"],
            "original_ms_%s" % key: 1e3 * med["original"],
            "nst_poly_speedup_%s" % key: speedup,
            "step_ms_%s" % key: 1e3 * med["step"] if with_step else None,
            "nst_share_of_step_%s" % key: share,
            "value_vs_original_reldiff_%s" % key: diff,
        })
        rows.append((label, s_shape, t_shape, batch, med, speedup, share, net_name, size))
        for name in ("nst_linear", "nst_gaussian", "at", "fitnet", "kd"):
            if name in med:
                metrics["%s_ms_%s" % (name, key)] = 1e3 * med[name]
                metrics["%s_share_of_step_%s" % (name, key)] = med[name] / med["step"]
                extra_rows.append((name, med[name], med[name] / med["step"]))
    profile = None
    if not quick:   # where the NST loss's time goes, operator by operator
        profile = nst_operator_profile(repeat, show_progress=getattr(args, "progress", False))
        metrics["nst_poly_operator_ms_cifar"] = dict(profile)
    metrics["meets_targets"] = bool(
        metrics["nst_poly_speedup_cifar"] >= _TARGETS["nst_poly_speedup_cifar"]
        and metrics["nst_poly_speedup_imagenet"] >= _TARGETS["nst_poly_speedup_imagenet"]
        and metrics["nst_share_of_step_cifar"] <= _TARGETS["nst_share_of_step_cifar"])
    plot = {"losses": [(label, 1e3 * med["original"], 1e3 * med["ours"])
                       for label, _, _, _, med, _, _, _, _ in rows]}
    markdown = _markdown(metrics, rows, extra_rows, repeat)
    if profile:
        markdown += "\n\n" + _profile_markdown(profile, metrics["nst_poly_ms_cifar"])
    return {"metrics": metrics, "markdown": markdown, "plot": plot}


def nst_operator_profile(repeat, batch=128, s_shape=(336, 8, 8), t_shape=(256, 8, 8),
                         show_progress=False):
    """Per-operator timings (ms) of ``nst_poly`` (spatial form) at the CIFAR in5b shape.

    The operators the hybridized loss runs, timed one by one on the same
    shapes (MXNet's profiler is not compiled into the CPU wheel): the
    student's L2 normalisation forward + backward, the teacher's forward,
    the student's HW x HW Gram (``batch_dot``) and the one GEMM of its
    backward, the teacher's Gram (``linalg.gemm2``), and the rest
    (difference, squared sum, batch mean: elementwise ops and GEMVs).
    """
    n, (c_s, h, w), c_t = batch, s_shape, t_shape[0]
    hw = h * w
    student = _features(n, s_shape).reshape((-3, -1))
    teacher = _features(n, t_shape).reshape((-3, -1))
    student.attach_grad()
    head = mx.nd.random.normal(shape=student.shape)
    s3 = mx.nd.L2Normalization(student, mode="instance", eps=1e-10).reshape((n, c_s, hw))
    t3 = mx.nd.L2Normalization(teacher, mode="instance", eps=1e-10).reshape((n, c_t, hw))
    gram = mx.nd.batch_dot(s3, s3, transpose_a=True)

    def l2_student():
        with autograd.record():
            out = mx.nd.L2Normalization(student, mode="instance", eps=1e-10)
        out.backward(head)

    def rest():
        diff = gram - gram * 0.5
        flat = diff.reshape((0, 1, -1))
        mx.nd.mean(mx.nd.batch_dot(flat, flat, transpose_b=True).reshape((-1,)))

    timer = Timer(repeat, desc="nst operators", show_progress=show_progress)
    timer.add("L2Normalization, student (N*C_S x HW), forward + backward", l2_student)
    timer.add("L2Normalization, teacher (N*C_T x HW), forward",
              lambda: mx.nd.L2Normalization(teacher, mode="instance", eps=1e-10))
    timer.add("student Gram S^T S, batch_dot (N x HW x HW), forward",
              lambda: mx.nd.batch_dot(s3, s3, transpose_a=True))
    timer.add("student Gram, backward: S U, batch_dot (N x C_S x HW)",
              lambda: mx.nd.batch_dot(s3, gram))
    timer.add("teacher Gram T^T T, linalg.gemm2 (N x HW x HW), forward",
              lambda: mx.nd.linalg.gemm2(t3, t3, transpose_a=True, alpha=1.3))
    timer.add("difference, squared sum, mean (elementwise + GEMV), fwd + bwd-like", rest)
    return [(name, 1e3 * t) for name, t in timer.measure().items()]


def _profile_markdown(profile, total_ms):
    lines = ["Where the NST loss's time goes at the CIFAR shape (each operator timed alone, "
             "ms; MXNet's profiler is not in the CPU wheel):", "",
             "| operator | ms | share of the loss |", "|---|---:|---:|"]
    lines += ["| %s | %.1f | %.0f%% |" % (name, ms, 100 * ms / total_ms) for name, ms in profile]
    lines.append("| sum of the above / the whole loss measured | %.1f / %.1f | |"
                 % (sum(ms for _, ms in profile), total_ms))
    return "\n".join(lines)


def _fmt_shape(shape):
    return "x".join(str(d) for d in shape)


def _markdown(metrics, rows, extra_rows, repeat):
    env = metrics["environment"]
    lines = ["NST polynomial loss (d=2, c=0), forward + backward, median of %d interleaved "
             "rounds (ms; the ImageNet training step: %d rounds)." % (repeat, min(2, repeat)), "",
             "| shape | batch | original C x C | this implementation | speedup "
             "| student training step | NST share of step |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, s_shape, t_shape, batch, med, speedup, share, net_name, size in rows:
        step = ("%.0f (%s, %dx%d)" % (1e3 * med["step"], net_name, size, size)
                if share is not None else "not measured")
        lines.append("| %s: S %s, T %s | %d | %.1f | %.1f | %.1fx | %s | %s |" % (
            label, _fmt_shape(s_shape), _fmt_shape(t_shape), batch, 1e3 * med["original"],
            1e3 * med["ours"], speedup, step, "%.2f%%" % (100 * share) if share else "-"))
    if extra_rows:
        lines += ["", "Other transfer losses at the CIFAR shape (forward + backward):", "",
                  "| loss | ms | share of the student step |", "|---|---:|---:|"]
        lines += ["| %s | %.1f | %.2f%% |" % (n, 1e3 * t, 100 * s) for n, t, s in extra_rows]
    targets = metrics["targets"]
    lines += ["", "Targets: speedup >= %gx (CIFAR), >= %gx (ImageNet); NST <= %g%% of the CIFAR "
              "step -> %s." % (targets["nst_poly_speedup_cifar"],
                               targets["nst_poly_speedup_imagenet"],
                               100 * targets["nst_share_of_step_cifar"],
                               "met" if metrics["meets_targets"] else "NOT met"),
              "Same value as the original + its dropped teacher-teacher term: rel. diff "
              "%.1e (CIFAR), %.1e (ImageNet)." % (metrics["value_vs_original_reldiff_cifar"],
                                                  metrics["value_vs_original_reldiff_imagenet"]),
              "MXNet %s, %s CPUs, OpenBLAS kernels: %s%s." % (
                  env["mxnet"], env["cpu_count"], env["openblas_core"],
                  " (OPENBLAS_CORETYPE=%s)" % env["openblas_coretype_env"]
                  if env["openblas_coretype_env"] else "")]
    return "\n".join(lines)
