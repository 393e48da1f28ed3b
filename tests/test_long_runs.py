"""Long runs on real machines (issue 14): every core by default, checkpoints by steps and
by the clock, resume on a changed machine, a teacher checked before it teaches.

Runs go through the real ``nst`` entry point in subprocesses, on digits (real data
available everywhere) with tiny networks.  Mid-epoch kills use the fault-injection
points of :mod:`nst.faults` (``NST_FAULT``), never a timer.
"""

import json
import os
import signal
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
import yaml

import symbols
from nst import runtime
from train import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from trainer_helpers import TEACHER, save_random_teacher
#: the variables `nst` sets itself when the user has not (tests/conftest.py sets them too)
RUNTIME_VARIABLES = ("MXNET_ENGINE_TYPE", "OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS",
                     "NST_OMP_THREADS_DEFAULT", "NST_FAULT")


def nst_command():
    """The ``nst`` entry point (``nst.cli.main``, what the console script calls) of this
    checkout: ``python -m nst.cli`` run in the repository."""
    return [sys.executable, "-m", "nst.cli"]


def nst(args, env_extra=None, timeout=900, threads="1"):
    """Run ``nst ARGS`` in a clean environment: none of the runtime variables set,
    so the command's own defaults apply (plus ``env_extra``).

    ``threads``: ``OMP_NUM_THREADS`` for the run; None = the command's default (one
    per usable core).  The checkpoint and teacher tests pin one thread: on a shared,
    oversubscribed machine a 2-thread team is several times slower (docs/
    performance.md), and what they test does not depend on the thread count
    (test_reliability.py resumes at the default count)."""
    env = {k: v for k, v in os.environ.items() if k not in RUNTIME_VARIABLES}
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    env.update(env_extra or {})
    return subprocess.run(nst_command() + args, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def teacher_params(tmp_path_factory):
    """An untrained (randomly initialised) teacher: enough to distil from, and the
    teacher evaluation must call it no better than chance."""
    return save_random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.params", seed=11)


def write_config(tmp_path, name, teacher=None, epochs=2, train=None, teacher_extra=None,
                 **extra):
    """A digits run: 320 training images in 5 steps of 64 per epoch; with ``teacher``
    (a .params path) a KD + NST distillation."""
    cfg = {"name": name, "out": str(tmp_path / name), "seed": 5, "epochs": epochs,
           "data": {"dataset": "digits", "batch_size": 64, "train_limit": 320,
                    "test_limit": 128, "test_batch_size": 64},
           "student": {"network": "inception_bn_small", "params": {"width": 0.25}},
           "optimizer": {"lr": 0.05, "lr_steps": [1]},
           "train": dict({"log_interval": 2}, **(train or {}))}
    if teacher:
        cfg["teacher"] = dict(TEACHER, checkpoint=teacher, **(teacher_extra or {}))
        cfg["transfer"] = [{"loss": "kd", "weight": 4, "student": "logits",
                            "teacher": "logits"},
                           {"loss": "nst_poly", "weight": 25, "student": "in5b_bn",
                            "teacher": "stage3"}]
    cfg.update(extra)
    path = tmp_path / (name + ".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return str(path), tmp_path / name


def params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def assert_same_params(a_path, b_path):
    a, b = params(a_path), params(b_path)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------- 1. every core
def _cgroup_v2(tmp_path, cpu_max, path="/job"):
    root = tmp_path / "cg2"
    (root / path.strip("/")).mkdir(parents=True)
    (root / path.strip("/") / "cpu.max").write_text(cpu_max + "\n")
    return str(root), "0::%s\n" % path


def _cgroup_v1(tmp_path, quota, period=100000, path="/docker/abc"):
    root = tmp_path / "cg1"
    folder = root / "cpu,cpuacct" / path.strip("/")
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("%d\n" % quota)
    (folder / "cpu.cfs_period_us").write_text("%d\n" % period)
    return str(root), "5:cpuacct,cpu:%s\n4:memory:/x\n" % path


@pytest.mark.parametrize("cpu_max, affinity, expected", [
    ("max 100000", 8, 8),          # no quota: the affinity mask
    ("200000 100000", 8, 2),       # 2 CPUs of quota on an 8-CPU host
    ("150000 100000", 8, 2),       # 1.5 CPUs keep two threads busy
    ("50000 100000", 8, 1),        # half a CPU: one thread
    ("400000 100000", 2, 2),       # quota above the affinity mask: the mask
])
def test_usable_cores_reads_the_cgroup_v2_quota(tmp_path, cpu_max, affinity, expected):
    root, proc = _cgroup_v2(tmp_path, cpu_max)
    assert runtime.usable_cores(root, proc, affinity=affinity) == expected


def test_usable_cores_reads_the_cgroup_v1_quota_and_parent_limits(tmp_path):
    root, proc = _cgroup_v1(tmp_path, 300000)
    assert runtime.usable_cores(root, proc, affinity=16) == 3
    root, proc = _cgroup_v1(tmp_path / "unlimited", -1)
    assert runtime.usable_cores(root, proc, affinity=16) == 16
    # a limit on the parent cgroup applies to its child
    root, proc = _cgroup_v2(tmp_path / "parent", "max 100000", path="/a/b")
    (tmp_path / "parent" / "cg2" / "a" / "cpu.max").write_text("100000 100000\n")
    assert runtime.usable_cores(root, proc, affinity=4) == 1


def test_usable_cores_of_this_process_follow_its_affinity_not_the_host():
    assert runtime.usable_cores() <= len(os.sched_getaffinity(0))
    assert runtime.usable_cores() >= 1


def test_configure_threads_sets_the_usable_cores_and_keeps_user_choices():
    env = {}
    threads, source = runtime.configure_threads(env)
    assert env["OMP_NUM_THREADS"] == str(runtime.usable_cores()) and threads == runtime.usable_cores()
    assert source == "usable cores (nst default)"
    env = {"OMP_NUM_THREADS": "1"}
    assert runtime.configure_threads(env) == (1, "OMP_NUM_THREADS") and env == {"OMP_NUM_THREADS": "1"}
    env = {"MXNET_OMP_MAX_THREADS": "3"}
    assert runtime.configure_threads(env) == (3, "MXNET_OMP_MAX_THREADS")
    assert "OMP_NUM_THREADS" not in env


def test_the_nst_command_defaults_to_every_core_and_the_naive_engine_and_logs_them(tmp_path):
    """The real entry point, in an environment without any runtime variable: the log
    and results record the naive engine and one OpenMP thread per usable core, and
    two such runs end bitwise identical (at that thread count)."""
    runs = []
    for name in ("first", "second"):
        cfg, out = write_config(tmp_path, name, epochs=1)
        done = nst(["train", cfg, "--no-progress"], threads=None)
        assert done.returncode == 0, done.stderr
        runs.append(out)
        assert "OpenMP operator threads" in done.stdout
    cores = runtime.usable_cores()
    for out in runs:
        record = json.loads((out / "log.json").read_text())[0]
        assert record["engine"] == "NaiveEngine"
        assert record["omp_threads"] == cores
        results = json.loads((out / "results.json").read_text())
        assert results["runtime"]["omp_threads"] == cores
        assert results["runtime"]["omp_threads_source"] == "usable cores (nst default)"
    assert_same_params(runs[0] / "student.params", runs[1] / "student.params")


def test_a_user_set_thread_count_is_kept_and_logged(tmp_path):
    cfg, out = write_config(tmp_path, "one_thread", epochs=1)
    done = nst(["train", cfg, "--no-progress"], threads="1")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "log.json").read_text())[0]
    assert record["omp_threads"] == 1 and record["engine"] == "NaiveEngine"
    results = json.loads((out / "results.json").read_text())
    assert results["runtime"]["omp_threads_source"] == "OMP_NUM_THREADS"



