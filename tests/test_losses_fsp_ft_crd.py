"""FSP, Factor Transfer and CRD (train/losses/{fsp,ft,crd}.py) against NumPy references.

The references are written from the papers' equations (and the official
code's normalisations, see the class docstrings) with plain NumPy in float64:
3x3 (transposed) convolutions by shifted sums, FSP matrices by explicit sums
over positions, the NCE loss term by term.  Values and finite-difference
gradients are checked in float64; the trainer smoke tests run the real
trainer on the genuine CIFAR-10 subset with tiny networks.
"""

import json
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from nst.errors import NSTError
from train.losses import CRDLoss, FSPLoss, FTLoss, get_loss, list_losses
from train.losses.crd import NCE_EPS
from loss_helpers import nd, fd_check
from trainer_helpers import TEACHER, base_config

# ============================================================ NumPy reference


def ref_resize(a, size):
    """(C, H, W) -> (C, h, w): block averages along integer ratios, then
    bilinear interpolation with half-pixel centres for what is still too large."""
    c, H, W = a.shape
    h, w = size
    kh = H // h if H % h == 0 else 1
    kw = W // w if W % w == 0 else 1
    a = a.reshape(c, H // kh, kh, W // kw, kw).mean(axis=(2, 4))
    H, W = a.shape[1:]
    if (H, W) == (h, w):
        return a

    def taps(n_out, n_in):
        out = []
        for o in range(n_out):
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(math.floor(src)), n_in - 1)
            out.append((i0, min(i0 + 1, n_in - 1), src - i0))
        return out

    res = np.zeros((c, h, w))
    for i, (y0, y1, fy) in enumerate(taps(h, H)):
        for j, (x0, x1, fx) in enumerate(taps(w, W)):
            res[:, i, j] = ((1 - fy) * ((1 - fx) * a[:, y0, x0] + fx * a[:, y0, x1])
                            + fy * ((1 - fx) * a[:, y1, x0] + fx * a[:, y1, x1]))
    return res


def ref_fsp_matrix(f1, f2):
    """G = F1^T F2 / (h w) of one sample's (C1, H, W) and (C2, H', W') maps."""
    size = (min(f1.shape[1], f2.shape[1]), min(f1.shape[2], f2.shape[2]))
    a, b = ref_resize(f1, size), ref_resize(f2, size)
    g = np.zeros((a.shape[0], b.shape[0]))
    for s in range(size[0]):
        for t in range(size[1]):
            g += np.outer(a[:, s, t], b[:, s, t])
    return g / (size[0] * size[1])


def ref_conv1x1(f, weight, bias):
    return np.einsum("oc,chw->ohw", weight.reshape(weight.shape[:2]), f) + bias[:, None, None]


def ref_fsp(student, teacher, connectors=None):
    """Mean over samples of the sum over consecutive pairs of ||G_S - G_T||^2 / (C1 C2)
    (RepDistiller: per-pair element mean, pairs summed).

    ``student`` / ``teacher``: lists (one per layer) of (N, C, H, W) arrays;
    ``connectors``: per student layer None or (weight, bias) of a 1x1 conv."""
    k, n = len(student), student[0].shape[0]
    vals = []
    for i in range(n):
        s = [student[j][i] for j in range(k)]
        if connectors:
            s = [f if c is None else ref_conv1x1(f, *c) for f, c in zip(s, connectors)]
        t = [teacher[j][i] for j in range(k)]
        total = 0.0
        for j in range(k - 1):
            d = ref_fsp_matrix(s[j], s[j + 1]) - ref_fsp_matrix(t[j], t[j + 1])
            total += float(np.sum(d * d)) / d.size
        vals.append(total)
    return float(np.mean(vals))


def leaky(x, slope=0.1):
    return np.where(x > 0, x, slope * x)


def ref_conv3x3(x, weight, bias):
    """(C_in, H, W) -> (C_out, H, W): 3x3, stride 1, zero padding 1."""
    _, H, W = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((weight.shape[0], H, W)) + bias[:, None, None]
    for u in range(3):
        for v in range(3):
            out += np.einsum("oc,chw->ohw", weight[:, :, u, v], xp[:, u:u + H, v:v + W])
    return out


def ref_deconv3x3(x, weight, bias):
    """Transposed 3x3 convolution, stride 1, padding 1; weight (C_in, C_out, 3, 3)."""
    _, H, W = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((weight.shape[1], H, W)) + bias[:, None, None]
    for u in range(3):
        for v in range(3):
            out += np.einsum("co,chw->ohw", weight[:, :, u, v],
                             xp[:, 2 - u:2 - u + H, 2 - v:2 - v + W])
    return out


