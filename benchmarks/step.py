"""``nst bench step``: the overhead of a distillation step over its two unavoidable parts.

A KD + NST step cannot cost less than (a) one training step of the student
plus (b) one forward pass of the teacher; everything else -- the transfer
losses, the feature outputs, moving the batch to the device, the accuracy
counts, the NaN check -- is overhead.  For each network pair this times, in
one process, interleaved (:class:`benchmarks.common.Timer`):

(a) ``student step``: the plain student network (no feature outputs),
    hybridized with static allocation and shapes, cross-entropy, backward and
    the same optimiser update (NAG) on a batch already on the device;
(b) ``teacher forward``: the Distiller's own frozen teacher (hybridized
    with static allocation and shapes, parameters without gradients) on a
    batch already on the device, inference mode, outside autograd -- exactly
    the forward pass a distillation step needs;
(c) ``distill step``: :meth:`train.trainer.Distiller.train_step` -- the very
    method the training loop calls: the batch (NumPy, as the data pipeline
    yields it) copied to the device, teacher and student forward, cross-entropy
    + KD (T = 4, weight 16) + NST (polynomial, weight 25), backward, update,
    accuracy counts -- followed by the loop's fold of the step's statistics
    (:meth:`~train.trainer.Distiller._fold_pending`, the host synchronisation
    and NaN check that the loop does every ``log_interval`` steps; here every
    step, an upper bound).

and reports ``(c) / ((a) + (b))`` as the median of the per-round ratios, plus
the forward + backward of the KD and NST losses alone on the real features
(the expected overhead).  Networks (random weights, synthetic images: the cost
does not depend on the values):

* CIFAR: ``preact_resnet1001_cifar`` (the paper's teacher) ->
  ``inception_bn_small``, 32x32, batch 128, NST on ``in5b_bn`` / ``stage3``;
* ImageNet: ``preact_resnet101`` -> ``inception_bn`` at a reduced 112x112
  input, batch 32, 1000 classes, NST on ``in5b_bn`` / ``bn1``.

``--quick`` uses ``preact_resnet29_cifar`` -> ``inception_bn_small`` at batch 32
and skips the ImageNet pair.
"""

import os
import shutil
import tempfile

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from benchmarks.common import Timer, benchmark, loadavg

__all__ = ["PAIRS", "QUICK_PAIRS", "build_distiller", "teacher_checkpoint", "bench_step"]

OPTIMIZER = {"name": "nag", "lr": 0.01, "momentum": 0.9, "wd": 1e-4}

PAIRS = {
    "cifar": {"label": "CIFAR-10", "teacher": "preact_resnet1001_cifar",
              "student": "inception_bn_small", "classes": 10, "size": 32, "batch": 128,
              "student_feature": "in5b_bn", "teacher_feature": "stage3"},
    "imagenet": {"label": "ImageNet (112x112)", "teacher": "preact_resnet101",
                 "student": "inception_bn", "classes": 1000, "size": 112, "batch": 32,
                 "student_feature": "in5b_bn", "teacher_feature": "bn1"},
}
QUICK_PAIRS = {
    "cifar": dict(PAIRS["cifar"], teacher="preact_resnet29_cifar", batch=32),
}


def transfer_entries(pair):
    """The config's ``transfer`` list of the paper's best combination, KD + NST (poly)."""
    return [{"loss": "kd", "weight": 16, "student": "logits", "teacher": "logits",
             "params": {"temperature": 4}},
            {"loss": "nst_poly", "weight": 25, "student": pair["student_feature"],
             "teacher": pair["teacher_feature"]}]


def teacher_checkpoint(pair, folder, params=None):
    """A randomly initialised teacher saved as a ``.params`` file (the Distiller needs one).

    Its BatchNorm running variances are set to 4 (instead of 1): in inference
    mode an untrained pre-activation ResNet's residual stream roughly doubles
    its variance in every block, which overflows float32 within the 333 blocks
    of a ResNet-1001 stage (the KD loss then becomes NaN and the trainer stops);
    with every BN scaling by 1/2 it stays O(1).  The cost is the same.
    """
    import symbols

    net = symbols.get_model(pair["teacher"], classes=pair["classes"], **(params or {}))
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    net(mx.nd.zeros((1, 3, pair["size"], pair["size"])))
    for name, param in net.collect_params().items():
        if name.endswith("running_var"):
            param.set_data(mx.nd.full(param.shape, 4.0))
    path = os.path.join(folder, "%s.params" % pair["teacher"])
    net.save_parameters(path)
    return path