# ------------------------------------------- 2. checkpoints by steps and by the clock
def check_run_folder(out):
    """The latest checkpoint is complete and the log holds every epoch once, in order."""
    manifest = ckpt.read_manifest(str(out))
    if manifest is not None:
        for rel in manifest["files"].values():
            assert os.path.getsize(out / rel) > 0
        mx.nd.load(str(out / manifest["files"]["student"]))
    if (out / "log.json").exists():
        epochs = [r["epoch"] for r in json.loads((out / "log.json").read_text())]
        assert epochs == list(range(1, len(epochs) + 1)), epochs
    return manifest


def kill_and_resume(cfg, out, kills):
    """Run with each ``NST_FAULT`` of ``kills`` in turn (each must die by SIGKILL),
    then to the end; returns the manifests left after each kill."""
    manifests = []
    for fault in kills:
        killed = nst(["train", cfg, "--no-progress", "--resume"], {"NST_FAULT": fault})
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stdout, killed.stderr)
        manifests.append(check_run_folder(out))
    final = nst(["train", cfg, "--no-progress", "--resume"])
    assert final.returncode == 0, final.stderr
    return manifests, final


def assert_same_logs(ref_out, out):
    ref, log = (json.loads((o / "log.json").read_text()) for o in (ref_out, out))
    assert [r["epoch"] for r in log] == [r["epoch"] for r in ref]
    for r, k in zip(ref, log):
        for key in r:
            if key not in ("images_per_s",):
                assert r[key] == k[key], (r["epoch"], key, r[key], k[key])