def ref_stack(x, layers, transpose=False, slope=0.1):
    conv = ref_deconv3x3 if transpose else ref_conv3x3
    for weight, bias in layers:
        x = leaky(conv(x, weight, bias), slope)
    return x


def stack_weights(stack):
    """[(weight, bias)] of a (de)conv + LeakyReLU HybridSequential, float64."""
    convs = [b for b in stack if hasattr(b, "weight")]
    return [(c.weight.data().asnumpy().astype(np.float64),
             c.bias.data().asnumpy().astype(np.float64)) for c in convs]


def ref_ft(student, teacher, translator, encoder, p=1, eps=1e-10):
    vals = []
    for fs, ft in zip(student, teacher):
        a, b = ref_stack(fs, translator), ref_stack(ft, encoder)
        size = (min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2]))
        a, b = ref_resize(a, size).ravel(), ref_resize(b, size).ravel()
        ua = a / math.sqrt(float(a @ a) + eps)
        ub = b / math.sqrt(float(b @ b) + eps)
        vals.append(float(np.sum(np.abs(ua - ub) ** p)) / a.size)
    return float(np.mean(vals))


def ref_reconstruction(teacher, encoder, decoder, kind="l2"):
    vals = []
    for ft in teacher:
        rec = ref_stack(ref_stack(ft, encoder), decoder, transpose=True)
        d = rec - ft
        vals.append(float(np.mean(d * d)) if kind == "l2" else float(np.mean(np.abs(d))))
    return float(np.mean(vals))


def ref_embed(x, weight, bias):
    """Global average pool, linear, L2 normalisation (one sample per row)."""
    e = x.mean(axis=(2, 3)) @ weight.T + bias
    return e / np.sqrt(np.sum(e * e, axis=1, keepdims=True) + 1e-12)


def ref_nce(p, k, m):
    """-log(p0 / (p0 + c + eps)) - sum_k log(c / (p_k + c + eps)), per row; c = K / M."""
    c = k / m
    return -(np.log(p[:, 0] / (p[:, 0] + c + NCE_EPS))
             + np.sum(np.log(c / (p[:, 1:] + c + NCE_EPS)), axis=1))


def ref_crd(v_s, v_t, mem_s, mem_t, index, negatives, temperature, num_samples, z=None):
    """The CRD loss (both anchors) and the Z it used."""
    rows = np.concatenate([np.asarray(index).reshape(-1, 1), negatives], axis=1).astype(int)
    out_s = np.exp(np.einsum("nkd,nd->nk", mem_t[rows], v_s) / temperature)
    out_t = np.exp(np.einsum("nkd,nd->nk", mem_s[rows], v_t) / temperature)
    if z is None:
        z = (num_samples * out_s.mean(), num_samples * out_t.mean())
    k = negatives.shape[1]
    per = ref_nce(out_s / z[0], k, num_samples) + ref_nce(out_t / z[1], k, num_samples)
    return float(per.mean()), z


# ================================================================== helpers

def make(name, dtype="float64", hybridize=False, seed=0, **kwargs):
    mx.random.seed(seed)
    loss = get_loss(name, **kwargs)
    loss.initialize(mx.init.Xavier(magnitude=2))
    if dtype != "float32":
        loss.cast(dtype)
    if hybridize:
        loss.hybridize(static_alloc=True, static_shape=True)
    return loss


def batch(rng, n, shapes, kind="normal"):
    if kind == "uniform":
        return [rng.uniform(0, 1, size=(n,) + tuple(s)) for s in shapes]
    return [rng.standard_normal((n,) + tuple(s)) for s in shapes]


