"""``nst bench scaling``: images/s of the KD + NST step on 1, 2, 4 contexts and dist_sync.

The workload is the CIFAR pair of ``nst bench step`` with a shallower teacher
(``preact_resnet164_cifar`` -> ``inception_bn_small``, global batch 128; the
1001-layer teacher would make this part alone take minutes), trained by
:meth:`train.trainer.Distiller.train_step` with

* 1, 2 and 4 contexts ``mx.cpu(i)`` (``--cpus N``): the batch is split over
  the contexts and the gradients are summed through the ``device`` kvstore;
  the three Distillers live in one process and are timed interleaved;
* ``dist_sync`` with 2 local workers (``train.launch.launch``: a scheduler,
  one server, two worker processes on loopback, each with half the batch and
  ``OMP_NUM_THREADS=1``), timed by worker 0 after warm-up.

Every figure is images/s relative to 1 context.  On this CPU machine every
context runs on the same two cores, so the figures show the *cost of the
parallel machinery* (splitting the batch, smaller per-device operators, the
gradient reduction, and for dist_sync the parameter server round trip); on
GPUs each context is its own device and the same code is meant to scale
near-linearly.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import mxnet as mx

from benchmarks.common import Timer, benchmark, loadavg
from benchmarks.step import PAIRS, build_distiller, distill_step, teacher_checkpoint

__all__ = ["SCALING_PAIR", "QUICK_SCALING_PAIR", "bench_scaling"]

SCALING_PAIR = dict(PAIRS["cifar"], teacher="preact_resnet164_cifar")
QUICK_SCALING_PAIR = dict(PAIRS["cifar"], teacher="preact_resnet11_cifar", batch=32)
QUICK_WIDTHS = {"student_params": {"width": 0.25}, "teacher_params": {"width": 0.25}}


def _worker(spec_path):
    """Body of one dist_sync worker: time ``rounds`` steps after a warm-up, rank 0 reports."""
    with open(spec_path) as handle:
        spec = json.load(handle)
    pair = spec["pair"]
    distiller = build_distiller(pair, [mx.cpu()], spec["teacher_path"], spec["out"],
                                kvstore="dist_sync", **spec["widths"])
    step = distill_step(distiller)
    times = []
    for i in range(spec["rounds"] + 1):
        mx.nd.waitall()
        start = time.perf_counter()
        step()
        mx.nd.waitall()
        if i:                                     # the first step builds the graphs
            times.append(time.perf_counter() - start)
    if distiller.rank == 0:
        with open(spec["result"], "w") as handle:
            json.dump({"times": times, "workers": distiller.num_workers,
                       "global_batch": distiller.global_batch}, handle)


def dist_sync_rate(pair, teacher_path, folder, rounds, widths, timeout=600):
    """images/s of ``pair`` under dist_sync with 2 local workers (median step)."""
    from train.launch import launch

    spec = {"pair": pair, "teacher_path": teacher_path, "out": os.path.join(folder, "dist"),
            "rounds": rounds, "widths": widths, "result": os.path.join(folder, "dist.json")}
    spec_path = os.path.join(folder, "dist_spec.json")
    with open(spec_path, "w") as handle:
        json.dump(spec, handle)
    command = [sys.executable, "-m", "benchmarks.scaling", "--worker", spec_path]
    log_dir = os.path.join(folder, "dist_logs")
    codes = launch(command, workers=2, servers=1, timeout=timeout, log_dir=log_dir)
    if codes != [0, 0] or not os.path.isfile(spec["result"]):
        logs = ""
        for name in sorted(os.listdir(log_dir)):
            with open(os.path.join(log_dir, name), errors="replace") as handle:
                logs += "--- %s\n%s" % (name, handle.read()[-2000:])
        raise RuntimeError("dist_sync benchmark workers failed (%s):\n%s" % (codes, logs))
    with open(spec["result"]) as handle:
        result = json.load(handle)
    return result["global_batch"] / statistics.median(result["times"])


@benchmark("scaling", "KD+NST images/s on 1, 2, 4 contexts and dist_sync (2 local workers)")
def bench_scaling(args, shared):
    quick = args.quick
    repeat = args.repeat or 3
    pair = QUICK_SCALING_PAIR if quick else SCALING_PAIR
    widths = QUICK_WIDTHS if quick else {}
    metrics = {"scaling_repeat": repeat, "load_before_scaling": loadavg(),
               "scaling_pair": "%s -> %s, %dx%d, global batch %d%s" % (
                   pair["teacher"], pair["student"], pair["size"], pair["size"], pair["batch"],
                   ", width 0.25" if widths else "")}
    folder = tempfile.mkdtemp(prefix="nst-bench-scaling-")
    try:
        teacher_path = teacher_checkpoint(pair, folder, widths.get("teacher_params"))
        timer = Timer(repeat, desc="scaling", show_progress=args.progress)
        for n in (1, 2, 4):
            distiller = build_distiller(pair, [mx.cpu(i) for i in range(n)], teacher_path,
                                        os.path.join(folder, "ctx%d" % n), **widths)
            timer.add("ctx%d" % n, distill_step(distiller))
        med = timer.measure()
        rates = {n: pair["batch"] / med["ctx%d" % n] for n in (1, 2, 4)}
        metrics["scaling_images_per_s_1ctx"] = rates[1]
        for n in (2, 4):
            metrics["scaling_images_per_s_%dctx" % n] = rates[n]
            metrics["scaling_%dctx" % n] = timer.ratio("ctx1", ["ctx%d" % n])
        dist = dist_sync_rate(pair, teacher_path, folder, repeat, widths)
        metrics["scaling_images_per_s_dist_sync_2workers"] = dist
        metrics["scaling_dist_sync_2workers"] = dist / rates[1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    metrics["load_after_scaling"] = loadavg()
    shared["scaling"] = metrics
    rows = [("1 context", rates[1], 1.0),
            ("2 contexts", rates[2], metrics["scaling_2ctx"]),
            ("4 contexts", rates[4], metrics["scaling_4ctx"]),
            ("dist_sync, 2 workers", dist, metrics["scaling_dist_sync_2workers"])]
    return {"metrics": metrics, "markdown": _markdown(metrics, rows, repeat),
            "plot": {"scaling": rows}}


def _markdown(metrics, rows, repeat):
    lines = ["Scaling of the KD+NST step (%s), median of %d rounds:" % (
        metrics["scaling_pair"], repeat), "",
             "| setting | images/s | relative to 1 context |", "|---|---:|---:|"]
    lines += ["| %s | %.1f | %.2f |" % row for row in rows]
    lines += ["", "All contexts share this machine's cores: this measures the cost of the "
              "parallel machinery (batch split, gradient reduction, parameter server), not a "
              "speed-up. On GPUs, one context per device, it is meant to be near-linear."]
    return "\n".join(lines)


if __name__ == "__main__":  # a dist_sync worker: python -m benchmarks.scaling --worker SPEC
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        sys.exit("usage: python -m benchmarks.scaling --worker SPEC.json")