def test_sigkill_twice_mid_epoch_resumes_from_step_checkpoints_bitwise(tmp_path, teacher_params):
    """checkpoint_every_steps=2 (5 steps per epoch, log_interval 2): killed after global
    steps 4 and 7, i.e. mid-epoch 1 and mid-epoch 2 -- each time the last mid-epoch
    checkpoint (steps 2 and 6) is where the run continues, and the run still ends
    bitwise equal to an uninterrupted one, its log identical too."""
    train = {"checkpoint_every_steps": 2, "checkpoint_every_minutes": 0,
             "keep_checkpoints": 2}
    ref_cfg, ref_out = write_config(tmp_path, "reference", teacher_params, train=train)
    done = nst(["train", ref_cfg, "--no-progress"])
    assert done.returncode == 0, done.stderr

    cfg, out = write_config(tmp_path, "killed", teacher_params, train=train)
    manifests, _ = kill_and_resume(cfg, out, ["step@4",    # global step 4 (epoch 1)
                                              "step@5"])   # resumed at 2: global step 7 (epoch 2)
    assert [(m["epoch"], m["step_in_epoch"], m["global_step"]) for m in manifests] == \
        [(0, 2, 2), (1, 1, 6)]
    check_run_folder(out)
    assert_same_params(ref_out / "student.params", out / "student.params")
    assert_same_logs(ref_out, out)
    # pruned by keep_checkpoints: the two newest checkpoints' files, nothing else
    tags = {name.split("-")[0] for name in os.listdir(out / "checkpoints")}
    assert tags == {"step000000008", "step000000010"}, tags


def test_sigkill_mid_epoch_resumes_from_a_clock_checkpoint_bitwise(tmp_path, teacher_params):
    """checkpoint_every_minutes: with an interval shorter than a step every fold point
    (every log_interval = 2 steps) checkpoints; two SIGKILLs mid-epoch, then bitwise
    equal to an uninterrupted run without mid-epoch checkpoints."""
    ref_cfg, ref_out = write_config(tmp_path, "reference", teacher_params,
                                    train={"checkpoint_every_minutes": 0})
    assert nst(["train", ref_cfg, "--no-progress"]).returncode == 0
    cfg, out = write_config(tmp_path, "clock", teacher_params,
                            train={"checkpoint_every_minutes": 1e-6})
    manifests, _ = kill_and_resume(cfg, out, ["step@3", "step@6"])
    # killed after step 3 (checkpoint at 2), then resumed at 2 and killed after global
    # step 8 (epoch 2, step 3; checkpoints at 4, the epoch end 5, and 7 = epoch 2 step 2)
    assert [(m["epoch"], m["step_in_epoch"]) for m in manifests] == [(0, 2), (1, 2)]
    assert_same_params(ref_out / "student.params", out / "student.params")
    assert_same_logs(ref_out, out)


def test_checkpoint_clock_counts_steps_from_the_start_and_minutes_from_the_last():
    now = [0.0]
    clock = ckpt.CheckpointClock(every_steps=3, every_minutes=1, clock=lambda: now[0])
    assert [s for s in range(1, 10) if clock.due_by_steps(s)] == [3, 6, 9]
    assert not clock.due_by_time()
    now[0] = 59.0
    assert not clock.due_by_time()
    now[0] = 60.0
    assert clock.due_by_time()
    clock.written()
    assert not clock.due_by_time()
    off = ckpt.CheckpointClock(None, None)
    assert not off.due_by_steps(5) and not off.due_by_time()


@pytest.mark.parametrize("key, value", [("checkpoint_every_steps", -1),
                                        ("checkpoint_every_minutes", -5),
                                        ("checkpoint_every_steps", True)])
def test_bad_checkpoint_intervals_are_one_clear_error(tmp_path, key, value):
    cfg, _ = write_config(tmp_path, "bad", epochs=1, train={key: value})
    done = nst(["train", cfg, "--no-progress"])
    assert done.returncode == 2
    assert key in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


