"""Exact mid-epoch resume for every loss that draws random numbers or keeps state.

A run is stopped (as by SIGTERM) after a chosen update, resumed from its
checkpoint in a fresh :class:`~train.trainer.Distiller`, and its final student,
its transfer losses' own parameters (CRD's memory banks and normalisation
constants, FT's paraphraser and translator) and its log must equal an
uninterrupted run with the same seed *bit for bit* (MXNet's NaiveEngine, set by
``conftest.py``).  Real data everywhere: scikit-learn's digits, 96 training
images, 6 steps per epoch, so each run takes a few seconds.

CRD draws its negatives from MXNet's generator at every step: before the fix
the generator was reseeded only at the start of an epoch, so a run resumed at
epoch 2, step 3 drew different negatives from the uninterrupted one.
"""

import json

import mxnet as mx
import numpy as np
import pytest

from train import checkpoint as ckpt
from train.config import validate_config
from train.devices import parse_contexts
from train.trainer import Distiller

from trainer_helpers import STUDENT, TEACHER, save_random_teacher
STEPS_PER_EPOCH = 6


@pytest.fixture(scope="module")
def teacher_params(tmp_path_factory):
    """A randomly initialised teacher (its features are all a loss needs here)."""
    return save_random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.params", seed=11)


def make_config(out, teacher_params, transfer, epochs=2):
    return validate_config({
        "name": "resume", "out": str(out), "seed": 5, "epochs": epochs,
        "data": {"dataset": "digits", "batch_size": 16, "train_limit": 96,
                 "test_limit": 32, "test_batch_size": 32},
        "student": dict(STUDENT),
        "teacher": dict(TEACHER, checkpoint=teacher_params),
        "transfer": transfer,
        "optimizer": {"lr": 0.05, "lr_steps": [1]},
        "train": {"log_interval": 2}})


def distiller(cfg, cpus=1):
    return Distiller(cfg, parse_contexts(cpus=cpus), progress=False, log=lambda *_: None)


def stop_after(runner, updates):
    """Make ``runner`` act as if SIGTERM arrived right after its ``updates``-th update."""
    original = runner.trainer.step
    count = {"n": 0}

    def step(batch_size, **kwargs):
        original(batch_size, **kwargs)
        count["n"] += 1
        if count["n"] == updates:
            runner._stop_signal = 15

    runner.trainer.step = step


def state_of(runner):
    """Every parameter of the student and of the transfer losses, as NumPy arrays."""
    state = {"student." + k: p.data().asnumpy()
             for k, p in runner.student._collect_params_with_prefix().items()}
    for i, term in enumerate(runner.terms):
        for k, p in term.block._collect_params_with_prefix().items():
            state["transfer%d.%s" % (i, k)] = p.data().asnumpy()
    return state


def assert_bitwise_equal(a, b):
    assert set(a) == set(b)
    differing = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differing, "differ after resume: %s" % differing[:8]


def uninterrupted_and_resumed(tmp_path, teacher_params, transfer, epoch, step, cpus=1):
    """(uninterrupted, resumed) Distillers after a stop at ``epoch`` (1-based), ``step``."""
    full = distiller(make_config(tmp_path / "full", teacher_params, transfer), cpus)
    full.fit()
    cfg = make_config(tmp_path / "part", teacher_params, transfer)
    part = distiller(cfg, cpus)
    stop_after(part, (epoch - 1) * STEPS_PER_EPOCH + step)
    assert part.fit() is None
    manifest = ckpt.read_manifest(cfg["out"])
    assert (manifest["epoch"], manifest["step_in_epoch"]) == (epoch - 1, step)
    resumed = distiller(cfg, cpus)
    resumed.fit(resume=True)
    for name in ("full", "part"):  # the logs agree too
        assert (tmp_path / name / "log.json").exists()
    log_a = json.loads((tmp_path / "full" / "log.json").read_text())
    log_b = json.loads((tmp_path / "part" / "log.json").read_text())
    for a, b in zip(log_a, log_b):
        for key in a:
            if key == "images_per_s":
                continue
            if cpus == 1 or not key.startswith("test_"):
                assert a[key] == b[key], key
            else:  # evaluated with the BN running statistics, see below
                assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert len(log_a) == len(log_b) == 2
    return full, resumed


