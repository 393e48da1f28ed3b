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

import symbols
from train import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER = {"network": "preact_resnet11_cifar", "params": {"width": 0.25}}


@pytest.fixture(scope="module")
def teacher_params(tmp_path_factory):
    net = symbols.get_model(TEACHER["network"], classes=10, **TEACHER["params"])
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.params")
    net.save_parameters(path)
    return path


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


def nst(args, env_extra=None, timeout=240):
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
    # and once at a random instant
    proc = subprocess.Popen([sys.executable, "-m", "nst.cli", "train", cfg, "--no-progress",
                             "--resume"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(np.random.default_rng(0).uniform(3.0, 6.0))
    proc.kill()
    proc.wait()
    check_run_folder(out)

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
    proc = subprocess.Popen([sys.executable, "-m", "nst.cli", "train", cfg, "--no-progress"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait for epoch 1 to be logged, then stop during epoch 2
    deadline = time.time() + 120
    while not (out / "log.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "checkpoint written" in stdout + stderr
    manifest = check_run_folder(out)
    assert manifest["epoch"] == 1 and 0 < manifest["step_in_epoch"] < 5
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
