"""Helpers shared by the loss test files: MXNet wrappers and a finite-difference check.

The NumPy references of the equations stay in each test file, next to the
method they check.
"""

import mxnet as mx
import numpy as np
from mxnet import autograd

from train.losses import get_loss


def nd(a, dtype="float64"):
    return mx.nd.array(a, dtype=dtype)


def make_loss(name, s_shape, t_shape, dtype="float64", hybridize=False, **params):
    loss = get_loss(name, student_shape=s_shape, teacher_shape=t_shape, **params)
    loss.initialize(mx.init.Xavier(magnitude=2))
    if dtype != "float32":
        loss.cast(dtype)
    if hybridize:
        loss.hybridize(static_alloc=True, static_shape=True)
    return loss


def run(loss, s, t, dtype="float64", teacher_grad=False):
    """Value and student gradient (and teacher gradient) as NumPy; training mode."""
    s_nd, t_nd = nd(s, dtype), nd(t, dtype)
    s_nd.attach_grad()
    if teacher_grad:
        t_nd.attach_grad()
    with autograd.record():
        value = loss(s_nd, t_nd)
    value.backward()
    out = (float(value.asnumpy().reshape(-1)[0]), s_nd.grad.asnumpy())
    if teacher_grad:
        out += (t_nd.grad.asnumpy(),)
    return out


def fd_check(grad, ref, x, rng, n_dirs=3, h=1e-6, rtol=1e-5):
    """<grad, d> against central differences of the NumPy reference ``ref`` along
    random unit directions d and along the largest gradient coordinate."""
    dirs = [rng.standard_normal(x.shape) for _ in range(n_dirs)]
    unit = np.zeros(x.shape)
    unit.flat[int(np.argmax(np.abs(grad)))] = 1.0
    dirs.append(unit)
    scale = np.abs(grad).sum() + 1e-300
    for d in dirs:
        d = d / np.linalg.norm(d)
        fd = (ref(x + h * d) - ref(x - h * d)) / (2 * h)
        an = float(np.sum(grad * d))
        assert abs(an - fd) <= rtol * max(abs(fd), abs(an)) + 1e-9 * scale, (an, fd)