CRD = {"loss": "crd", "student": "in5b_bn", "teacher": "stage3", "params": {"feat_dim": 16}}
FT = {"loss": "ft", "student": "in5b_bn", "teacher": "stage3", "pretrain_epochs": 1,
      "weight": 50}


def test_crd_resumed_mid_epoch_is_bitwise_uninterrupted(tmp_path, teacher_params):
    """The issue's case: stopped at epoch 2, step 3; student, banks and Z all equal."""
    full, resumed = uninterrupted_and_resumed(tmp_path, teacher_params, [CRD], epoch=2, step=3)
    a, b = state_of(full), state_of(resumed)
    assert any(k.endswith("memory_s") for k in a) and any(k.endswith(".z") for k in a)
    assert_bitwise_equal(a, b)


def recorded_negatives(runner):
    """Run ``runner`` to the end, returning the negatives CRD drew at each step."""
    block = runner.terms[0].block
    draws = []
    original = block.sample_negatives

    def record(batch, ctx, dtype="float32"):
        neg = original(batch, ctx, dtype)
        draws.append(neg.asnumpy())
        return neg

    block.sample_negatives = record
    runner.fit()
    return draws


def test_crd_negatives_differ_between_steps_and_repeat_on_rerun(teacher_params, tmp_path):
    """Per-step seeding must not make every step draw the same negatives, and an
    identical run draws identical ones."""
    first = recorded_negatives(distiller(make_config(tmp_path / "a", teacher_params, [CRD],
                                                     epochs=1)))
    second = recorded_negatives(distiller(make_config(tmp_path / "b", teacher_params, [CRD],
                                                      epochs=1)))
    assert len(first) == len(second) == STEPS_PER_EPOCH
    assert not any(np.array_equal(first[0], d) for d in first[1:])
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_crd_on_two_devices_resumes_bitwise(tmp_path, teacher_params):
    """Two devices: both copies of the banks are restored and the draws repeat, so
    weights, banks and training losses are bitwise equal.  BatchNorm running
    statistics are per device until the epoch's end; a checkpoint stores their
    mean (Gluon's ``save_parameters``), and the running-average update is
    linear, so after the epoch-end averaging they agree to float rounding only."""
    full, resumed = uninterrupted_and_resumed(tmp_path, teacher_params, [CRD], epoch=2, step=3,
                                              cpus=2)
    a, b = state_of(full), state_of(resumed)
    running = [k for k in a if "running_" in k]
    assert running
    for key in running:
        np.testing.assert_allclose(a.pop(key), b.pop(key), rtol=1e-5, atol=1e-7, err_msg=key)
    assert_bitwise_equal(a, b)
    for term in resumed.terms:
        copies = [c.asnumpy() for c in term.block.memory_s.list_data()]
        np.testing.assert_array_equal(copies[0], copies[1])


def test_ft_with_pretraining_stage_resumes_bitwise(tmp_path, teacher_params):
    """FT's state: the pre-trained (frozen) paraphraser is restored from the
    checkpoint, not pre-trained again, and training continues exactly."""
    full, resumed = uninterrupted_and_resumed(tmp_path, teacher_params, [FT], epoch=2, step=3)
    a, b = state_of(full), state_of(resumed)
    assert any(k.startswith("transfer0.encoder.") for k in a)
    assert_bitwise_equal(a, b)
    # the paraphraser stayed frozen after its stage: equal to the checkpoint's
    manifest = ckpt.read_manifest(str(tmp_path / "part"))
    saved = mx.nd.load(str(tmp_path / "part" / manifest["files"]["transfer0"]))
    paraphraser = [k for k in saved if k.startswith(("encoder.", "decoder."))]
    assert paraphraser
    for key in paraphraser:
        np.testing.assert_array_equal(saved[key].asnumpy(), b["transfer0." + key])
