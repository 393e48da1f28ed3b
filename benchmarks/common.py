"""Machinery shared by the ``nst bench`` benchmarks: registry, timing, environment.

Timing protocol (:class:`Timer`): every measured callable runs once as a
warm-up (graph building, memory allocation), then the callables of one
benchmark are run *interleaved*, ``repeat`` rounds (the order rotated every
round), each call bracketed by ``mx.nd.waitall()``; the median is reported.
Ratios are taken between measurements of the same process and rounds (the
median of the per-round ratios, :meth:`Timer.ratio`), so they are robust to a
shared, noisy machine in a way absolute times are not.
"""

import ctypes
import os
import statistics
import sys
import time

import mxnet as mx

from nst.runtime import runtime_info

__all__ = ["BENCHMARKS", "benchmark", "Timer", "environment", "loadavg", "progress"]

#: name -> (function(args, shared) -> {"metrics": dict, "markdown": str, ...}, help text)
BENCHMARKS = {}


def benchmark(name, help_text):
    """Register ``f(args, shared) -> {"metrics": dict, "markdown": str}`` as ``nst bench name``.

    ``shared`` is a dict the benchmarks of one ``nst bench`` invocation share
    (``nst bench all`` runs them in order: ``losses``, ``step``, ``data``,
    ``scaling``); a benchmark may read what an earlier one stored there.  A
    result may also carry ``"plot"``: ``{panel name: data}`` for the PNG chart.
    """
    def wrap(func):
        BENCHMARKS[name] = (func, help_text)
        return func
    return wrap


def progress(iterable=None, total=None, desc=None, enabled=True):
    """A tqdm bar on stderr (stdout stays clean for ``--json``), or the bare iterable."""
    if not enabled:
        return iterable if iterable is not None else _NoBar()
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr,
                dynamic_ncols=True)


class _NoBar:
    def update(self, n=1):
        pass

    def set_description(self, text):
        pass

    def close(self):
        pass


class Timer:
    """Interleaved timing of several callables (see the module docstring)."""

    def __init__(self, repeat, desc=None, show_progress=False):
        self.repeat = repeat
        self.desc = desc
        self.show_progress = show_progress
        self.funcs = {}
        self.times = {}
        self.limits = {}

    def add(self, name, func, repeat=None):
        """Register ``func`` (warmed up now); ``repeat`` caps its rounds (slow callables)."""
        self.funcs[name] = func
        self.times[name] = []
        self.limits[name] = min(self.repeat, repeat or self.repeat)
        self._once(func)                          # warm-up

    @staticmethod
    def _once(func):
        mx.nd.waitall()
        start = time.perf_counter()
        func()
        mx.nd.waitall()
        return time.perf_counter() - start

    def measure(self):
        rounds = progress(range(self.repeat), total=self.repeat, desc=self.desc,
                          enabled=self.show_progress)
        names = list(self.funcs)
        for i in rounds:
            # rotate the order every round: no callable always runs first / after another
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                if i < self.limits[name]:
                    self.times[name].append(self._once(self.funcs[name]))
        return self.medians()

    def medians(self):
        return {name: statistics.median(ts) for name, ts in self.times.items() if ts}

    def ratio(self, numerator, denominator):
        """Median over the rounds of ``t(numerator) / sum(t(d) for d in denominator)``."""
        names = [numerator] + list(denominator)
        rounds = min(len(self.times[n]) for n in names)
        return statistics.median(
            self.times[numerator][i] / sum(self.times[d][i] for d in denominator)
            for i in range(rounds))


def loadavg():
    """The 1-minute load average (how busy the shared machine was), or None."""
    try:
        with open("/proc/loadavg") as handle:
            return float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def environment():
    """MXNet version, CPU, engine, thread and BLAS settings of this process."""
    runtime = runtime_info()
    env = {"mxnet": mx.__version__, "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
           "engine": runtime["engine"],
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           # MXNet's operator threads (nst.runtime.operator_threads): MXNET_OMP_MAX_THREADS,
           # else OMP_NUM_THREADS (nst sets it to the usable cores), else half the CPUs
           "mxnet_omp_threads": runtime["omp_threads"],
           "omp_threads_source": runtime["omp_threads_source"],
           "usable_cores": runtime["usable_cores"],
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE")}
    try:  # the OpenBLAS bundled in the mxnet wheel picks its kernels at load time
        lib = ctypes.CDLL(os.path.join(os.path.dirname(mx.__file__), "libmxnet.so"))
        lib.openblas_get_corename.restype = ctypes.c_char_p
        env["openblas_core"] = lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        env["openblas_core"] = None
    return env
