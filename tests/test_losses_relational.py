"""SP, AB, RKD, PKT, CC and VID (train/losses) against an independent NumPy reference.

The reference below is written from the papers' equations with plain loops
over images, pairs and triplets, in float64.  The MXNet losses run in float64
for the tight value (1e-6 relative) and finite-difference gradient checks, and
in float32 (the training dtype) with looser tolerances.  The last section runs
each method's shipped CIFAR-10 config for one epoch through the real trainer,
on scikit-learn's digits with tiny networks (works without the CIFAR subset).
"""

import json
import math
import zlib
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from mxnet import autograd

from nst.errors import NSTError
from train.config import read_config, validate_config
from train.devices import parse_contexts
from train.losses import (ABLoss, CCLoss, PKTLoss, RKDLoss, SPLoss, VIDLoss, get_loss,
                          list_losses)
from train.trainer import Distiller
from loss_helpers import nd, make_loss, run, fd_check
from trainer_helpers import STUDENT, TEACHER

NAMES = ("sp", "ab", "rkd", "pkt", "cc", "vid")
RELATIONAL = ("sp", "rkd", "pkt", "cc")
EMBEDDING = ("rkd", "pkt", "cc")
BN_EPS = 1e-5  # Gluon BatchNorm's default epsilon

# ============================================================ NumPy reference


def ref_pool(a, size):
    """(C, H, W) -> (C, h, w) by block averages (integer ratios only, as used here)."""
    c, H, W = a.shape
    h, w = size
    kh, kw = H // h, W // w
    assert kh * h == H and kw * w == W
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            out[:, i, j] = a[:, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].mean(axis=(1, 2))
    return out


def ref_pair(s, t):
    """Bring a batch of student/teacher maps to the common (smaller) spatial size."""
    size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
    return (np.stack([ref_pool(x, size) for x in s]), np.stack([ref_pool(x, size) for x in t]))


def ref_embed(x):
    """(N, D) stays; (N, C, H, W) -> (N, C), the spatial mean."""
    return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2) if x.ndim == 4 else x


def unit(v, eps=1e-12):
    return v / math.sqrt(float(v @ v) + eps)


def huber(x):
    return 0.5 * x * x if abs(x) <= 1.0 else abs(x) - 0.5


def ref_sp(s, t, eps=1e-10):
    """Tung & Mori Eq. 1-4: row-normalised Grams of the flattened maps, ||.||_F^2 / b^2."""
    b = len(s)

    def similarity(x):
        q = x.reshape(b, -1)
        g = np.array([[float(q[i] @ q[j]) for j in range(b)] for i in range(b)])
        return np.array([row / math.sqrt(float(row @ row) + eps) for row in g])

    d = similarity(t) - similarity(s)
    return sum(d[i, j] ** 2 for i in range(b) for j in range(b)) / b ** 2


def ref_rkd(s, t, wd=25.0, wa=50.0):
    """Park et al.: Huber on mean-normalised distances and on triplet angle cosines."""
    s, t = ref_embed(s), ref_embed(t)
    b = len(s)

    def relations(x):
        dist = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(b)] for i in range(b)])
        pairs = [(i, j) for i in range(b) for j in range(b) if i != j]
        mu = sum(dist[p] for p in pairs) / len(pairs) if pairs else 1.0
        cos = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):          # the vertex
                for k in range(b):
                    if i != j and k != j:
                        cos[i, j, k] = float((x[i] - x[j]) @ (x[k] - x[j])) / (
                            np.linalg.norm(x[i] - x[j]) * np.linalg.norm(x[k] - x[j]))
        return dist / mu, cos

    ds, cs = relations(s)
    dt, ct = relations(t)
    loss_d = sum(huber(ds[i, j] - dt[i, j]) for i in range(b) for j in range(b)) / b ** 2
    loss_a = sum(huber(cs[i, j, k] - ct[i, j, k])
                 for i in range(b) for j in range(b) for k in range(b)) / b ** 3
    return wd * loss_d + wa * loss_a


def ref_pkt(s, t, eps=1e-7):
    """Passalis & Tefas: cosine-kernel conditionals, mean over i of KL(p_.|i || q_.|i)."""
    s, t = ref_embed(s), ref_embed(t)
    b = len(s)

    def conditionals(x):
        u = [unit(v) for v in x]
        k = np.array([[0.5 * (float(u[i] @ u[j]) + 1.0) if i != j else 0.0 for j in range(b)]
                      for i in range(b)])
        return np.array([row / row.sum() if row.sum() > 0 else row for row in k])

    p, q = conditionals(t), conditionals(s)
    total = 0.0
    for i in range(b):
        for j in range(b):
            if i != j:
                total += p[i, j] * (math.log(p[i, j] + eps) - math.log(q[i, j] + eps))
    return total / b