def test_registered_with_attributes():
    assert {"fsp", "ft", "crd"} <= set(list_losses())
    for cls, weight, name in ((FSPLoss, 1, "fsp"), (FTLoss, 500, "ft"), (CRDLoss, 0.8, "crd")):
        assert cls.loss_name == name and cls.inputs == "feature"
        assert cls.default_weight == weight
        doc = " ".join(cls.__doc__.split())
        assert "default_weight = %g" % weight in doc
    assert CRDLoss.needs_index and not getattr(FSPLoss, "needs_index", False)
    assert FTLoss.defaults == {"rate": 0.5, "p": 1, "reconstruction": "l2", "slope": 0.1,
                               "eps": 1e-10}
    assert CRDLoss.defaults == {"feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5}


# ====================================================================== FSP

FSP_CASES = [
    # (student shapes, teacher shapes): equal channels, no connectors needed
    pytest.param([(3, 4, 4), (5, 4, 4)], [(3, 4, 4), (5, 4, 4)], id="one-pair-equal"),
    pytest.param([(3, 8, 8), (4, 4, 4), (6, 2, 2)], [(3, 8, 8), (4, 4, 4), (6, 2, 2)],
                 id="pool-first"),
    pytest.param([(2, 2, 2), (3, 4, 4)], [(2, 2, 2), (3, 4, 4)], id="pool-second"),
    pytest.param([(2, 6, 6), (3, 4, 4)], [(2, 3, 3), (3, 3, 3)], id="bilinear-1.5x"),
]


def run_fsp(loss, s, t, dtype="float64", teacher_grad=False):
    s_nd = [nd(x, dtype) for x in s]
    t_nd = [nd(x, dtype) for x in t]
    for x in s_nd:
        x.attach_grad()
    if teacher_grad:
        for x in t_nd:
            x.attach_grad()
    with autograd.record():
        value = loss(s_nd, t_nd)
    value.backward()
    out = (float(value.asnumpy()[0]), [x.grad.asnumpy() for x in s_nd])
    if teacher_grad:
        out += ([x.grad.asnumpy() for x in t_nd],)
    return out


def connector_weights(loss):
    return [None if c is None else (c.weight.data().asnumpy(), c.bias.data().asnumpy())
            for c in loss.connectors]


@pytest.mark.parametrize("s_shapes, t_shapes", FSP_CASES)
@pytest.mark.parametrize("hybridize", [False, True])
def test_fsp_value_and_gradient_vs_reference(s_shapes, t_shapes, hybridize):
    rng = np.random.default_rng(1)
    s, t = batch(rng, 3, s_shapes), batch(rng, 3, t_shapes)
    loss = make("fsp", hybridize=hybridize, student_shape=s_shapes, teacher_shape=t_shapes,
                connector="none")
    assert not list(loss.collect_params())
    value, grads = run_fsp(loss, s, t)
    assert value == pytest.approx(ref_fsp(s, t), rel=1e-10)
    flat = np.concatenate([x.ravel() for x in s])
    sizes = np.cumsum([x.size for x in s])[:-1]

    def ref(v):
        parts = [p.reshape(x.shape) for p, x in zip(np.split(v, sizes), s)]
        return ref_fsp(parts, t)

    fd_check(np.concatenate([g.ravel() for g in grads]), ref, flat, rng)


@pytest.mark.parametrize("mode, expected", [("auto", [True, False, True]),
                                            ("always", [True, True, True])])
def test_fsp_connectors_vs_reference(mode, expected):
    rng = np.random.default_rng(2)
    s_shapes, t_shapes = [(5, 8, 8), (4, 4, 4), (7, 4, 4)], [(3, 8, 8), (4, 4, 4), (6, 2, 2)]
    s, t = batch(rng, 2, s_shapes), batch(rng, 2, t_shapes)
    loss = make("fsp", student_shape=s_shapes, teacher_shape=t_shapes, connector=mode)
    assert [c is not None for c in loss.connectors] == expected
    assert len(list(loss.collect_params())) == 2 * sum(expected)   # weight + bias each
    weights = connector_weights(loss)
    value, grads = run_fsp(loss, s, t)
    assert value == pytest.approx(ref_fsp(s, t, weights), rel=1e-10)
    fd_check(grads[0], lambda x: ref_fsp([x] + s[1:], t, weights), s[0], rng)
    # the connectors learn: their gradient is non-zero
    params = list(loss.collect_params().values())
    with autograd.record():
        v = loss([nd(x) for x in s], [nd(x) for x in t])
    v.backward()
    assert all(np.any(p.grad().asnumpy()) for p in params)


def test_fsp_zero_for_identical_inputs_and_positive_otherwise():
    rng = np.random.default_rng(3)
    shapes = [(3, 8, 8), (4, 4, 4), (5, 4, 4)]
    s = batch(rng, 2, shapes)
    loss = make("fsp", student_shape=shapes, teacher_shape=shapes, connector="none")
    assert run_fsp(loss, s, s)[0] == pytest.approx(0.0, abs=1e-14)
    t = batch(rng, 2, shapes)
    assert run_fsp(loss, s, t)[0] > 0


def test_fsp_teacher_gets_no_gradient_and_hybrid_equals_imperative():
    rng = np.random.default_rng(4)
    s_shapes, t_shapes = [(6, 8, 8), (8, 4, 4)], [(4, 8, 8), (8, 4, 4)]
    s, t = batch(rng, 3, s_shapes), batch(rng, 3, t_shapes)
    results = []
    for hybridize in (False, True):
        loss = make("fsp", "float32", hybridize, student_shape=s_shapes, teacher_shape=t_shapes)
        for _ in range(2):    # the second call runs the cached graph
            value, grads, t_grads = run_fsp(loss, s, t, "float32", teacher_grad=True)
        assert not any(np.any(g) for g in t_grads)
        assert all(np.any(g) for g in grads)
        results.append((value, grads))
    (v0, g0), (v1, g1) = results
    assert v1 == pytest.approx(v0, rel=1e-5)
    for a, b in zip(g0, g1):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(a).max())