# ------------------------------------------------ 3. resume on a changed machine
def test_resume_on_more_devices_with_the_same_global_batch_continues_and_says_so(tmp_path):
    """Killed mid-epoch on one device, resumed on two (--cpus 2): the run continues
    from the checkpoint's step with the same global batch and schedule, and the log
    says what changed; its second epoch sees all 320 images at the scheduled lr."""
    train = {"checkpoint_every_steps": 2, "checkpoint_every_minutes": 0}
    cfg, out = write_config(tmp_path, "devices", train=train)
    killed = nst(["train", cfg, "--no-progress"], {"NST_FAULT": "step@7"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    manifest = check_run_folder(out)
    assert (manifest["epoch"], manifest["step_in_epoch"]) == (1, 1)
    assert manifest["machine"]["devices"] == 1 and manifest["machine"]["global_batch"] == 64
    resumed = nst(["train", cfg, "--no-progress", "--resume", "--cpus", "2"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming on 2 cpu device(s) per worker, the checkpoint was written on 1 cpu" \
        in resumed.stdout
    assert "global batch (64) and the steps per epoch (5) are unchanged" in resumed.stdout
    assert "at epoch 2, step 1" in resumed.stdout
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[1]["train_images"] == 320
    assert log[1]["lr"] == pytest.approx(0.005)       # lr_steps [1]: 0.05 * 0.1
    final = ckpt.read_manifest(str(out))
    assert final["global_step"] == 10 and final["machine"]["devices"] == 2


def test_resume_with_another_global_batch_is_one_clear_error(tmp_path):
    train = {"checkpoint_every_steps": 2, "checkpoint_every_minutes": 0}
    cfg, out = write_config(tmp_path, "batch", train=train)
    killed = nst(["train", cfg, "--no-progress"], {"NST_FAULT": "step@3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = nst(["train", cfg, "--no-progress", "--resume", "--set", "data.batch_size=32"])
    assert resumed.returncode == 2
    err = resumed.stderr.strip().splitlines()
    assert len(err) == 1, resumed.stderr
    assert "global batch of 64" in err[0] and "has 32" in err[0]
    assert "--set data.batch_size=64" in err[0]


def _machine(**changes):
    state = ckpt.machine_state(devices=1, device_type="gpu", num_workers=2, global_batch=256,
                               steps_per_epoch=100)
    state.update(changes)
    return state


def test_check_machine_names_what_changed_and_what_to_do(tmp_path):
    manifest = {"machine": _machine()}
    assert ckpt.check_machine(manifest, _machine(), str(tmp_path)) is None
    message = ckpt.check_machine(manifest, _machine(devices=4), str(tmp_path))
    assert "4 gpu device(s)" in message and "written on 1 gpu" in message
    assert "each device now takes 32 images" in message     # 256 / 2 workers / 4 devices
    with pytest.raises(ckpt.NSTError, match=r"2 dist_sync worker\(s\), this run has 4.*"
                                            r"Resume with 2 worker"):
        ckpt.check_machine(manifest, _machine(num_workers=4), str(tmp_path))
    with pytest.raises(ckpt.NSTError, match="an epoch had 100 steps, now it has 50"):
        ckpt.check_machine(manifest, _machine(steps_per_epoch=50), str(tmp_path))
    assert ckpt.check_machine({}, _machine(devices=8), str(tmp_path)) is None  # old checkpoint


# ------------------------------------------- 4. the teacher checked before it teaches
def _numpy_teacher_errors(teacher_path, cfg_path):
    """Top-1/top-5 error of the teacher on the run's test split, counted with NumPy."""
    from train.data import build_batches
    from train.config import load_config

    cfg = load_config(cfg_path)
    source = build_batches(cfg["data"], cfg["seed"], cfg["data"]["batch_size"])
    net = symbols.get_model(TEACHER["network"], classes=source.classes, **TEACHER["params"])
    net.load_parameters(teacher_path)
    logits, labels = [], []
    for data, label in source.test:
        logits.append(net(mx.nd.array(data)).asnumpy())
        labels.append(np.asarray(label.asnumpy() if hasattr(label, "asnumpy") else label))
    logits, labels = np.concatenate(logits), np.concatenate(labels).astype(int)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return (100.0 * np.mean(logits.argmax(axis=1) != labels),
            100.0 * np.mean(~(top5 == labels[:, None]).any(axis=1)), len(labels))


def test_an_untrained_teacher_is_evaluated_recorded_and_warned(tmp_path, teacher_params):
    cfg, out = write_config(tmp_path, "untrained", teacher_params, epochs=1,
                            teacher_extra={"max_top1_err": 50})
    done = nst(["train", cfg, "--no-progress"])
    assert done.returncode == 0, done.stderr
    top1, top5, images = _numpy_teacher_errors(teacher_params, cfg)
    assert "teacher preact_resnet11_cifar on the test split (128 images)" in done.stdout
    assert "WARNING: the teacher preact_resnet11_cifar" in done.stdout
    assert "no better than chance" in done.stdout
    assert "above teacher.max_top1_err = 50%" in done.stdout
    results = json.loads((out / "results.json").read_text())
    teval = results["teacher_eval"]
    assert teval["images"] == images == 128
    assert teval["top1_err"] == pytest.approx(top1, abs=1e-9)
    assert teval["top5_err"] == pytest.approx(top5, abs=1e-9)
    assert teval["chance_top1_err"] == pytest.approx(90.0)
    assert teval["p_value_vs_chance"] >= 0.01 and "looks wrong" in teval["warning"]
    record = json.loads((out / "log.json").read_text())[0]
    assert record["teacher_test_top1_err"] == teval["top1_err"]
    assert record["teacher_test_top5_err"] == teval["top5_err"]


def test_teacher_evaluation_changes_nothing_trained_and_can_be_skipped(tmp_path, teacher_params):
    evaluated_cfg, evaluated = write_config(tmp_path, "evaluated", teacher_params, epochs=1)
    skipped_cfg, skipped = write_config(tmp_path, "skipped", teacher_params, epochs=1)
    done = nst(["train", evaluated_cfg, "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert "on the test split" in done.stdout
    done = nst(["train", skipped_cfg, "--no-progress", "--skip-teacher-eval"])
    assert done.returncode == 0, done.stderr
    assert "on the test split" not in done.stdout
    assert json.loads((skipped / "results.json").read_text())["teacher_eval"] is None
    assert "teacher_test_top1_err" not in json.loads((skipped / "log.json").read_text())[0]
    assert_same_params(evaluated / "student.params", skipped / "student.params")


def test_a_resumed_run_does_not_re_evaluate_the_teacher(tmp_path, teacher_params):
    """Killed mid-epoch and resumed, the run keeps the first evaluation (stored in the
    checkpoint) instead of evaluating again."""
    train = {"checkpoint_every_steps": 2, "checkpoint_every_minutes": 0}
    cfg, out = write_config(tmp_path, "distil", teacher_params, train=train)
    killed = nst(["train", cfg, "--no-progress"], {"NST_FAULT": "step@3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "on the test split" in killed.stdout
    first = ckpt.read_manifest(str(out))["teacher_eval"]
    top1, top5, _ = _numpy_teacher_errors(teacher_params, cfg)
    assert first["top1_err"] == pytest.approx(top1, abs=1e-9)
    resumed = nst(["train", cfg, "--no-progress", "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "on the test split" not in resumed.stdout
    log = json.loads((out / "log.json").read_text())
    assert [r["teacher_test_top1_err"] for r in log] == [first["top1_err"]] * 2
    assert json.loads((out / "results.json").read_text())["teacher_eval"] == first


def test_tables_show_the_teacher_check_line():
    from train.report.tables import format_table

    good = {"top1_err": 5.25, "top5_err": 0.5, "images": 10000, "checkpoint": "t.params",
            "warning": None}
    bad = dict(good, top1_err=90.1, top5_err=50.2, checkpoint="other.params",
               warning="the teacher x looks wrong: it is no better than chance")
    measured = {"cifar10": {"kd": {"test_top1_err": 7.0, "teacher_eval": good},
                            "at": {"test_top1_err": 7.5, "teacher_eval": good}},
                "cifar100": {"kd": {"test_top1_err": 30.0, "teacher_eval": bad}}}
    text = format_table("table1", measured)
    assert ("Teacher check on cifar10 (test split, 10000 images, before distilling; all "
            "distilled rows): top-1 error 5.25%, top-5 error 0.50%") in text
    assert "Teacher check on cifar100" in text and "top-1 error 90.10%" in text
    assert "WARNING: the teacher x looks wrong" in text
    assert "Teacher check" not in format_table("table1", {"cifar10": {"kd": {"test_top1_err": 7}}})
