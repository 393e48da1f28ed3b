"""The objective the trainer differentiates is Eq. 3 with the configured weights.

One :meth:`Distiller._forward_backward` of a tiny student/teacher pair (KD +
NST-poly with unusual weights) leaves parameter gradients that must equal
the autograd gradients of an expression written here, independently of
:mod:`train.losses` and of the trainer:

    sum over the batch of  CE_i  +  lambda_kd * KL(p_T || p_S)_i  +  lambda_nst * MMD^2_i,

on one device and on two (each device differentiates its own half; the
kvstore then sums the halves).  The logged ``loss_total`` of that same step
must equal the value of the expression (divided by the batch size).
"""

import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

from train.config import validate_config
from train.devices import parse_contexts
from train.trainer import Distiller

from trainer_helpers import STUDENT, TEACHER, save_random_teacher
KD_WEIGHT, NST_WEIGHT, TEMPERATURE = 3.0, 7.0, 4.0
BATCH = 16


@pytest.fixture(scope="module")
def teacher_params(tmp_path_factory):
    return save_random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.params", seed=21)


def make_distiller(out, teacher_params, cpus):
    cfg = validate_config({
        "name": "objective", "out": str(out), "seed": 2, "epochs": 1,
        "data": {"dataset": "digits", "batch_size": BATCH, "train_limit": BATCH,
                 "test_limit": 16, "test_batch_size": 16},
        "student": dict(STUDENT),
        "teacher": dict(TEACHER, checkpoint=teacher_params),
        "transfer": [
            {"loss": "kd", "weight": KD_WEIGHT, "student": "logits", "teacher": "logits",
             "params": {"temperature": TEMPERATURE}},
            {"loss": "nst_poly", "weight": NST_WEIGHT, "student": "in5b_bn",
             "teacher": "stage3"}],
        "optimizer": {"lr": 0.1}})
    return Distiller(cfg, parse_contexts(cpus=cpus), progress=False, log=lambda *_: None)


def _log_softmax(z):
    z = z - mx.nd.max(z, axis=1, keepdims=True)
    return z - mx.nd.log(mx.nd.sum(mx.nd.exp(z), axis=1, keepdims=True))


def _unit_channels(f):
    """(N, C, H, W) -> (N, C, HW), every channel's map scaled to unit L2 norm."""
    f = f.reshape((0, 0, -1))
    return f / mx.nd.sqrt(mx.nd.sum(f * f, axis=2, keepdims=True) + 1e-10)


def _mean_poly_kernel(a, b):
    """Mean over all pairs (i, j) of (a_i . b_j)^2 per sample: (N,)."""
    k = mx.nd.batch_dot(a, b, transpose_b=True) ** 2
    return mx.nd.mean(k.reshape((0, -1)), axis=1)


def independent_total(student, teacher_outputs, x, y):
    """Sum over the part ``x`` of CE + lambda_kd KD + lambda_nst MMD^2 (Eqs. 3, 4, 9);
    ``teacher_outputs``: the frozen teacher's (logits, feature) in inference mode."""
    t_logits, t_feature = teacher_outputs
    s_logits, s_feature = student(x)
    assert s_feature.shape[2:] == t_feature.shape[2:]
    ce = -mx.nd.pick(_log_softmax(s_logits), y, axis=1)
    log_pt = _log_softmax(t_logits / TEMPERATURE)
    kd = mx.nd.sum(mx.nd.exp(log_pt) * (log_pt - _log_softmax(s_logits / TEMPERATURE)), axis=1)
    s, t = _unit_channels(s_feature), _unit_channels(t_feature)
    mmd2 = _mean_poly_kernel(s, s) + _mean_poly_kernel(t, t) - 2 * _mean_poly_kernel(s, t)
    return mx.nd.sum(ce + KD_WEIGHT * kd + NST_WEIGHT * mmd2)


def gradients(net, ctx):
    return {k: p.grad(ctx).asnumpy().copy()
            for k, p in net._collect_params_with_prefix().items() if p.grad_req != "null"}


@pytest.mark.parametrize("cpus", [1, 2])
def test_gradients_and_logged_total_are_those_of_eq3(tmp_path, teacher_params, cpus):
    runner = make_distiller(tmp_path / "run", teacher_params, cpus)
    data, label = next(iter(runner.train_batches.iter_epoch(0)))
    data, label = mx.nd.array(data), mx.nd.array(label)
    runner._forward_backward(0, data, label)
    trained = [gradients(runner.student, ctx) for ctx in runner.ctx]

    halves = mx.gluon.utils.split_and_load(data, runner.ctx, even_split=False)
    labels = mx.gluon.utils.split_and_load(label, runner.ctx, even_split=False)
    assert len(halves) == cpus
    value = 0.0
    for ctx, x, y, grads in zip(runner.ctx, halves, labels, trained):
        teacher_outputs = runner.teacher(x)  # outside autograd: inference-mode BatchNorm
        with autograd.record():
            total = independent_total(runner.student, teacher_outputs, x, y)
        total.backward()
        value += float(total.asscalar())
        expected = gradients(runner.student, ctx)
        assert set(expected) == set(grads) and len(grads) > 20
        for key in expected:
            np.testing.assert_allclose(grads[key], expected[key], rtol=2e-4,
                                       atol=2e-5 * np.abs(expected[key]).max(), err_msg=key)

    runner.fit()  # the one step of this epoch, from the same parameters
    record = json.loads((tmp_path / "run" / "log.json").read_text())[0]
    assert record["train_images"] == BATCH
    assert record["loss_total"] == pytest.approx(value / BATCH, rel=1e-5)
    assert record["loss_total"] == pytest.approx(
        record["loss_ce"] + KD_WEIGHT * record["loss_kd"] + NST_WEIGHT * record["loss_nst_poly"],
        rel=1e-6)
