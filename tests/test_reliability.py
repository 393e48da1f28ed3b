"""Reliability: killed runs lose nothing, SIGTERM saves, outputs stay intact.

A small distillation run (digits, tiny networks: real data available
everywhere) is killed with SIGKILL at chosen instants -- after a training step,
inside an evaluation pass, while a checkpoint file is being written, while the
log is being written, and at a random moment -- and resumed each time.  The
run must complete with every epoch logged exactly once, the latest checkpoint
always complete, and final parameters equal to an uninterrupted run with the
same seed.  Fault points come from :mod:`nst.faults` (``NST_FAULT``).
"""

import json
import os
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
import yaml

from train import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from trainer_helpers import TEACHER, save_random_teacher


@pytest.fixture(scope="module")
def teacher_params(tmp_path_factory):
    return save_random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.params")


def write_config(tmp_path, name, teacher_params, epochs=3):
    cfg = {"name": name, "out": str(tmp_path / name), "seed": 7, "epochs": epochs,
           "data": {"dataset": "digits", "batch_size": 64, "train_limit": 320,
                    "test_limit": 128, "test_batch_size": 64},
           "student": {"network": "inception_bn_small", "params": {"width": 0.25}},
           "teacher": dict(TEACHER, checkpoint=teacher_params),
           "transfer": [{"loss": "kd", "weight": 16, "student": "logits", "teacher": "logits"},
                        {"loss": "nst_poly", "weight": 25, "student": "in5b_bn",
                         "teacher": "stage3"}],
           "optimizer": {"lr": 0.05, "lr_steps": [2]},
           "train": {"log_interval": 2}}
    path = tmp_path / (name + ".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return str(path), tmp_path / name


def nst(args, env_extra=None, timeout=900):
    env = dict(os.environ)
    env.pop("NST_FAULT", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "nst.cli"] + args, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_run_folder(out):
    """Invariants that must hold after any kill: a complete latest checkpoint,
    every logged epoch once and in order."""
    manifest = ckpt.read_manifest(str(out))  # raises on a damaged manifest
    if manifest is not None:
        for rel in manifest["files"].values():
            assert os.path.getsize(out / rel) > 0
        mx.nd.load(str(out / manifest["files"]["student"]))
    log_file = out / "log.json"
    if log_file.exists():
        epochs = [r["epoch"] for r in json.loads(log_file.read_text())]
        assert epochs == list(range(1, len(epochs) + 1)), epochs
    return manifest


def params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def test_killed_at_any_point_resumes_to_the_uninterrupted_result(tmp_path, teacher_params):
    ref_cfg, ref_out = write_config(tmp_path, "reference", teacher_params)
    done = nst(["train", ref_cfg, "--no-progress"])
    assert done.returncode == 0, done.stderr

    cfg, out = write_config(tmp_path, "killed", teacher_params)
    # Fault counts are per process; every checkpoint writes 3 files (student,
    # optimiser state, manifest last) and every evaluation visits 2 batches.
    kills = ["step@3",               # mid-epoch 1, before any checkpoint
             "checkpoint-write@6",   # epoch 2's manifest: epoch 1's stays the latest
             "eval@4",               # resumed at epoch 2; killed inside epoch 3's evaluation
             "log-write@1",          # resumed at epoch 3; killed publishing its log
             "step@2"]               # resumed at epoch 3 again; killed mid-epoch
    progress = []
    for fault in kills:
        killed = nst(["train", cfg, "--no-progress", "--resume"], {"NST_FAULT": fault})
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr)
        manifest = check_run_folder(out)
        progress.append(None if manifest is None else manifest["epoch"])
    assert progress == [None, 1, 2, 2, 2]
    # and once at a random instant inside a step: frozen after a (seeded) random
    # number of steps of epoch 3 (no sleep racing the start-up), then continued
    # and killed a random fraction of a second later
    rng = np.random.default_rng(0)
    env = dict(os.environ, NST_FAULT="step@%d:stop" % rng.integers(1, 5))
    proc = subprocess.Popen([sys.executable, "-m", "nst.cli", "train", cfg, "--no-progress",
                             "--resume"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status
    proc.send_signal(signal.SIGCONT)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert check_run_folder(out)["epoch"] == 2

    final = nst(["train", cfg, "--no-progress", "--resume"])
    assert final.returncode == 0, final.stderr
    manifest = check_run_folder(out)
    assert manifest["epoch"] == 3 and manifest["step_in_epoch"] == 0
    assert [r["epoch"] for r in json.loads((out / "log.json").read_text())] == [1, 2, 3]
    assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".tmp")]
    a, b = params(ref_out / "student.params"), params(out / "student.params")
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ref_log = json.loads((ref_out / "log.json").read_text())
    log = json.loads((out / "log.json").read_text())
    for r, k in zip(ref_log, log):
        assert r["test_top1_err"] == k["test_top1_err"]
        assert r["loss_total"] == pytest.approx(k["loss_total"], rel=1e-12)