def ref_cc(s, t, gamma=0.4, order=2):
    """Peng et al.: order-P Taylor of the Gaussian RBF on unit embeddings, ||.||^2 / b^2."""
    s, t = ref_embed(s), ref_embed(t)
    b = len(s)

    def correlation(x):
        u = [unit(v) for v in x]
        c = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                sim = float(u[i] @ u[j])
                c[i, j] = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim ** p
                              for p in range(order + 1))
        return c

    d = correlation(t) - correlation(s)
    return float((d * d).sum()) / b ** 2


def ref_ab(s, t, weight, gamma, beta, margin=1.0):
    """Heo et al.: 1x1 conv + BatchNorm (batch statistics) connector, squared hinge
    summed over an image's elements, averaged over the batch."""
    s, t = ref_pair(s, t)
    r = np.einsum("oc,nchw->nohw", weight, s)
    mean = r.mean(axis=(0, 2, 3), keepdims=True)
    var = ((r - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    r = (r - mean) / np.sqrt(var + BN_EPS) * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)
    total = 0.0
    for idx in np.ndindex(*r.shape):
        if t[idx] > 0:
            total += max(0.0, margin - r[idx]) ** 2
        else:
            total += max(0.0, margin + r[idx]) ** 2
    return total / len(s)


def ref_vid(s, t, w1, w2, w3, alpha, eps=1e-5):
    """Ahn et al.: Gaussian NLL of t given mu(s) (conv-ReLU-conv-ReLU-conv), sigma_c^2 =
    softplus(alpha_c) + eps; mean over channels and positions, batch mean."""
    s, t = ref_pair(s, t)
    h1 = np.maximum(np.einsum("oc,nchw->nohw", w1, s), 0)
    h2 = np.maximum(np.einsum("oc,nchw->nohw", w2, h1), 0)
    mu = np.einsum("oc,nchw->nohw", w3, h2)
    var = np.log1p(np.exp(alpha)) + eps
    total = 0.0
    for n in range(len(s)):
        for c in range(t.shape[1]):
            nll = 0.5 * math.log(var[c]) + (t[n, c] - mu[n, c]) ** 2 / (2 * var[c])
            total += nll.mean() / t.shape[1]
    return total / len(s)


# ================================================================== helpers


def value_of(loss, s, t, dtype="float64"):
    with autograd.record():          # training mode (AB's BatchNorm uses batch statistics)
        return float(loss(nd(s, dtype), nd(t, dtype)).asnumpy().reshape(-1)[0])


def set_random_params(name, loss, s_shape, t_shape, rng, dtype="float64"):
    """Give AB's connector / VID's regressor known random values; return them."""
    params = loss.collect_params()
    values = {}
    if name == "ab":
        c_t, c_s = t_shape[0], s_shape[0]
        values = {"weight": rng.standard_normal((c_t, c_s)),
                  "gamma": rng.uniform(0.5, 2.0, c_t), "beta": rng.standard_normal(c_t)}
        for key, p in params.items():
            if key.endswith("conv0_weight"):
                p.set_data(nd(values["weight"].reshape(c_t, c_s, 1, 1), dtype))
            elif key.endswith("gamma"):
                p.set_data(nd(values["gamma"], dtype))
            elif key.endswith("beta"):
                p.set_data(nd(values["beta"], dtype))
    elif name == "vid":
        c_t, c_s = t_shape[0], s_shape[0]
        hidden = c_t
        values = {"w1": rng.standard_normal((hidden, c_s)) / math.sqrt(c_s),
                  "w2": rng.standard_normal((hidden, hidden)) / math.sqrt(hidden),
                  "w3": rng.standard_normal((c_t, hidden)) / math.sqrt(hidden),
                  "alpha": rng.standard_normal(c_t)}
        convs = sorted(k for k in params if k.endswith("_weight"))
        for key, w in zip(convs, ("w1", "w2", "w3")):
            params[key].set_data(nd(values[w].reshape(values[w].shape + (1, 1)), dtype))
        alpha = [k for k in params if k.endswith("alpha")]
        params[alpha[0]].set_data(nd(values["alpha"], dtype))
    return values


def reference(name, s, t, values):
    if name == "sp":
        return ref_sp(s, t)
    if name == "rkd":
        return ref_rkd(s, t)
    if name == "pkt":
        return ref_pkt(s, t)
    if name == "cc":
        return ref_cc(s, t)
    if name == "ab":
        return ref_ab(s, t, values["weight"], values["gamma"], values["beta"])
    return ref_vid(s, t, values["w1"], values["w2"], values["w3"], values["alpha"])


FEATURE_CASES = [((6, 4, 4), (5, 4, 4)), ((4, 8, 8), (7, 4, 4)), ((3, 2, 2), (4, 4, 4)),
                 ((5, 2, 6), (2, 2, 3))]
SP_CASES = FEATURE_CASES + [((3, 5, 5), (6, 2, 3))]   # SP never resizes
EMBEDDING_CASES = [((7,), (4,)), ((3,), (9,)), ((5, 3, 3), (6, 2, 2)), ((4, 2, 2), (6,))]
CASES = [(name, s, t) for name in ("ab", "vid") for s, t in FEATURE_CASES] + \
        [("sp", s, t) for s, t in SP_CASES] + \
        [(name, s, t) for name in EMBEDDING for s, t in EMBEDDING_CASES]


def batch_for(name):
    return 4 if name in ("ab", "vid") else 5


# ======================================================= values and gradients


@pytest.mark.parametrize("name,s_shape,t_shape", CASES,
                         ids=["%s-%s-%s" % (n, "x".join(map(str, s)), "x".join(map(str, t)))
                              for n, s, t in CASES])
def test_value_and_gradient_vs_reference(name, s_shape, t_shape):
    rng = np.random.default_rng(zlib.crc32(repr((name, s_shape, t_shape)).encode()))
    b = batch_for(name)
    s = rng.standard_normal((b,) + s_shape) if name == "ab" else rng.uniform(0, 1, (b,) + s_shape)
    t = rng.standard_normal((b,) + t_shape)
    loss = make_loss(name, s_shape, t_shape)
    values = set_random_params(name, loss, s_shape, t_shape, rng)

    def ref(x):
        return reference(name, x, t, values)

    expected = ref(s)
    value, grad = run(loss, s, t)
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-12)
    fd_check(grad, ref, s, rng)
    # float32, the training dtype
    loss32 = make_loss(name, s_shape, t_shape, "float32")
    for p, p64 in zip(loss32.collect_params().values(), loss.collect_params().values()):
        p.set_data(p64.data().astype("float32"))
    value32, grad32 = run(loss32, s, t, "float32")
    assert value32 == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert np.allclose(grad32, grad, rtol=1e-2, atol=2e-3 * np.abs(grad).max())