def test_fsp_batch_mean_and_symbolic_call():
    rng = np.random.default_rng(5)
    s_shapes, t_shapes = [(3, 4, 4), (4, 2, 2)], [(2, 4, 4), (5, 2, 2)]
    s, t = batch(rng, 3, s_shapes), batch(rng, 3, t_shapes)
    loss = make("fsp", student_shape=s_shapes, teacher_shape=t_shapes)
    whole = run_fsp(loss, s, t)[0]
    parts = [run_fsp(loss, [x[i:i + 1] for x in s], [x[i:i + 1] for x in t])[0]
             for i in range(3)]
    assert whole == pytest.approx(np.mean(parts), rel=1e-10)
    sym = loss([mx.sym.var("s0"), mx.sym.var("s1")], [mx.sym.var("t0"), mx.sym.var("t1")])
    _, out_shapes, _ = sym.infer_shape(s0=(2, 3, 4, 4), s1=(2, 4, 2, 2), t0=(2, 2, 4, 4),
                                       t1=(2, 5, 2, 2))
    assert out_shapes == [(1,)]


def test_fsp_rejects_bad_inputs():
    with pytest.raises(NSTError, match="list of at least two"):
        get_loss("fsp", student_shape=(3, 4, 4), teacher_shape=(3, 4, 4))
    with pytest.raises(NSTError, match="same number"):
        get_loss("fsp", student_shape=[(3, 4, 4), (3, 2, 2)],
                 teacher_shape=[(3, 4, 4), (3, 2, 2), (3, 1, 1)])
    with pytest.raises(NSTError, match="student_shape and teacher_shape"):
        get_loss("fsp")
    with pytest.raises(NSTError, match="connector"):
        get_loss("fsp", connector="sometimes")
    with pytest.raises(NSTError, match="equal channel counts"):
        get_loss("fsp", student_shape=[(3, 4, 4), (4, 2, 2)],
                 teacher_shape=[(3, 4, 4), (5, 2, 2)], connector="none")
    loss = get_loss("fsp", connector="none")    # shapes from the call
    loss.initialize()
    a = mx.nd.ones((2, 3, 4, 4))
    with pytest.raises(NSTError, match="list"):
        loss(a, a)
    with pytest.raises(NSTError, match="batch sizes"):
        loss([a, a], [a, mx.nd.ones((3, 3, 4, 4))])
    with pytest.raises(NSTError, match="equal channel counts"):
        loss([a, a], [a, mx.nd.ones((2, 5, 4, 4))])
    assert np.isfinite(loss([a, a], [a, a]).asnumpy()).all()


# ======================================================================= FT

def ft_modules(loss):
    return stack_weights(loss.translator), stack_weights(loss.encoder), \
        stack_weights(loss.decoder)


@pytest.mark.parametrize("s_shape, t_shape", [((4, 4, 4), (6, 4, 4)),
                                              ((3, 8, 8), (5, 4, 4)),
                                              ((3, 3, 3), (4, 6, 6))])
@pytest.mark.parametrize("p", [1, 2])
def test_ft_value_and_gradient_vs_reference(s_shape, t_shape, p):
    rng = np.random.default_rng(6)
    s, t = rng.standard_normal((2,) + s_shape), rng.uniform(0, 1, (2,) + t_shape)
    loss = make("ft", student_shape=s_shape, teacher_shape=t_shape, p=p)
    assert loss.factors == int(round(0.5 * t_shape[0]))
    translator, encoder, _ = ft_modules(loss)
    s_nd, t_nd = nd(s), nd(t)
    s_nd.attach_grad()
    with autograd.record():
        value = loss(s_nd, t_nd)
    value.backward()
    # (MXNet's float64 convolutions round slightly differently: 1e-8, not 1e-12)
    assert float(value.asnumpy()[0]) == pytest.approx(ref_ft(s, t, translator, encoder, p),
                                                      rel=1e-7)
    fd_check(s_nd.grad.asnumpy(), lambda x: ref_ft(x, t, translator, encoder, p), s, rng)


def test_ft_zero_when_the_factors_agree_up_to_scale():
    """Equal modules and inputs (or inputs differing by a positive scale in a
    linear regime) give equal normalised factors, hence zero loss."""
    rng = np.random.default_rng(7)
    loss = make("ft", student_shape=(4, 4, 4), teacher_shape=(4, 4, 4))
    for src, dst in zip(loss.encoder, loss.translator):
        if hasattr(src, "weight"):
            dst.weight.set_data(src.weight.data())
            dst.bias.set_data(src.bias.data())
    x = rng.standard_normal((2, 4, 4, 4))
    assert float(loss(nd(x), nd(x)).asnumpy()[0]) == pytest.approx(0.0, abs=1e-12)