def synthetic_images(pair, count, seed):
    rng = np.random.default_rng(seed)
    size = pair["size"]
    images = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    return images, rng.integers(0, pair["classes"], size=count)


def build_distiller(pair, contexts, teacher_path, out, kvstore="device", transfer=True,
                    student_params=None, teacher_params=None, batches=4):
    """A :class:`train.trainer.Distiller` for ``pair`` on synthetic, augmented images.

    Only the data set-up is replaced (``_load_data``: random uint8 images
    through :class:`train.data.ArrayBatches` with the paper's augmentation);
    networks, losses, optimiser and step are the trainer's own.
    """
    from train import data as arrays
    from train.config import validate_config
    from train.trainer import Distiller

    class SyntheticDistiller(Distiller):
        def _load_data(self):
            self.global_batch = pair["batch"]
            self.local_batch = pair["batch"] // self.num_workers
            images, labels = synthetic_images(pair, self.local_batch * batches, self.rank)
            train = arrays.ArrayBatches(images, labels, self.local_batch, augment=True,
                                        seed=self.rank, mean=arrays.CIFAR10_MEAN,
                                        std=arrays.CIFAR10_STD)
            self.train_batches = self.test_batches = train
            self.classes, self.image_shape = pair["classes"], (3, pair["size"], pair["size"])

    cfg = {"name": "bench", "out": out, "epochs": 1, "seed": 0,
           "data": {"dataset": "cifar10", "batch_size": pair["batch"]},
           "student": {"network": pair["student"], "params": dict(student_params or {})},
           "optimizer": {k: v for k, v in OPTIMIZER.items()},
           "train": {"kvstore": kvstore}}
    if transfer:
        cfg["teacher"] = {"network": pair["teacher"], "checkpoint": teacher_path,
                          "params": dict(teacher_params or {})}
        cfg["transfer"] = transfer_entries(pair)
    return SyntheticDistiller(validate_config(cfg, source="nst bench"), contexts,
                              kvstore=kvstore, progress=False, log=lambda *_: None)


def distill_step(distiller, epoch=0):
    """``Distiller.train_step`` + the loop's fold of the statistics, cycling the batches."""
    batches = list(distiller.train_batches.iter_epoch(epoch))
    names = distiller.component_names()
    state = {"k": 0, "sums": {"components": [0.0] * len(names), "correct": [0.0, 0.0],
                              "images": 0, "seconds": 0.0}}

    def step():
        batch = batches[state["k"] % len(batches)]
        components, correct = distiller.train_step(epoch, batch)
        distiller._fold_pending([components], correct, epoch, state["k"], state["sums"])
        state["k"] += 1
    return step


def _student_step(pair, ctx, data, label):
    import symbols

    net = symbols.get_model(pair["student"], classes=pair["classes"])
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), OPTIMIZER["name"],
                            {"learning_rate": OPTIMIZER["lr"], "momentum": OPTIMIZER["momentum"],
                             "wd": OPTIMIZER["wd"]})
    ce = gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with autograd.record():
            loss = ce(net(data), label).sum()
        loss.backward()
        trainer.step(data.shape[0])
    return step


def _loss_step(block, student, teacher):
    student = student.copy()
    student.attach_grad()

    def step():
        with autograd.record():
            value = block(student, teacher)
        value.backward()
    return step


