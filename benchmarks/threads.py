"""``nst bench threads``: training throughput with ``nst``'s default thread count vs one thread.

MXNet's operators (and MKL-DNN) run on an OpenMP pool whose size is fixed when
MXNet starts, so the two settings need two processes.  Two worker processes are
started side by side:

* ``default``: the environment ``nst`` gives a command when the user sets no
  thread variable (:func:`nst.cli.configure_environment`: one OpenMP thread per
  core this process may use, :func:`nst.runtime.usable_cores`);
* ``one thread``: the same with ``OMP_NUM_THREADS=1``.

Each (:mod:`benchmarks.thread_worker`) builds the same student training step (``inception_bn_small``, width 0.5,
32x32 images, batch 64, no teacher -- the workload of issue 14; ``--quick``:
width 0.25, batch 32) through :meth:`train.trainer.Distiller.train_step` and the
loop's statistics fold, warms up, then the parent runs timed rounds
*interleaved* -- round ``i`` of one worker, then round ``i`` of the other, the
order alternating -- so both see the same machine load.  Reported:
``omp_threads_default`` and ``train_speedup_default_vs_one_thread``, the median
over rounds of (one-thread time / default time) of the same round pair.
"""

import json
import os
import statistics
import subprocess
import sys

from benchmarks.common import benchmark, loadavg
from nst import runtime

__all__ = ["bench_threads", "THREAD_VARIABLES"]

#: removed from the default worker's environment so that nst's own default applies
THREAD_VARIABLES = runtime.THREAD_VARIABLES + (runtime._MARK,)
PAIR = {"student": "inception_bn_small", "teacher": None, "classes": 10, "size": 32,
        "batch": 64}
QUICK_PAIR = dict(PAIR, batch=32)


def _start(env, spec):
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.thread_worker",
                             json.dumps(spec)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc


def _read(proc, what):
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the %s thread-benchmark worker exited (status %s)"
                           % (what, proc.wait()))
    return json.loads(line)


def thread_speedup(pair, width, steps, rounds):
    """``(threads_default, ratio, rates)``: see the module docstring."""
    base = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    envs = {"default": base, "one": dict(base, OMP_NUM_THREADS="1")}
    spec = {"pair": pair, "width": width, "steps": steps}
    procs = {}
    try:
        for name, env in envs.items():
            procs[name] = _start(env, spec)
        threads = {name: _read(proc, name)["threads"] for name, proc in procs.items()}
        times = {"default": [], "one": []}
        for i in range(rounds):
            order = ("default", "one") if i % 2 == 0 else ("one", "default")
            for name in order:
                procs[name].stdin.write("go\n")
                procs[name].stdin.flush()
                times[name].append(_read(procs[name], name)["seconds"])
    finally:
        for proc in procs.values():
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.wait(timeout=120)
    ratio = statistics.median(one / default for one, default in zip(times["one"],
                                                                  times["default"]))
    rates = {name: pair["batch"] * steps / statistics.median(t) for name, t in times.items()}
    return threads, ratio, rates


@benchmark("threads", "training images/s with nst's default OpenMP thread count vs one thread")
def bench_threads(args, shared):
    quick = args.quick
    pair = QUICK_PAIR if quick else PAIR
    width = 0.25 if quick else 0.5
    steps = 3 if quick else 10
    rounds = args.repeat or (3 if quick else 5)
    load_before = loadavg()
    threads, ratio, rates = thread_speedup(pair, width, steps, rounds)
    metrics = {"omp_threads_default": threads["default"],
               "omp_threads_one": threads["one"],
               "train_speedup_default_vs_one_thread": ratio,
               "train_images_per_s_default_threads": rates["default"],
               "train_images_per_s_one_thread": rates["one"],
               "threads_workload": "%s x%.2g, %dx%d, batch %d, %d steps per round, %d rounds"
                                   % (pair["student"], width, pair["size"], pair["size"],
                                      pair["batch"], steps, rounds),
               "load_before_threads": load_before, "load_after_threads": loadavg()}
    rows = [("default (%d thread%s)" % (threads["default"], "s" * (threads["default"] != 1)),
             rates["default"], ratio),
            ("OMP_NUM_THREADS=1", rates["one"], 1.0)]
    lines = ["Training throughput of %s by OpenMP thread count (median of interleaved "
             "rounds; load average %s -> %s):" % (metrics["threads_workload"], load_before,
                                                 metrics["load_after_threads"]), "",
             "| threads | images/s | speed-up over one thread |", "|---|---:|---:|"]
    lines += ["| %s | %.0f | %.2f |" % row for row in rows]
    return {"metrics": metrics, "markdown": "\n".join(lines)}