def test_ft_pretraining_stage_reconstruction_and_freezing():
    rng = np.random.default_rng(8)
    s_shape, t_shape = (3, 4, 4), (6, 4, 4)
    t = rng.uniform(0, 1, (4,) + t_shape)
    for kind in ("l2", "l1"):
        loss = make("ft", student_shape=s_shape, teacher_shape=t_shape, reconstruction=kind)
        _, encoder, decoder = ft_modules(loss)
        value = float(loss.pretrain_loss(nd(t)).asnumpy()[0])
        assert value == pytest.approx(ref_reconstruction(t, encoder, decoder, kind), rel=1e-9)
    # the stage trains exactly the paraphraser, and the loss goes down
    loss = make("ft", "float32", True, student_shape=s_shape, teacher_shape=t_shape)
    params = loss.pretrain_params()
    paraphraser = set(loss.encoder.collect_params()) | set(loss.decoder.collect_params())
    assert set(params) == paraphraser
    assert all(p.grad_req == "write" for p in params.values())
    trainer = gluon.Trainer(params, "sgd", {"learning_rate": 0.5, "momentum": 0.9})
    first = None
    for _ in range(30):
        with autograd.record():
            rec = loss.pretrain_loss(nd(t, "float32"))
        rec.backward()
        trainer.step(1)
        first = first if first is not None else float(rec.asscalar())
    assert float(rec.asscalar()) < 0.8 * first
    # the student stage freezes it: weight decay and momentum leave it untouched
    frozen = {k: v.data().asnumpy().copy() for k, v in loss.encoder.collect_params().items()}
    before_t = {k: v.data().asnumpy().copy() for k, v in loss.translator.collect_params().items()}
    student = gluon.Trainer(loss.collect_params(), "nag",
                            {"learning_rate": 0.1, "momentum": 0.9, "wd": 0.1})
    s = rng.standard_normal((4,) + s_shape)
    for _ in range(3):
        with autograd.record():
            v = loss(nd(s, "float32"), nd(t, "float32"))
        v.backward()
        student.step(4)
    assert all(p.grad_req == "null" for p in loss.encoder.collect_params().values())
    for k, v in loss.encoder.collect_params().items():
        np.testing.assert_array_equal(v.data().asnumpy(), frozen[k])
    assert any(np.any(v.data().asnumpy() != before_t[k])
               for k, v in loss.translator.collect_params().items())


