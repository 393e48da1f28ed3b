"""``nst bench WHAT``: micro-benchmarks, printed as a Markdown table or JSON.

Each benchmark is a function registered in :data:`BENCHMARKS` under the name
given on the command line (``nst bench losses``); it returns a dict with
``metrics`` (the JSON object) and ``markdown`` (the human report).  To add one,
decorate a function ``f(args) -> dict`` with ``@benchmark("name", "help")``.

Timing protocol (:class:`Timer`): every measured callable runs once as a
warm-up (graph building, memory allocation), then the callables of one
benchmark are run *interleaved*, ``repeat`` rounds, each call bracketed by
``mx.nd.waitall()``; the median is reported.  Ratios are taken between medians
measured in the same process and rounds, so they are robust to a shared,
noisy machine in a way absolute times are not.

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

import ctypes
import json
import os
import statistics
import time

import mxnet as mx
from mxnet import autograd, gluon
from mxnet.gluon import HybridBlock

from nst.errors import NSTError

__all__ = ["add_arguments", "run", "BENCHMARKS", "benchmark", "Timer", "OriginalMMDPoly"]

BENCHMARKS = {}


def benchmark(name, help_text):
    """Register ``f(args) -> {"metrics": dict, "markdown": str}`` as ``nst bench name``."""
    def wrap(func):
        BENCHMARKS[name] = (func, help_text)
        return func
    return wrap


def add_arguments(parser):
    parser.add_argument("what", choices=sorted(BENCHMARKS),
                        help="what to benchmark: " + "; ".join(
                            "%s = %s" % (k, v[1]) for k, v in sorted(BENCHMARKS.items())))
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the metrics) instead of Markdown tables")
    parser.add_argument("--repeat", type=int, default=None, metavar="N",
                        help="timed rounds per measurement, median reported "
                             "(default 5, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and smaller workloads (< 30 s)")


def run(args):
    if args.repeat is not None and args.repeat < 1:
        raise NSTError("--repeat must be >= 1, got %d" % args.repeat)
    func, _ = BENCHMARKS[args.what]
    result = func(args)
    if args.json:
        print(json.dumps(result["metrics"], indent=2, sort_keys=True))
    else:
        print(result["markdown"])
    return 0


# ------------------------------------------------------------------ timing

class Timer:
    """Interleaved timing of several callables (see the module docstring)."""

    def __init__(self, repeat):
        self.repeat = repeat
        self.funcs = {}
        self.times = {}
        self.limits = {}

    def add(self, name, func, repeat=None):
        """Register ``func`` (warmed up now); ``repeat`` caps its rounds (slow callables)."""
        self.funcs[name] = func
        self.times[name] = []
        self.limits[name] = min(self.repeat, repeat or self.repeat)
        self._once(func)                          # warm-up

    def _once(self, func):
        mx.nd.waitall()
        start = time.perf_counter()
        func()
        mx.nd.waitall()
        return time.perf_counter() - start

    def measure(self):
        for i in range(self.repeat):
            for name, func in self.funcs.items():
                if i < self.limits[name]:
                    self.times[name].append(self._once(func))
        return {name: statistics.median(ts) for name, ts in self.times.items()}


def _environment():
    env = {"mxnet": mx.__version__, "cpu_count": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE")}
    try:  # the OpenBLAS bundled in the mxnet wheel picks its kernels at load time
        lib = ctypes.CDLL(os.path.join(os.path.dirname(mx.__file__), "libmxnet.so"))
        lib.openblas_get_corename.restype = ctypes.c_char_p
        env["openblas_core"] = lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        env["openblas_core"] = None
    return env


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
def bench_losses(args):
    from train.losses import get_loss, poly_form

    quick = args.quick
    repeat = args.repeat or (3 if quick else 5)
    mx.random.seed(0)
    metrics = {"repeat": repeat, "quick": quick, "environment": _environment(),
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
        timer = Timer(repeat)
        timer.add("original", _loss_step(original, student, teacher))
        timer.add("ours", _loss_step(ours, student, teacher))
        with_step = not (quick and key == "imagenet")
        if with_step:   # the ImageNet step takes ~10 s: 3 rounds are enough for a denominator
            timer.add("step", _student_step(net_name, classes, size, batch),
                      repeat=3 if key == "imagenet" else None)
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
    metrics["meets_targets"] = bool(
        metrics["nst_poly_speedup_cifar"] >= _TARGETS["nst_poly_speedup_cifar"]
        and metrics["nst_poly_speedup_imagenet"] >= _TARGETS["nst_poly_speedup_imagenet"]
        and metrics["nst_share_of_step_cifar"] <= _TARGETS["nst_share_of_step_cifar"])
    return {"metrics": metrics, "markdown": _markdown(metrics, rows, extra_rows, repeat)}


def _fmt_shape(shape):
    return "x".join(str(d) for d in shape)


def _markdown(metrics, rows, extra_rows, repeat):
    env = metrics["environment"]
    lines = ["NST polynomial loss (d=2, c=0), forward + backward, median of %d interleaved "
             "rounds (ms; the ImageNet training step: %d rounds)." % (repeat, min(3, repeat)), "",
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