def test_reference_sanity():
    """A few hand-computable values of the references themselves."""
    # RKD: an equilateral triangle vs a scaled copy: all relations equal
    tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    assert ref_rkd(tri * 3 + 1, tri) == pytest.approx(0.0, abs=1e-12)
    # CC / PKT of identical directions: 0
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert ref_cc(x * 2, x) == pytest.approx(0.0, abs=1e-12)
    assert ref_pkt(x * 2, x) == pytest.approx(0.0, abs=1e-12)
    # CC Taylor coefficients of order 2, gamma 0.4
    assert get_loss("cc").coefficients() == pytest.approx(
        [math.exp(-0.8), 0.8 * math.exp(-0.8), 0.32 * math.exp(-0.8)])


# ============================================================ generic checks


def _generic_inputs(name, rng):
    if name in EMBEDDING:
        s_shape, t_shape = (6, 4, 4), (5,)
    else:
        s_shape, t_shape = (6, 8, 8), (5, 4, 4)
    return (s_shape, t_shape, rng.standard_normal((6,) + s_shape),
            rng.standard_normal((6,) + t_shape))


@pytest.mark.parametrize("name", NAMES)
def test_teacher_gets_no_gradient_and_hybrid_equals_imperative(name):
    rng = np.random.default_rng(13)
    s_shape, t_shape, s, t = _generic_inputs(name, rng)
    results = []
    for hybridize in (False, True):
        mx.random.seed(0)                      # same connector / regressor in both
        loss = make_loss(name, s_shape, t_shape, "float32", hybridize)
        for _ in range(2):                     # the second call runs the cached graph
            value, grad, t_grad = run(loss, s, t, "float32", teacher_grad=True)
        assert not np.any(t_grad)
        assert np.any(grad) and np.all(np.isfinite(grad))
        results.append((value, grad))
    (v0, g0), (v1, g1) = results
    assert v1 == pytest.approx(v0, rel=1e-5, abs=1e-7)
    assert np.allclose(g1, g0, rtol=1e-4, atol=1e-6 * np.abs(g0).max())


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_call_uses_constructor_shapes(name):
    rng = np.random.default_rng(3)
    s_shape, t_shape, _, _ = _generic_inputs(name, rng)
    loss = get_loss(name, student_shape=s_shape, teacher_shape=t_shape)
    out = loss(mx.sym.var("s"), mx.sym.var("t"))
    assert isinstance(out, mx.sym.Symbol)
    _, out_shapes, _ = out.infer_shape(s=(3,) + s_shape, t=(3,) + t_shape)
    assert out_shapes == [(1,)]