def measure_pair(key, pair, repeat, show_progress, folder):
    """Time (a), (b), (c) and the two losses for one pair; returns metrics and the timer."""
    ctx = mx.cpu()
    teacher_path = teacher_checkpoint(pair, folder)
    distiller = build_distiller(pair, [ctx], teacher_path, os.path.join(folder, "run"))
    data, label = next(iter(distiller.train_batches.iter_epoch(1)))
    data, label = mx.nd.array(data, ctx=ctx), mx.nd.array(label, ctx=ctx)
    timer = Timer(repeat, desc="step %s" % key, show_progress=show_progress)
    timer.add("student_step", _student_step(pair, ctx, data, label))
    teacher = distiller.teacher     # the frozen teacher the trainer runs (one 1001-layer build)
    timer.add("teacher_forward", lambda: teacher(data))
    timer.add("distill_step", distill_step(distiller))
    # the expected overhead: the two losses on the real features
    s_out = distiller.student(data)
    t_out = distiller.teacher(data)
    for term in distiller.terms:
        timer.add("loss_" + term.label, _loss_step(term.block, s_out[term.student_index],
                                                   t_out[term.teacher_index]))
    med = timer.measure()
    ratio = timer.ratio("distill_step", ["student_step", "teacher_forward"])
    base = med["student_step"] + med["teacher_forward"]
    losses = sum(v for k, v in med.items() if k.startswith("loss_"))
    rounds = min(len(timer.times[n]) for n in ("distill_step", "student_step", "teacher_forward"))
    per_round = [timer.times["distill_step"][i]
                 / (timer.times["student_step"][i] + timer.times["teacher_forward"][i])
                 for i in range(rounds)]
    metrics = {
        "step_overhead_%s" % key: ratio,
        "step_overhead_rounds_%s" % key: per_round,
        "step_overhead_expected_%s" % key: (base + losses) / base,
        "student_step_ms_%s" % key: 1e3 * med["student_step"],
        "teacher_forward_ms_%s" % key: 1e3 * med["teacher_forward"],
        "distill_step_ms_%s" % key: 1e3 * med["distill_step"],
        "losses_ms_%s" % key: 1e3 * losses,
        "overhead_ms_%s" % key: 1e3 * (med["distill_step"] - base),
        "distill_images_per_s_%s" % key: pair["batch"] / med["distill_step"],
        "pair_%s" % key: "%s -> %s, %dx%d, batch %d" % (
            pair["teacher"], pair["student"], pair["size"], pair["size"], pair["batch"]),
    }
    for name, value in med.items():
        if name.startswith("loss_"):
            metrics["%s_ms_%s" % (name, key)] = 1e3 * value
    return metrics, med


TARGET = 1.10


@benchmark("step", "distillation-step overhead: (KD+NST step) / (student step + teacher forward)")
def bench_step(args, shared):
    quick = args.quick
    repeat = args.repeat or (3 if quick else 5)
    pairs = QUICK_PAIRS if quick else PAIRS
    metrics = {"step_repeat": repeat, "step_target": TARGET, "load_before_step": loadavg()}
    rows = []
    folder = tempfile.mkdtemp(prefix="nst-bench-step-")
    try:
        for key, pair in pairs.items():
            pair_metrics, med = measure_pair(key, pair, repeat, args.progress, folder)
            metrics.update(pair_metrics)
            rows.append((key, pair, med, pair_metrics["step_overhead_%s" % key],
                         pair_metrics["step_overhead_rounds_%s" % key]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    metrics["load_after_step"] = loadavg()
    shared["step"] = metrics
    plot = {"step": [(pair["label"], 1e3 * med["student_step"], 1e3 * med["teacher_forward"],
                      1e3 * med["distill_step"], row[0]) for key, pair, med, *row in rows]}
    return {"metrics": metrics, "markdown": _markdown(rows, repeat), "plot": plot}


def _markdown(rows, repeat):
    lines = ["Distillation-step overhead, KD + NST (poly), median of %d interleaved rounds "
             "(ms; ratio = median of the per-round ratios):" % repeat, "",
             "| pair | (a) student step | (b) teacher forward | (c) KD+NST step "
             "| (c) / ((a)+(b)) | per-round range | KD + NST losses alone "
             "| ((a)+(b)+losses) / ((a)+(b)) | images/s of (c) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, pair, med, ratio, per_round in rows:
        losses = sum(v for k, v in med.items() if k.startswith("loss_"))
        base = med["student_step"] + med["teacher_forward"]
        lines.append("| %s: %s -> %s, %dx%d, batch %d | %.0f | %.0f | %.0f | **%.3f** "
                     "| %.3f-%.3f | %.1f | %.3f | %.1f |"
                     % (pair["label"], pair["teacher"], pair["student"], pair["size"],
                        pair["size"], pair["batch"], 1e3 * med["student_step"],
                        1e3 * med["teacher_forward"], 1e3 * med["distill_step"], ratio,
                        min(per_round), max(per_round), 1e3 * losses, (base + losses) / base,
                        pair["batch"] / med["distill_step"]))
    met = all(row[3] <= TARGET for row in rows)
    lines += ["", "Target: (c) / ((a)+(b)) <= %.2f -> %s.  The expected ratio counts only "
              "the two losses' own cost (measured alone on the real features); the measured "
              "one also holds everything else the trainer does (feature outputs, the copy "
              "of the batch, accuracy counts, the NaN check) and the machine's noise "
              "(per-round range)." % (TARGET, "met" if met else "NOT met")]
    return "\n".join(lines)
