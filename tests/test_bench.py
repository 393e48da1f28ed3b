"""Smoke test of ``nst bench``: every benchmark runs and reports its figures.

One ``nst bench --quick --json --repeat 1`` through :func:`nst.cli.main` (all
four benchmarks at their smallest workloads).  Only that the required figures
exist and are finite and positive is checked -- never a timing threshold: the
numbers themselves belong to docs/performance.md (the headline in the README), measured by a
full ``nst bench`` on a quiet machine.
"""

import contextlib
import io
import json
import math

import pytest

from nst.cli import main as nst_main

REQUIRED = ("step_overhead_cifar", "augment_images_per_s", "nst_poly_speedup_cifar",
            "nst_poly_speedup_imagenet", "nst_share_of_step_cifar")
ALSO = ("recordio_images_per_s", "recordio_threads", "scaling_2ctx", "scaling_4ctx",
        "scaling_dist_sync_2workers", "distill_images_per_s_cifar", "student_step_ms_cifar",
        "teacher_forward_ms_cifar", "distill_step_ms_cifar",
        # issue 14: nst's default OpenMP thread count and its training speed-up over one thread
        "omp_threads_default", "train_speedup_default_vs_one_thread")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = nst_main(["bench", "--quick", "--json", "--repeat", "1", "--no-progress",
                         "--out", str(out)])
    return code, stdout.getvalue(), out


def test_quick_json_has_the_required_finite_positive_figures(quick_run):
    code, stdout, _ = quick_run
    assert code == 0
    metrics = json.loads(stdout)
    for key in REQUIRED + ALSO:
        value = metrics.get(key)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    assert metrics["benchmarks"] == ["losses", "step", "data", "scaling", "threads"]
    assert metrics["environment"]["engine"] == "NaiveEngine"   # what `nst` users run on CPU


def test_thread_benchmark_compares_nsts_default_with_one_thread(quick_run):
    """The default worker runs nst's default (one thread per usable core), the other one."""
    from nst.runtime import usable_cores
    metrics = json.loads(quick_run[1])
    assert metrics["omp_threads_default"] == usable_cores()
    assert metrics["omp_threads_one"] == 1
    assert isinstance(metrics["omp_threads_default"], int)


def test_quick_run_writes_json_and_chart(quick_run):
    _, stdout, out = quick_run
    written = json.loads((out / "bench.json").read_text())
    assert written["step_overhead_cifar"] == json.loads(stdout)["step_overhead_cifar"]
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_bad_repeat_is_one_clear_error(capsys):
    assert nst_main(["bench", "step", "--repeat", "0"]) == 2
    assert "--repeat must be >= 1" in capsys.readouterr().err