@pytest.mark.parametrize("name", RELATIONAL)
def test_relational_batch_semantics(name):
    """One image has no pairs: loss 0, zero gradient; a batch is not the mean of its images."""
    rng = np.random.default_rng(5)
    s_shape, t_shape, s, t = _generic_inputs(name, rng)
    loss = make_loss(name, s_shape, t_shape)
    value, grad = run(loss, s[:1], t[:1])
    assert value == pytest.approx(0.0, abs=1e-12) and np.abs(grad).max() <= 1e-20
    assert run(loss, s, t)[0] > 1e-6
    assert type(loss).batch_relational is True


# ============================================================== properties


def _orthogonal(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@settings(max_examples=12, deadline=None, derandomize=True)
@given(b=st.integers(3, 6), d=st.integers(2, 5), extra=st.integers(0, 3),
       seed=st.integers(0, 2 ** 31), name=st.sampled_from(EMBEDDING))
def test_embedding_losses_zero_for_similar_embeddings(b, d, extra, seed, name):
    """0 when the student is the teacher rotated (into more dimensions), scaled and, for
    RKD, translated -- the transforms each loss's relations ignore."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((b, d))
    padded = np.concatenate([t, np.zeros((b, extra))], axis=1)
    rotated = padded @ _orthogonal(rng, d + extra)
    if name == "rkd":
        s = 2.5 * rotated + rng.standard_normal(d + extra)          # similarity transform
    else:
        s = rotated * rng.uniform(0.1, 10.0, (b, 1))                # positive scale per image
    loss = make_loss(name, (d + extra,), (d,))
    assert abs(run(loss, s, t)[0]) <= 1e-9
    base = rng.standard_normal((b, d + extra))                     # and invariance of a loss > 0
    assert run(loss, base, t)[0] > 0
    moved = base @ _orthogonal(rng, d + extra) * (3.0 if name == "rkd" else rng.uniform(
        0.1, 10.0, (b, 1)))
    assert run(loss, moved, t)[0] == pytest.approx(run(loss, base, t)[0], rel=1e-8)


def test_sp_properties():
    rng = np.random.default_rng(21)
    t = rng.uniform(0, 1, (5, 4, 3, 3))
    s = rng.uniform(0, 1, (5, 6, 2, 2))
    loss = make_loss("sp", None, None)
    base = run(loss, s, t)[0]
    assert base > 0
    # zero at equality, also with other channel counts (duplicated channels: G doubles)
    assert run(loss, t, t)[0] == pytest.approx(0.0, abs=1e-14)
    assert run(loss, np.concatenate([t, t], axis=1), t)[0] == pytest.approx(0.0, abs=1e-14)
    # invariant to one positive scale of the whole batch, and to channel permutations
    assert run(loss, s * 37.0, t * 3.0)[0] == pytest.approx(base, rel=1e-10)   # (eps aside)
    assert run(loss, s[:, rng.permutation(6)], t[:, rng.permutation(4)])[0] == \
        pytest.approx(base, rel=1e-10)
    # the same permutation of the images for both networks
    perm = rng.permutation(5)
    assert run(loss, s[perm], t[perm])[0] == pytest.approx(base, rel=1e-10)
    # NOT invariant to scaling one image's activations (row normalisation of G)
    scaled = s.copy()
    scaled[0] *= 4.0
    assert abs(run(loss, scaled, t)[0] - base) > 1e-3 * base


def test_ab_hinge_values_and_teacher_magnitude():
    """Identity connector, BatchNorm gamma = 2: r(S) = +-2 exactly where S = +-1."""
    rng = np.random.default_rng(8)
    c, n, hw = 3, 4, (2, 2)
    signs = np.array([1.0, -1.0] * (n * hw[0] * hw[1] // 2))
    s = np.stack([rng.permutation(signs) for _ in range(c)]).reshape(c, n, *hw)
    s = s.transpose(1, 0, 2, 3)
    loss = make_loss("ab", (c,) + hw, (c,) + hw)
    for key, p in loss.collect_params().items():
        if key.endswith("conv0_weight"):
            p.set_data(nd(np.eye(c).reshape(c, c, 1, 1)))
        elif key.endswith("gamma"):
            p.set_data(nd(np.full(c, 2.0)))
    teacher = s * rng.uniform(0.1, 5.0, s.shape)             # same signs, any magnitude
    assert value_of(loss, s, teacher) == pytest.approx(0.0, abs=1e-20)
    # every neuron on the wrong side: (margin + |r|)^2 ~ 9 for each of the C*H*W elements
    flipped = value_of(loss, s, -teacher)
    assert flipped == pytest.approx((1 + 2 / math.sqrt(1 + BN_EPS)) ** 2 * c * hw[0] * hw[1],
                                    rel=1e-9)
    # only the teacher's signs matter
    t = rng.standard_normal((n, c) + hw)
    other = rng.standard_normal((n, c) + hw)
    assert value_of(loss, other, t) == pytest.approx(
        value_of(loss, other, t * rng.uniform(0.01, 100.0, t.shape)), rel=1e-12)
    assert value_of(loss, other, t) >= 0


def test_vid_variance_gradient_vanishes_at_the_residual_variance():
    rng = np.random.default_rng(9)
    s_shape, t_shape = (4, 3, 3), (3, 3, 3)
    s, t = rng.uniform(0, 1, (5,) + s_shape), rng.standard_normal((5,) + t_shape)
    loss = make_loss("vid", s_shape, t_shape)
    values = set_random_params("vid", loss, s_shape, t_shape, rng)
    h1 = np.maximum(np.einsum("oc,nchw->nohw", values["w1"], s), 0)
    h2 = np.maximum(np.einsum("oc,nchw->nohw", values["w2"], h1), 0)
    residual2 = ((t - np.einsum("oc,nchw->nohw", values["w3"], h2)) ** 2).mean(axis=(0, 2, 3))
    alpha = [p for k, p in loss.collect_params().items() if k.endswith("alpha")][0]
    alpha.set_data(nd(np.log(np.expm1(residual2 - 1e-5))))      # sigma_c^2 = mean residual^2
    run(loss, s, t)
    assert np.abs(alpha.grad().asnumpy()).max() < 1e-10
    assert np.allclose(loss.variance().asnumpy(), residual2, rtol=1e-10)
    # default initial variance 5
    fresh = make_loss("vid", s_shape, t_shape)
    assert np.allclose(fresh.variance().asnumpy(), 5.0, rtol=1e-6)    # alpha set in float32


# ================================================ parameters, API and errors


def test_learned_parameters_are_children_and_trained():
    rng = np.random.default_rng(31)
    ab = make_loss("ab", (6, 4, 4), (5, 4, 4))
    keys = sorted(k.split("_", 1)[1] for k in ab.collect_params())
    assert keys == ["connector_batchnorm0_beta", "connector_batchnorm0_gamma",
                    "connector_batchnorm0_running_mean", "connector_batchnorm0_running_var",
                    "connector_conv0_weight"]
    vid = make_loss("vid", (6, 4, 4), (5, 4, 4), hidden_channels=7)
    shapes = {k.split("_", 1)[1]: p.shape for k, p in vid.collect_params().items()}
    assert shapes == {"regressor_conv0_weight": (7, 6, 1, 1), "alpha": (5,),
                      "regressor_conv1_weight": (7, 7, 1, 1),
                      "regressor_conv2_weight": (5, 7, 1, 1)}
    for loss in (ab, vid):
        run(loss, rng.standard_normal((4, 6, 4, 4)), rng.standard_normal((4, 5, 4, 4)))
        for key, p in loss.collect_params().items():
            if p.grad_req != "null":
                assert np.abs(p.grad().asnumpy()).sum() > 0, key
    for name in RELATIONAL:
        assert not list(get_loss(name).collect_params().keys())
    # the AB connector is initialised as the authors' code: normal, std sqrt(2 / C_T)
    big = make_loss("ab", (64, 1, 1), (128, 1, 1), "float32")
    w = [p for k, p in big.collect_params().items() if k.endswith("conv0_weight")][0]
    assert np.std(w.data().asnumpy()) == pytest.approx(math.sqrt(2.0 / 128), rel=0.05)
    # student channels inferred on the first call when student_shape is not given
    lazy = make_loss("vid", None, (5, 4, 4))
    assert run(lazy, rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 5, 4, 4)))[1] \
        .shape == (2, 3, 4, 4)


def test_registry_attributes_and_default_weights():
    assert set(NAMES) <= set(list_losses())
    expected = {SPLoss: ("sp", 3000, "feature"), ABLoss: ("ab", 0.003, "feature"),
                RKDLoss: ("rkd", 1, "embedding"), PKTLoss: ("pkt", 468.75, "embedding"),
                CCLoss: ("cc", 100, "embedding"), VIDLoss: ("vid", 1, "feature")}
    for cls, (name, weight, inputs) in expected.items():
        assert cls.loss_name == name and cls.default_weight == weight and cls.inputs == inputs
        assert "default_weight = %g" % weight in " ".join(cls.__doc__.split())
        assert getattr(cls, "batch_relational", False) == (name in RELATIONAL)
        assert getattr(cls, "batch_statistics", False) == (name == "ab")
    assert RKDLoss.defaults == {"distance_weight": 25.0, "angle_weight": 50.0}
    assert CCLoss.defaults == {"gamma": 0.4, "order": 2}
    assert ABLoss.defaults == {"margin": 1.0}
    assert VIDLoss.defaults == {"hidden_channels": None, "init_var": 5.0, "eps": 1e-5}


def test_unknown_and_bad_parameters_raise_nsterror():
    for name in NAMES:
        shapes = {"teacher_shape": (5, 4, 4)} if name in ("ab", "vid") else {}
        with pytest.raises(NSTError) as err:
            get_loss(name, wieght=3, **shapes)
        message = str(err.value)
        assert "wieght" in message and "student_shape" in message
        for key in type(get_loss(name, **shapes)).defaults:
            assert key in message
    bad = [("sp", {"eps": 0}), ("rkd", {"distance_weight": -1}), ("rkd", {"angle_weight": "50"}),
           ("pkt", {"eps": -1e-7}), ("cc", {"gamma": 0}), ("cc", {"order": 1.5}),
           ("cc", {"order": 0}), ("ab", {"margin": -1, "teacher_shape": (5, 4, 4)}),
           ("vid", {"init_var": 1e-6, "teacher_shape": (5, 4, 4)}),
           ("vid", {"hidden_channels": 0, "teacher_shape": (5, 4, 4)}),
           ("ab", {"student_shape": (6, 4, 4)}), ("vid", {"student_shape": (6, 4, 4)}),
           ("rkd", {"student_shape": (3, 4)}), ("pkt", {"teacher_shape": (0,)}),
           ("sp", {"student_shape": (5,)}), ("cc", {"student_shape": "336"})]
    for name, params in bad:
        with pytest.raises(NSTError):
            get_loss(name, **params)
    # embeddings accept (D,) and (C, H, W)
    assert get_loss("rkd", student_shape=(336, 8, 8), teacher_shape=(10,)).teacher_shape == (10,)


def test_bad_inputs_raise_nsterror():
    rkd = get_loss("rkd")
    with pytest.raises(NSTError, match="batch sizes"):
        rkd(mx.nd.ones((3, 4)), mx.nd.ones((2, 4)))
    with pytest.raises(NSTError, match="embeddings"):
        rkd(mx.nd.ones((3, 4, 2)), mx.nd.ones((3, 4)))
    with pytest.raises(NSTError, match="feature maps"):
        get_loss("sp")(mx.nd.ones((3, 4)), mx.nd.ones((3, 4)))
    for name in ("ab", "vid"):
        loss = get_loss(name, student_shape=(3, 4, 4), teacher_shape=(5, 4, 4))
        loss.initialize()
        with pytest.raises(NSTError, match="teacher channels"):
            loss(mx.nd.ones((2, 3, 4, 4)), mx.nd.ones((2, 6, 4, 4)))
        with pytest.raises(NSTError, match="student channels"):
            loss(mx.nd.ones((2, 4, 4, 4)), mx.nd.ones((2, 5, 4, 4)))


# ====================================================== through the trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def teacher_params(tmp_path_factory):
    """An (untrained) tiny teacher saved as a plain .params file: enough for a smoke run."""
    import symbols
    net = symbols.get_model(TEACHER["network"], classes=10, **TEACHER["params"])
    net.initialize(mx.init.Xavier(magnitude=2))
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.params")
    net.save_parameters(path)
    return path


def shipped_on_digits(config, out, teacher, epochs=1):
    """A shipped CIFAR-10 config with its transfer entries as they are, on digits with
    tiny networks, a few batches and ``epochs`` epochs."""
    raw = read_config(str(CONFIGS / "cifar10" / ("%s.yaml" % config)))
    raw.update(out=str(out), epochs=epochs, seed=1)
    raw["data"] = {"dataset": "digits", "batch_size": 32, "train_limit": 64, "test_limit": 32,
                   "test_batch_size": 32, "flip": False}
    raw["student"] = dict(STUDENT)
    raw["teacher"] = dict(TEACHER, checkpoint=teacher)
    raw["optimizer"].update(lr=0.05, lr_steps=[])
    raw.setdefault("train", {})["log_interval"] = 2
    return raw


def fit(raw, cpus=1):
    cfg = validate_config(raw)
    distiller = Distiller(cfg, parse_contexts(cpus=cpus), progress=False, log=lambda *_: None)
    distiller.fit()
    return distiller, json.loads((Path(cfg["out"]) / "log.json").read_text())


@pytest.mark.parametrize("method", NAMES)
def test_each_shipped_config_trains_one_epoch(method, teacher_params, tmp_path):
    raw = shipped_on_digits(method, tmp_path / method, teacher_params)
    if method == "ab":                      # the init stage alone (CE from epoch 50)
        assert raw["train"]["ce_start_epoch"] == raw["transfer"][0]["end_epoch"] == 50
    # two devices for the batch-relational losses: each device's half of the batch
    distiller, log = fit(raw, cpus=2 if method in RELATIONAL else 1)
    (record,) = log
    entry = raw["transfer"][-1]
    weight = entry["weight"]
    assert weight == type(distiller.terms[-1].block).default_weight
    value = record["loss_" + method]
    assert np.isfinite(value) and value != 0
    ce = 0.0 if method == "ab" else record["loss_ce"]
    assert record["loss_total"] == pytest.approx(ce + weight * value, rel=1e-6)
    assert np.isfinite(record["test_top1_err"])
    if method in ("ab", "vid"):             # learned parameters: trained, not exported
        exported = set(mx.nd.load(str(tmp_path / method / "student.params")))
        assert not any("connector" in k or "regressor" in k or "alpha" in k for k in exported)


def _ab_two_stages(config, teacher_params, out):
    """The shipped AB config on digits with the init stage shortened to one epoch."""
    raw = shipped_on_digits(config, out, teacher_params, epochs=2)
    raw["train"]["ce_start_epoch"] = 1
    ab_entry = [e for e in raw["transfer"] if e["loss"] == "ab"][0]
    ab_entry["end_epoch"] = 1
    for entry in raw["transfer"]:
        if entry["loss"] == "kd":
            assert entry["start_epoch"] == 50
            entry["start_epoch"] = 1
    return raw


@pytest.mark.parametrize("config", ["ab", "kd_ab"])
def test_ab_init_stage_then_classification(config, teacher_params, tmp_path):
    """Epoch 1: the AB loss alone (CE logged, not optimised); epoch 2: CE (+ KD) only.
    Once the AB term is inactive its connector gets no gradient; the trainer
    skips it (``ignore_stale_grad``) and the connector stays as it was."""
    raw = _ab_two_stages(config, teacher_params, tmp_path / config)
    distiller, log = fit(raw)
    first, second = log
    assert first["loss_ab"] > 0
    assert first["loss_total"] == pytest.approx(0.003 * first["loss_ab"], rel=1e-6)
    assert second["loss_ab"] == 0
    expected = second["loss_ce"]
    if config == "kd_ab":
        assert first["loss_kd"] == 0 and second["loss_kd"] > 0
        expected += 16 * second["loss_kd"]
    assert second["loss_total"] == pytest.approx(expected, rel=1e-6)
