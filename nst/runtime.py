"""The CPU runtime every ``nst`` command sets up before MXNet is imported.

Two choices decide how fast and how reproducible a CPU run is, and both must be
made in the environment before ``import mxnet`` (MXNet reads them once, when it
starts):

- **the engine**: ``MXNET_ENGINE_TYPE=NaiveEngine``, MXNet's synchronous engine,
  whose runs are bitwise reproducible (set by :func:`nst.cli.use_deterministic_engine`);
- **the operator threads**: MXNet sizes its OpenMP pool (which its own operators
  and MKL-DNN/oneDNN use) as *half* the processors when ``OMP_NUM_THREADS`` is
  unset, assuming hyper-threading (``src/engine/openmp.cc``).  On a cloud VM
  whose vCPUs are the cores (2 here) that wastes half the machine.
  :func:`configure_threads` sets ``OMP_NUM_THREADS`` to the number of cores
  this process may use (:func:`usable_cores`: its CPU affinity mask, capped by
  the cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` quota of a container --
  not the host's ``os.cpu_count()``).

A variable the user set (``OMP_NUM_THREADS``, ``MXNET_OMP_MAX_THREADS``,
``MXNET_ENGINE_TYPE``) is never overridden.  Under the naive engine every
operator runs in the calling thread, so ``MXNET_CPU_WORKER_NTHREADS`` (the
threaded engine's worker count) has no effect and is left alone.

:func:`runtime_info` is what every run records in ``log.json`` and
``results.json``: the engine and the operator thread count in effect.
This module imports nothing heavy (no MXNet), so ``nst`` can call it first.
"""

import math
import os
import platform

#: environment variables that, when set by the user, fix MXNet's operator thread count
THREAD_VARIABLES = ("MXNET_OMP_MAX_THREADS", "OMP_NUM_THREADS")
#: set by :func:`configure_threads` so that :func:`runtime_info` can say who chose the count
_MARK = "NST_OMP_THREADS_DEFAULT"


def affinity_cores():
    """CPUs in this process's affinity mask (``os.sched_getaffinity``); ``os.cpu_count()``
    where the platform has no affinity call."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path):
    try:
        with open(path, "r", encoding="ascii") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_paths(proc_cgroup):
    """``{controller: path}`` from the text of ``/proc/self/cgroup`` (``""`` = v2)."""
    paths = {}
    for line in (proc_cgroup or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(","):
            paths[controller] = parts[2]
    return paths


def cgroup_cpu_limit(root="/sys/fs/cgroup", proc_cgroup=None):
    """The CPU quota of this process's cgroup in cores (a float), or None when unlimited.

    cgroup v2: ``<root>/<path>/cpu.max`` = ``"<quota> <period>"`` or ``"max <period>"``;
    cgroup v1: ``<root>/cpu[,cpuacct]/<path>/cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    (quota -1 = unlimited).  Ancestors of the process's cgroup are read too (a
    limit on a parent applies to its children), and inside a container whose
    cgroup namespace makes its own cgroup the root (path ``/``) the root's files
    are the container's.  The smallest limit found wins.
    """
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup")
    paths = _cgroup_paths(proc_cgroup)
    limits = []

    def ancestors(path):
        parts = [p for p in (path or "/").split("/") if p]
        return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]

    if "" in paths:  # cgroup v2 (unified) hierarchy
        for base in (root, os.path.join(root, "unified")):
            for rel in ancestors(paths[""]):
                text = _read(os.path.join(base, rel, "cpu.max"))
                if text:
                    quota, _, period = text.partition(" ")
                    if quota != "max":
                        try:
                            limits.append(int(quota) / int(period or 100000))
                        except (ValueError, ZeroDivisionError):
                            pass
    v1 = paths.get("cpu")
    if v1 is not None:
        for base in (os.path.join(root, "cpu"), os.path.join(root, "cpu,cpuacct"),
                     os.path.join(root, "cpuacct,cpu")):
            for rel in ancestors(v1):
                quota = _read(os.path.join(base, rel, "cpu.cfs_quota_us"))
                period = _read(os.path.join(base, rel, "cpu.cfs_period_us"))
                try:
                    quota, period = int(quota), int(period)
                except (TypeError, ValueError):
                    continue
                if quota > 0 and period > 0:
                    limits.append(quota / period)
    return min(limits) if limits else None


def usable_cores(root="/sys/fs/cgroup", proc_cgroup=None, affinity=None):
    """Cores this process may use: its affinity mask, capped by its cgroup's CPU quota
    (a fractional quota rounds up: 1.5 CPUs of quota keep 2 threads busy); at least 1."""
    cores = affinity_cores() if affinity is None else int(affinity)
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, max(1, int(math.ceil(limit - 1e-9))))
    return max(1, cores)


def configure_threads(environ=None):
    """Set ``OMP_NUM_THREADS`` to :func:`usable_cores` unless the user chose a thread count.

    Must run before ``mxnet`` is imported.  Returns the thread count in effect."""
    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in THREAD_VARIABLES):
        environ["OMP_NUM_THREADS"] = str(usable_cores())
        environ[_MARK] = environ["OMP_NUM_THREADS"]
    return operator_threads(environ)


def _first_int(text):
    try:
        return max(1, int(str(text).split(",")[0]))
    except ValueError:
        return None


def operator_threads(environ=None):
    """``(threads, source)``: the OpenMP thread count MXNet's operators use in this
    process, following MXNet's own rule (``MXNET_OMP_MAX_THREADS``, else
    ``OMP_NUM_THREADS``, else half the processors on x86)."""
    environ = os.environ if environ is None else environ
    explicit = _first_int(environ.get("MXNET_OMP_MAX_THREADS", ""))
    if explicit:
        return explicit, "MXNET_OMP_MAX_THREADS"
    omp = _first_int(environ.get("OMP_NUM_THREADS", ""))
    if omp:
        chosen_by_nst = environ.get(_MARK) == environ.get("OMP_NUM_THREADS")
        return omp, "usable cores (nst default)" if chosen_by_nst else "OMP_NUM_THREADS"
    procs = affinity_cores()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    return max(1, procs // 2 if x86 else procs), "MXNet default (half the processors)"


def runtime_info():
    """What a run records about its CPU runtime: engine, operator threads and their source,
    and the cores the process may use."""
    threads, source = operator_threads()
    return {"engine": os.environ.get("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice"),
            "omp_threads": threads, "omp_threads_source": source,
            "usable_cores": usable_cores()}