def test_ft_teacher_gets_no_gradient_and_hybrid_equals_imperative():
    rng = np.random.default_rng(9)
    s, t = rng.standard_normal((3, 6, 8, 8)), rng.standard_normal((3, 5, 4, 4))
    results = []
    for hybridize in (False, True):
        loss = make("ft", "float32", hybridize, student_shape=(6, 8, 8), teacher_shape=(5, 4, 4))
        for _ in range(2):
            s_nd, t_nd = nd(s, "float32"), nd(t, "float32")
            s_nd.attach_grad()
            t_nd.attach_grad()
            with autograd.record():
                value = loss(s_nd, t_nd)
            value.backward()
        assert not np.any(t_nd.grad.asnumpy()) and np.any(s_nd.grad.asnumpy())
        results.append((float(value.asscalar()), s_nd.grad.asnumpy()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert np.allclose(results[0][1], results[1][1], rtol=1e-4,
                       atol=1e-6 * np.abs(results[0][1]).max())


def test_ft_rejects_bad_parameters_and_inputs():
    for params in ({"rate": 0}, {"rate": 5}, {"p": 3}, {"reconstruction": "ssim"},
                   {"slope": -1}, {"eps": 0}, {"beta": 500}):
        with pytest.raises(NSTError):
            get_loss("ft", student_shape=(3, 4, 4), teacher_shape=(4, 4, 4), **params)
    with pytest.raises(NSTError, match="student_shape and teacher_shape"):
        get_loss("ft", teacher_shape=(4, 4, 4))
    loss = make("ft", "float32", student_shape=(3, 4, 4), teacher_shape=(4, 4, 4))
    with pytest.raises(NSTError, match="channels"):
        loss(mx.nd.ones((2, 3, 4, 4)), mx.nd.ones((2, 5, 4, 4)))
    with pytest.raises(NSTError, match="pre-training"):
        loss.pretrain_loss(mx.nd.ones((2, 5, 4, 4)))


# ====================================================================== CRD

def crd_state(loss):
    return {name: getattr(loss, name).data().asnumpy().astype(np.float64).copy()
            for name in ("memory_s", "memory_t", "z")}


def embed_weights(embed):
    return (embed.linear.weight.data().asnumpy().astype(np.float64),
            embed.linear.bias.data().asnumpy().astype(np.float64))


def make_crd(dtype="float64", hybridize=False, num_samples=40, seed=0, **params):
    params.setdefault("feat_dim", 8)
    params.setdefault("nce_k", 6)
    return make("crd", dtype, hybridize, seed, student_shape=(5, 4, 4), teacher_shape=(3, 2, 2),
                num_samples=num_samples, **params)


@pytest.mark.parametrize("hybridize", [False, True])
def test_crd_nce_value_gradient_and_memory_update_vs_reference(hybridize):
    rng = np.random.default_rng(10)
    n, m = 4, 40
    loss = make_crd(hybridize=hybridize, num_samples=m)
    s, t = rng.standard_normal((n, 5, 4, 4)), rng.standard_normal((n, 3, 2, 2))
    index = np.array([3, 17, 0, 39])
    negatives = rng.integers(0, m, (n, 6))
    ws, wt = embed_weights(loss.embed_s), embed_weights(loss.embed_t)
    for step in range(3):
        before = crd_state(loss)
        v_s, v_t = ref_embed(s, *ws), ref_embed(t, *wt)
        z = None if step == 0 else tuple(before["z"])
        expected, z_used = ref_crd(v_s, v_t, before["memory_s"], before["memory_t"], index,
                                   negatives, 0.07, m, z)
        s_nd = nd(s)
        s_nd.attach_grad()
        with autograd.record():
            value = loss(s_nd, nd(t), nd(index), nd(negatives))
        value.backward()
        assert float(value.asnumpy()[0]) == pytest.approx(expected, rel=1e-9)
        after = crd_state(loss)
        # Z: estimated from the first batch (M * mean score), then constant
        if step == 0:
            assert np.all(before["z"] < 0)
        np.testing.assert_allclose(after["z"], z_used, rtol=1e-12)
        # memory: rows of the batch <- normalise(m * old + (1 - m) * v); others unchanged
        for bank, v in (("memory_s", v_s), ("memory_t", v_t)):
            new = 0.5 * before[bank][index] + 0.5 * v
            new /= np.sqrt(np.sum(new * new, axis=1, keepdims=True) + 1e-12)
            np.testing.assert_allclose(after[bank][index], new, rtol=1e-10, atol=1e-14)
            others = np.setdiff1d(np.arange(m), index)
            np.testing.assert_array_equal(after[bank][others], before[bank][others])
        if step == 1:   # gradient against the memory the call saw (Z fixed)
            fd_check(s_nd.grad.asnumpy(),
                     lambda x: ref_crd(ref_embed(x, *ws), v_t, before["memory_s"],
                                       before["memory_t"], index, negatives, 0.07, m,
                                       tuple(before["z"]))[0], s, rng)
        s = s + 0.1 * rng.standard_normal(s.shape)
        # the optimiser would change the heads; keep them fixed here


def test_crd_shapes_defaults_and_negative_sampling():
    loss = get_loss("crd", student_shape=(16, 4, 4), teacher_shape=(8, 4, 4), num_samples=50000)
    loss.initialize()
    assert loss.memory_s.shape == loss.memory_t.shape == (50000, 128)
    assert loss.nce_k == 16384 and loss.config["nce_t"] == 0.07 and loss.config["nce_m"] == 0.5
    assert all(p.grad_req == "null" for p in (loss.memory_s, loss.memory_t, loss.z))
    bank = loss.memory_s.data().asnumpy()
    assert np.abs(bank).max() <= 1 / math.sqrt(128 / 3) + 1e-7
    # capped at num_samples - 1 for a small training set
    small = get_loss("crd", student_shape=(16, 4, 4), teacher_shape=(8, 4, 4), num_samples=100)
    assert small.nce_k == 99
    # default sampler: uniform indices in range, reproducible under mx.random.seed
    mx.random.seed(5)
    a = loss.sample_negatives(4, mx.cpu()).asnumpy()
    mx.random.seed(5)
    b = loss.sample_negatives(4, mx.cpu()).asnumpy()
    assert a.shape == (4, 16384) and (a == b).all()
    assert a.min() >= 0 and a.max() < 50000 and len(np.unique(a)) > 10000
    # an injected sampler is used
    loss.sampler = lambda n, k, m, ctx: np.full((n, k), 7)
    assert (loss.sample_negatives(2, mx.cpu()).asnumpy() == 7).all()


def test_crd_gradients_reach_student_and_both_heads_not_teacher():
    rng = np.random.default_rng(11)
    loss = make_crd("float32", hybridize=True)
    s_nd = nd(rng.standard_normal((4, 5, 4, 4)), "float32")
    t_nd = nd(rng.standard_normal((4, 3, 2, 2)), "float32")
    s_nd.attach_grad()
    t_nd.attach_grad()
    with autograd.record():
        value = loss(s_nd, t_nd, nd([1, 2, 3, 4], "float32"))
    value.backward()
    assert np.any(s_nd.grad.asnumpy()) and not np.any(t_nd.grad.asnumpy())
    for embed in (loss.embed_s, loss.embed_t):
        assert np.any(embed.linear.weight.grad().asnumpy())
    trainable = [p for p in loss.collect_params().values() if p.grad_req != "null"]
    assert len(trainable) == 4   # the two heads' weights and biases


def test_crd_copies_stay_identical_on_two_devices():
    rng = np.random.default_rng(12)
    mx.random.seed(0)
    loss = get_loss("crd", student_shape=(5, 4, 4), teacher_shape=(3, 2, 2), num_samples=30,
                    feat_dim=8, nce_k=5)
    ctxs = [mx.cpu(0), mx.cpu(1)]
    loss.initialize(mx.init.Xavier(), ctx=ctxs)
    loss.hybridize(static_alloc=True, static_shape=True)
    s, t = rng.standard_normal((4, 5, 4, 4)), rng.standard_normal((4, 3, 2, 2))
    index = np.array([2, 9, 21, 29])
    for step in range(2):
        with autograd.record():
            outs = [loss(nd(s[i:i + 2], "float32").as_in_context(c),
                         nd(t[i:i + 2], "float32").as_in_context(c),
                         nd(index[i:i + 2], "float32").as_in_context(c))
                    for i, c in zip((0, 2), ctxs)]
        autograd.backward(outs)
        for name in ("memory_s", "memory_t", "z"):
            a, b = [x.asnumpy() for x in getattr(loss, name).list_data()]
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert (loss.z.data().asnumpy() > 0).all()


def test_crd_rejects_bad_parameters_and_calls():
    shapes = {"student_shape": (5, 4, 4), "teacher_shape": (3, 2, 2)}
    with pytest.raises(NSTError, match="num_samples"):
        get_loss("crd", **shapes)
    for params in ({"nce_t": 0}, {"nce_m": 1}, {"nce_k": 0}, {"feat_dim": 2.5},
                   {"num_samples": 1}, {"temperature": 0.1}):
        with pytest.raises(NSTError):
            get_loss("crd", **dict(shapes, **dict({"num_samples": 10}, **params)))
    loss = make_crd("float32")
    s, t = mx.nd.ones((2, 5, 4, 4)), mx.nd.ones((2, 3, 2, 2))
    with pytest.raises(NSTError, match="indices"):
        loss(s, t)
    with pytest.raises(NSTError, match="sample indices for a batch"):
        loss(s, t, mx.nd.array([1, 2, 3]))
    with pytest.raises(NSTError, match="negatives must have shape"):
        loss(s, t, mx.nd.array([1, 2]), mx.nd.zeros((2, 3)))
    with pytest.raises(NSTError, match="channels"):
        loss(s, mx.nd.ones((2, 4, 2, 2)), mx.nd.array([1, 2]))


# ======================================================= through the trainer


@pytest.fixture(scope="module")
def teacher_checkpoint(cifar_root, tmp_path_factory):
    from train.config import validate_config
    from train.devices import parse_contexts
    from train.trainer import Distiller
    out = tmp_path_factory.mktemp("teacher")
    cfg = base_config(cifar_root, out, epochs=1, student=dict(TEACHER), name="teacher")
    Distiller(validate_config(cfg), parse_contexts(), progress=False, log=lambda *_: None).fit()
    return str(out / "student.params")


def distiller(root, out, teacher, transfer, cpus=1, log=None, **extra):
    from train.config import validate_config
    from train.devices import parse_contexts
    from train.trainer import Distiller
    cfg = base_config(root, out, **dict({"epochs": 1}, **extra))
    cfg["teacher"] = dict(TEACHER, checkpoint=teacher)
    cfg["transfer"] = transfer
    return Distiller(validate_config(cfg), parse_contexts(cpus=cpus), progress=False,
                     log=log or (lambda *_: None))


def last_log(out):
    return json.loads((out / "log.json").read_text())[-1]


def test_fsp_trains_through_the_trainer_with_layer_lists(cifar_root, teacher_checkpoint,
                                                         tmp_path):
    out = tmp_path / "fsp"
    d = distiller(cifar_root, out, teacher_checkpoint, [
        {"loss": "fsp", "student": ["conv1", "in3b", "in4d", "in5b"],
         "teacher": ["conv0", "stage1", "stage2", "stage3"]}])
    block = d.terms[0].block
    # connectors where the channel counts differ (in4d happens to have 32 = stage2's)
    assert [s[0] for s in block.teacher_shape] == [4, 16, 32, 64]
    assert [c is not None for c in block.connectors] == \
        [s[0] != t[0] for s, t in zip(block.student_shape, block.teacher_shape)]
    result = d.fit()
    record = last_log(out)
    assert np.isfinite(record["loss_fsp"]) and record["loss_fsp"] > 0
    assert result["transfer"] == [{"loss": "fsp", "weight": 1.0}]


def test_ft_pretraining_then_frozen_paraphraser_through_the_trainer(cifar_root,
                                                                    teacher_checkpoint,
                                                                    tmp_path, monkeypatch):
    out = tmp_path / "ft"
    messages = []
    d = distiller(cifar_root, out, teacher_checkpoint, [
        {"loss": "ft", "student": "in5b", "teacher": "relu1", "pretrain_epochs": 2}],
        log=messages.append)
    block = d.terms[0].block
    initial = {k: v.data().asnumpy().copy() for k, v in block.encoder.collect_params().items()}
    snapshot = {}
    original = d._train_epoch

    def train_epoch(*args):
        if not snapshot:
            snapshot.update({k: v.data().asnumpy().copy()
                             for k, v in block.encoder.collect_params().items()})
        return original(*args)

    monkeypatch.setattr(d, "_train_epoch", train_epoch)
    d.fit()
    stage = [m for m in messages if m.startswith("pre-training ft")]
    assert len(stage) == 2 and stage[-1].startswith("pre-training ft: epoch 2/2")
    # pre-training changed the paraphraser; the student's training did not
    assert any(np.any(snapshot[k] != initial[k]) for k in initial)
    for k, v in block.encoder.collect_params().items():
        np.testing.assert_array_equal(v.data().asnumpy(), snapshot[k])
    assert np.isfinite(last_log(out)["loss_ft"])


def test_crd_one_epoch_and_resume_restores_the_memory_bank(cifar_root, teacher_checkpoint,
                                                           tmp_path):
    from train import checkpoint as ckpt
    transfer = [{"loss": "crd", "student": "in5b", "teacher": "relu1",
                 "params": {"nce_k": 64}}]
    full = distiller(cifar_root, tmp_path / "full", teacher_checkpoint, transfer, epochs=2)
    full.fit()
    block = full.terms[0].block
    assert block.num_samples == 192 and block.nce_k == 64
    assert (block.z.data().asnumpy() > 0).all()
    record = last_log(tmp_path / "full")
    assert np.isfinite(record["loss_crd"]) and record["loss_crd"] > 0
    # the checkpoint holds the memory banks and Z
    manifest = ckpt.read_manifest(str(tmp_path / "full"))
    saved = mx.nd.load(str(tmp_path / "full" / manifest["files"]["transfer0"]))
    np.testing.assert_array_equal(saved["memory_s"].asnumpy(), block.memory_s.data().asnumpy())
    np.testing.assert_array_equal(saved["z"].asnumpy(), block.z.data().asnumpy())
    # one epoch, then --resume for the second: the same run, bank included
    distiller(cifar_root, tmp_path / "part", teacher_checkpoint, transfer, epochs=1).fit()
    resumed = distiller(cifar_root, tmp_path / "part", teacher_checkpoint, transfer, epochs=2)
    resumed.fit(resume=True)
    for name in ("memory_s", "memory_t", "z"):
        np.testing.assert_allclose(getattr(resumed.terms[0].block, name).data().asnumpy(),
                                   getattr(block, name).data().asnumpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=name)
    a = mx.nd.load(str(tmp_path / "full" / "student.params"))
    b = mx.nd.load(str(tmp_path / "part" / "student.params"))
    for key in a:
        np.testing.assert_allclose(a[key].asnumpy(), b[key].asnumpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=key)


def test_crd_on_two_devices_through_the_trainer(cifar_root, teacher_checkpoint, tmp_path):
    d = distiller(cifar_root, tmp_path / "crd2", teacher_checkpoint, [
        {"loss": "crd", "student": "in5b", "teacher": "relu1", "params": {"nce_k": 32}},
        {"loss": "kd", "student": "logits", "teacher": "logits"}], cpus=2)
    d.fit()
    block = d.terms[0].block
    for name in ("memory_s", "memory_t", "z"):
        a, b = [x.asnumpy() for x in getattr(block, name).list_data()]
        np.testing.assert_array_equal(a, b, err_msg=name)
    record = last_log(tmp_path / "crd2")
    assert np.isfinite(record["loss_crd"]) and np.isfinite(record["loss_kd"])