def test_sigterm_saves_a_checkpoint_and_resume_completes(tmp_path, teacher_params):
    ref_cfg, ref_out = write_config(tmp_path, "reference", teacher_params, epochs=2)
    assert nst(["train", ref_cfg, "--no-progress"]).returncode == 0
    cfg, out = write_config(tmp_path, "term", teacher_params, epochs=2)
    # SIGTERM right after update 8 = epoch 2, step 3 (5 steps per epoch): delivered
    # by the process itself at that fault point, so no timing race with the test
    stopped = nst(["train", cfg, "--no-progress"], {"NST_FAULT": "step@8:term"})
    assert stopped.returncode == 130, stopped.stderr
    assert "checkpoint written" in stopped.stdout + stopped.stderr
    manifest = check_run_folder(out)
    assert (manifest["epoch"], manifest["step_in_epoch"]) == (1, 3)
    assert nst(["train", cfg, "--no-progress", "--resume"]).returncode == 0
    a, b = params(ref_out / "student.params"), params(out / "student.params")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------ numerical guards
from mxnet import autograd  # noqa: E402

from train.losses import get_loss, list_losses, loss_class  # noqa: E402


def _zero_inputs(cls, batch=4):
    """All-zero student and teacher inputs of the shapes the loss expects."""
    if getattr(cls, "inputs", "feature") == "logits":
        s_shape, t_shape = (10,), (10,)
    else:
        s_shape, t_shape = (16, 4, 4), (8, 4, 4)
    pairs = getattr(cls, "input_layers", 1)  # FSP-style losses take lists of layers
    kwargs = {"student_shape": s_shape, "teacher_shape": t_shape}
    student = mx.nd.zeros((batch,) + s_shape)
    teacher = mx.nd.zeros((batch,) + t_shape)
    if pairs > 1:
        kwargs = {"student_shape": [s_shape] * pairs, "teacher_shape": [t_shape] * pairs}
        student, teacher = [student] * pairs, [teacher] * pairs
    extra = []
    if getattr(cls, "needs_index", False):
        kwargs["num_samples"] = 32
        extra = [mx.nd.arange(batch)]
    return kwargs, student, teacher, extra


@pytest.mark.parametrize("name", list_losses())
def test_all_zero_feature_maps_give_finite_losses_and_gradients(name):
    """The L2 normalisations' epsilon: dead (all-zero) maps must not give NaN."""
    cls = loss_class(name)
    if name.startswith("_test"):
        pytest.skip("test-only loss of test_trainer.py")
    kwargs, student, teacher, extra = _zero_inputs(cls)
    loss = get_loss(name, **kwargs)
    loss.initialize(mx.init.Xavier())
    students = student if isinstance(student, list) else [student]
    for s in students:
        s.attach_grad()
    with autograd.record():
        value = loss(student, teacher, *extra)
    value.backward()
    assert np.isfinite(value.asnumpy()).all(), name
    for s in students:
        assert np.isfinite(s.grad.asnumpy()).all(), name


def test_published_files_get_normal_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the published file must be
    readable like one written with open()."""
    from nst.io import write_json
    path = tmp_path / "out.json"
    write_json(str(path), {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


# ------------------------------------------------------------ fault actions
_FAULT_CHILD = """
import signal, sys
sys.path.insert(0, %r)
from nst import faults
signal.signal(signal.SIGTERM, lambda *_: print("term at", visits, flush=True))
for visits in range(1, 5):
    faults.checkpoint("step")
print("done", flush=True)
""" % REPO


def _fault_child(spec):
    env = dict(os.environ, NST_FAULT=spec)
    return subprocess.Popen([sys.executable, "-c", _FAULT_CHILD], env=env,
                            stdout=subprocess.PIPE, text=True)


def test_fault_actions_kill_term_and_stop_at_the_chosen_visit():
    from nst import faults
    os.environ["NST_FAULT"] = "step@8:term,eval@2,log-write@1:stop,bad@x,odd@3:nope"
    try:
        plan = faults._plan()
    finally:
        del os.environ["NST_FAULT"]
    assert plan == {"step": (8, signal.SIGTERM), "eval": (2, signal.SIGKILL),
                    "log-write": (1, signal.SIGSTOP)}
    killed = _fault_child("step@3")
    out, _ = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL and out == ""
    termed = _fault_child("step@3:term")
    out, _ = termed.communicate(timeout=60)
    assert termed.returncode == 0 and out.splitlines() == ["term at 3", "done"]
    stopped = _fault_child("step@2:stop")
    _, status = os.waitpid(stopped.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    stopped.send_signal(signal.SIGCONT)
    out, _ = stopped.communicate(timeout=60)
    assert stopped.returncode == 0 and out.splitlines() == ["done"]
