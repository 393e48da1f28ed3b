"""Transfer losses (train/losses) against an independent NumPy reference.

The reference below is written straight from the paper's equations with plain
loops over samples and channel pairs (Eq. 2/4 for NST, Eq. 5 and Eq. 9 only as
*checks* of Eq. 4), in float64.  The MXNet losses run in float64 for the tight
value (1e-5 relative) and finite-difference gradient checks (every operator
they use supports float64), and in float32 -- the training dtype -- with
tolerances that allow for float32 rounding.
"""

import itertools
import math
import zlib

import mxnet as mx
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from nst.errors import NSTError
from train.losses import (ATLoss, FitNetLoss, KDLoss, NSTGaussian, NSTLinear, NSTPoly,
                          get_loss, list_losses, poly_form, poly_form_costs)
from loss_helpers import nd, make_loss, run, fd_check

EPS = 1e-10
NST_NAMES = ("nst_linear", "nst_poly", "nst_gaussian")
SPATIAL_NAMES = ("fitnet", "at") + NST_NAMES

# ============================================================ NumPy reference


def ref_resize(a, size):
    """(C, H, W) -> (C, h, w): per axis, block averages when the ratio is an
    integer; then bilinear with half-pixel centres (align_corners=False) for
    the axes still too large."""
    c, H, W = a.shape
    h, w = size
    kh = H // h if H % h == 0 else 1
    kw = W // w if W % w == 0 else 1
    if (kh, kw) != (1, 1):
        H, W = H // kh, W // kw
        pooled = np.zeros((c, H, W))
        for i in range(H):
            for j in range(W):
                pooled[:, i, j] = a[:, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].mean(axis=(1, 2))
        a = pooled
    if (H, W) == (h, w):
        return a

    def taps(n_out, n_in):
        res = []
        for o in range(n_out):
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(math.floor(src)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            res.append((i0, i1, src - i0))
        return res

    out = np.zeros((c, h, w))
    for i, (y0, y1, fy) in enumerate(taps(h, H)):
        for j, (x0, x1, fx) in enumerate(taps(w, W)):
            out[:, i, j] = ((1 - fy) * ((1 - fx) * a[:, y0, x0] + fx * a[:, y0, x1])
                            + fy * ((1 - fx) * a[:, y1, x0] + fx * a[:, y1, x1]))
    return out


def ref_pair(fs, ft):
    """Bring one sample's student/teacher maps to the common (smaller) size."""
    size = (min(fs.shape[1], ft.shape[1]), min(fs.shape[2], ft.shape[2]))
    return ref_resize(fs, size), ref_resize(ft, size)


def ref_samples(f):
    """Rows f^k / sqrt(||f^k||^2 + eps) of one (C, H, W) map (Eq. 4)."""
    rows = f.reshape(f.shape[0], -1)
    return [r / math.sqrt(float(np.dot(r, r)) + EPS) for r in rows]


def ref_mmd2(xs, ys, k):
    """Eq. 2: squared MMD between sample lists xs (teacher) and ys (student)."""
    n, m = len(xs), len(ys)
    tt = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n)) / n ** 2
    ss = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m)) / m ** 2
    ts = sum(k(xs[i], ys[j]) for i in range(n) for j in range(m)) / (n * m)
    return tt + ss - 2 * ts


def k_linear(x, y):
    return float(np.dot(x, y))


def k_poly(degree=2, c=0.0):
    return lambda x, y: (float(np.dot(x, y)) + c) ** degree


def ref_sigma2(fs, ft):
    """Gaussian bandwidth: mean squared distance over all pairs of the pooled
    samples, floored at 1e-3 (the documented floor for degenerate images)."""
    fs, ft = ref_pair(fs, ft)
    pool = ref_samples(ft) + ref_samples(fs)
    d2 = [float(np.sum((a - b) ** 2)) for a in pool for b in pool]
    return max(sum(d2) / len(d2), 1e-3)


def ref_nst(student, teacher, kernel, sigma2s=None, **kw):
    """Eq. 4 averaged over the batch; kernel in {linear, poly, gaussian}.

    ``sigma2s``: fixed per-sample Gaussian bandwidths (the loss treats sigma^2
    as a constant, so finite differences must hold it fixed too)."""
    vals = []
    for n, (fs, ft) in enumerate(zip(student, teacher)):
        sigma2 = ref_sigma2(fs, ft) if sigma2s is None else sigma2s[n]
        fs, ft = ref_pair(fs, ft)
        xs, ys = ref_samples(ft), ref_samples(fs)
        if kernel == "linear":
            k = k_linear
        elif kernel == "poly":
            k = k_poly(kw.get("degree", 2), kw.get("c", 0.0))
        else:

            def k(x, y, sigma2=sigma2):
                return math.exp(-float(np.sum((x - y) ** 2)) / (2 * sigma2))
        vals.append(ref_mmd2(xs, ys, k))
    return float(np.mean(vals))


def ref_eq5(student, teacher):
    """Eq. 5: squared distance of the mean normalised maps."""
    vals = []
    for fs, ft in zip(student, teacher):
        fs, ft = ref_pair(fs, ft)
        d = np.mean(ref_samples(ft), axis=0) - np.mean(ref_samples(fs), axis=0)
        vals.append(float(np.dot(d, d)))
    return float(np.mean(vals))


def ref_eq9(student, teacher):
    """Eq. 9: ||G_S - G_T||_F^2 with G = F^T F / C (HW x HW) of normalised maps."""
    vals = []
    for fs, ft in zip(student, teacher):
        fs, ft = ref_pair(fs, ft)
        xs, ys = np.array(ref_samples(ft)), np.array(ref_samples(fs))
        g = ys.T @ ys / len(ys) - xs.T @ xs / len(xs)
        vals.append(float(np.sum(g * g)))
    return float(np.mean(vals))


def ref_kd(zs, zt, temperature=4.0):
    vals = []
    for a, b in zip(zs, zt):
        def log_softmax(z):
            z = z / temperature
            m = z.max()
            return z - m - math.log(np.sum(np.exp(z - m)))
        lq, lp = log_softmax(a), log_softmax(b)
        vals.append(float(np.sum(np.exp(lp) * (lp - lq))))
    return float(np.mean(vals))


def ref_at(student, teacher, p=2.0):
    vals = []
    for fs, ft in zip(student, teacher):
        fs, ft = ref_pair(fs, ft)
        qs = []
        for f in (fs, ft):
            a = np.mean(np.abs(f) ** p, axis=0).ravel()
            qs.append(a / math.sqrt(float(np.dot(a, a)) + EPS))
        vals.append(float(np.mean((qs[0] - qs[1]) ** 2)))
    return float(np.mean(vals))


def ref_fitnet(student, teacher, weight, bias):
    """1x1 conv (weight (C_T, C_S), bias (C_T,)) + mean squared error."""
    total, count = 0.0, 0
    for fs, ft in zip(student, teacher):
        fs, ft = ref_pair(fs, ft)
        for o in range(ft.shape[0]):
            r = bias[o] + sum(weight[o, c] * fs[c] for c in range(fs.shape[0]))
            total += float(np.sum((r - ft[o]) ** 2))
            count += ft[o].size
    return total / count


# ================================================================== helpers

def features(rng, n, shape, kind="uniform"):
    if kind == "uniform":          # post-ReLU-like, non-negative
        return rng.uniform(0.0, 1.0, size=(n,) + tuple(shape))
    return rng.standard_normal((n,) + tuple(shape))


# (student per-sample shape, teacher per-sample shape)
SHAPE_CASES = [
    pytest.param((12, 2, 2), (9, 2, 2), id="C2>HW2"),          # spatial Gram form is cheaper
    pytest.param((3, 5, 5), (4, 5, 5), id="C2<HW2"),           # channel Gram form is cheaper
    pytest.param((6, 8, 8), (5, 4, 4), id="student-larger-pool"),
    pytest.param((4, 3, 3), (6, 6, 6), id="teacher-larger-pool"),
    pytest.param((4, 6, 6), (3, 4, 4), id="bilinear-1.5x"),
    pytest.param((3, 4, 6), (5, 2, 3), id="non-square"),
    pytest.param((2, 1, 2), (3, 2, 3), id="pool-H-bilinear-W"),  # 2 -> 1 pooled, 3 -> 2 bilinear
    pytest.param((12, 1, 2), (40, 1, 2), id="long-teacher"),   # teacher Gram via syrk
]
NST_KERNELS = {"nst_linear": "linear", "nst_poly": "poly", "nst_gaussian": "gaussian"}

# ======================================================== reference self-checks


def test_reference_identities_eq5_eq9():
    """Eq. 4 (linear) == Eq. 5 and Eq. 4 (poly, d=2, c=0) == Eq. 9, in NumPy."""
    rng = np.random.default_rng(0)
    for s_shape, t_shape in [((5, 3, 3), (7, 3, 3)), ((9, 2, 2), (4, 2, 2))]:
        s, t = features(rng, 2, s_shape, "normal"), features(rng, 2, t_shape, "normal")
        assert ref_nst(s, t, "linear") == pytest.approx(ref_eq5(s, t), rel=1e-10)
        assert ref_nst(s, t, "poly") == pytest.approx(ref_eq9(s, t), rel=1e-10)


# ============================================================== NST vs reference


@pytest.mark.parametrize("s_shape,t_shape", SHAPE_CASES)
@pytest.mark.parametrize("name", NST_NAMES)
def test_nst_value_and_gradient_vs_reference(name, s_shape, t_shape):
    rng = np.random.default_rng(zlib.crc32(repr((name, s_shape, t_shape)).encode()))
    s, t = features(rng, 2, s_shape), features(rng, 2, t_shape)
    kernel = NST_KERNELS[name]
    sigma2s = [ref_sigma2(fs, ft) for fs, ft in zip(s, t)]   # sigma^2 has no gradient

    def ref(x):
        return ref_nst(x, t, kernel, sigma2s)

    expected = ref(s)
    value, grad = run(make_loss(name, s_shape, t_shape), s, t)
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-12)
    fd_check(grad, ref, s, rng)
    # float32, the training dtype: float32 rounding of O(1) kernel terms
    value32, grad32 = run(make_loss(name, s_shape, t_shape, "float32"), s, t, "float32")
    assert value32 == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert np.allclose(grad32, grad, rtol=1e-2, atol=1e-3 * np.abs(grad).max())


@pytest.mark.parametrize("form", ["channel", "spatial"])
def test_nst_poly_forms_vs_reference_normal_inputs(form):
    """Signed inputs (not only post-ReLU) through both poly code paths."""
    rng = np.random.default_rng(3)
    s, t = features(rng, 3, (7, 3, 3), "normal"), features(rng, 3, (5, 3, 3), "normal")
    value, grad = run(make_loss("nst_poly", (7, 3, 3), (5, 3, 3), form=form), s, t)
    assert value == pytest.approx(ref_nst(s, t, "poly"), rel=1e-5)
    fd_check(grad, lambda x: ref_nst(x, t, "poly"), s, rng)


@pytest.mark.parametrize("degree,c", [(3, 0.0), (2, 0.5), (1, 0.0), (3, 1.0)])
def test_nst_poly_general_degree_and_c(degree, c):
    rng = np.random.default_rng(degree * 10 + int(c * 10))
    s, t = features(rng, 2, (4, 3, 3), "normal"), features(rng, 2, (6, 3, 3), "normal")
    loss = make_loss("nst_poly", (4, 3, 3), (6, 3, 3), degree=degree, c=c)
    value, grad = run(loss, s, t)

    def ref(x):
        return ref_nst(x, t, "poly", degree=degree, c=c)

    assert value == pytest.approx(ref(s), rel=1e-5)
    fd_check(grad, ref, s, rng)


def test_nst_poly_both_forms_agree_at_paper_shape():
    """The HW x HW and C x C forms give the same value and gradient.

    float64: to 1e-9.  float32: the spatial form keeps ~1e-8 of the float64
    value, while the C x C form (the original code's) loses digits to
    cancellation -- MMD^2 is a difference of three O(1) terms, ~1e-3 here --
    and is only good to ~2e-5; hence 1e-4 for that pair.
    """
    rng = np.random.default_rng(7)
    s_shape, t_shape = (336, 8, 8), (256, 8, 8)        # CIFAR in5b shapes
    s, t = features(rng, 2, s_shape), features(rng, 2, t_shape)
    res = {(dtype, form): run(make_loss("nst_poly", s_shape, t_shape, dtype, form=form),
                              s, t, dtype)
           for dtype in ("float64", "float32") for form in ("channel", "spatial")}
    v64, g64 = res["float64", "spatial"]
    assert res["float64", "channel"][0] == pytest.approx(v64, rel=1e-9)
    assert np.abs(res["float64", "channel"][1] - g64).max() <= 1e-9 * np.abs(g64).max()
    assert res["float32", "spatial"][0] == pytest.approx(v64, rel=1e-6)
    assert res["float32", "channel"][0] == pytest.approx(v64, rel=1e-4)
    assert res["float32", "spatial"][0] == pytest.approx(res["float32", "channel"][0], rel=1e-4)
    for form in ("channel", "spatial"):
        assert np.abs(res["float32", form][1] - g64).max() <= 1e-4 * np.abs(g64).max()


def test_poly_form_cost_rule():
    assert poly_form(256, 336, 64) == "spatial"          # CIFAR in5b
    assert poly_form(2048, 1024, 49) == "spatial"        # ImageNet in5b
    assert poly_form(64, 64, 32 * 32) == "channel"       # few channels, large map
    channel, spatial = poly_form_costs(256, 336, 64)
    assert channel == 64 * (256 ** 2 + 2 * 336 ** 2 + 2 * 256 * 336)
    assert spatial == 64 ** 2 * (256 + 2 * 336 + 4)
    assert get_loss("nst_poly").form_for(336, 256, 64) == "spatial"
    assert get_loss("nst_poly", degree=3).form_for(336, 256, 64) == "channel"


# ============================================================ NST properties


@settings(max_examples=25, deadline=None, derandomize=True)
@example(c_s=1, c_t=2, h=1, w=1, seed=1, signed=False, name="nst_gaussian")  # sigma^2 ~ 0
@given(c_s=st.integers(1, 6), c_t=st.integers(1, 6), h=st.integers(1, 4), w=st.integers(1, 4),
       seed=st.integers(0, 2 ** 31), signed=st.booleans(),
       name=st.sampled_from(NST_NAMES))
def test_nst_mmd_nonnegative_and_zero_for_identical_sets(c_s, c_t, h, w, seed, signed, name):
    rng = np.random.default_rng(seed)
    kind = "normal" if signed else "uniform"
    s, t = features(rng, 2, (c_s, h, w), kind), features(rng, 2, (c_t, h, w), kind)
    loss = make_loss(name, (c_s, h, w), (c_t, h, w))
    value, _ = run(loss, s, t)
    assert value >= -1e-12
    same = make_loss(name, (c_t, h, w), (c_t, h, w))
    perm = rng.permutation(c_t)
    assert abs(run(same, t, t)[0]) <= 1e-12
    assert abs(run(same, t[:, perm], t)[0]) <= 1e-12      # same set, other order


@pytest.mark.parametrize("name", NST_NAMES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nst_invariant_to_channel_permutation_and_positive_scaling(name, dtype):
    rng = np.random.default_rng(11)
    s_shape, t_shape = (7, 4, 4), (5, 4, 4)
    s, t = features(rng, 3, s_shape), features(rng, 3, t_shape)
    loss = make_loss(name, s_shape, t_shape, dtype)
    base = run(loss, s, t, dtype)[0]
    ps, pt = rng.permutation(7), rng.permutation(5)
    scale_s = rng.uniform(0.01, 100.0, size=(1, 7, 1, 1))
    scale_t = rng.uniform(0.01, 100.0, size=(1, 5, 1, 1))
    rtol = 1e-10 if dtype == "float64" else 1e-4
    assert run(loss, s[:, ps], t[:, pt], dtype)[0] == pytest.approx(base, rel=rtol)
    assert run(loss, s * scale_s, t * scale_t, dtype)[0] == pytest.approx(base, rel=rtol)


def test_nst_linear_is_eq5_and_poly_is_eq9():
    rng = np.random.default_rng(5)
    for s_shape, t_shape in [((12, 2, 2), (9, 2, 2)), ((3, 5, 5), (4, 5, 5))]:
        s, t = features(rng, 2, s_shape, "normal"), features(rng, 2, t_shape, "normal")
        lin = run(make_loss("nst_linear", s_shape, t_shape), s, t)[0]
        assert lin == pytest.approx(ref_eq5(s, t), rel=1e-8)
        for form in ("auto", "channel", "spatial"):
            poly = run(make_loss("nst_poly", s_shape, t_shape, form=form), s, t)[0]
            assert poly == pytest.approx(ref_eq9(s, t), rel=1e-8)


# =========================================================== KD / AT / FitNet


def test_kd_vs_reference_and_zero_for_equal_logits():
    rng = np.random.default_rng(2)
    zs, zt = rng.standard_normal((5, 10)) * 3, rng.standard_normal((5, 10)) * 3
    for temperature in (4.0, 1.0, 2.5):
        loss = make_loss("kd", (10,), (10,), temperature=temperature)
        value, grad = run(loss, zs, zt)

        def ref(x, temperature=temperature):
            return ref_kd(x, zt, temperature)

        assert value == pytest.approx(ref(zs), rel=1e-7)
        fd_check(grad, ref, zs, rng)
        assert abs(run(loss, zt, zt)[0]) <= 1e-12
    # float32 and huge logits: still finite and accurate (log_softmax)
    value32 = run(make_loss("kd", None, None, "float32"), zs * 300, zt * 300, "float32")[0]
    assert math.isfinite(value32)
    assert value32 == pytest.approx(ref_kd(zs * 300, zt * 300), rel=1e-4)


@pytest.mark.parametrize("s_shape,t_shape", SHAPE_CASES)
def test_at_vs_reference(s_shape, t_shape):
    rng = np.random.default_rng(sum(s_shape) + 7 * sum(t_shape))
    s, t = features(rng, 2, s_shape, "normal"), features(rng, 2, t_shape, "normal")
    for p in (2.0, 1.0, 3.0):
        value, grad = run(make_loss("at", s_shape, t_shape, p=p), s, t)

        def ref(x, p=p):
            return ref_at(x, t, p)

        assert value == pytest.approx(ref(s), rel=1e-5)
        if p != 1.0:                 # |x| is not differentiable at 0 (FD would straddle it)
            fd_check(grad, ref, s, rng)


@pytest.mark.parametrize("s_shape,t_shape", SHAPE_CASES)
def test_fitnet_vs_reference_with_same_weights(s_shape, t_shape):
    rng = np.random.default_rng(sum(s_shape) * 3 + sum(t_shape))
    s, t = features(rng, 2, s_shape, "normal"), features(rng, 2, t_shape, "normal")
    loss = make_loss("fitnet", s_shape, t_shape)
    params = loss.collect_params()
    weights = [p for k, p in params.items() if k.endswith("weight")]
    biases = [p for k, p in params.items() if k.endswith("bias")]
    assert len(list(params.keys())) == 2 and len(weights) == 1 and len(biases) == 1
    assert weights[0].shape == (t_shape[0], s_shape[0], 1, 1) and biases[0].shape == (t_shape[0],)
    w = rng.standard_normal((t_shape[0], s_shape[0]))
    b = rng.standard_normal(t_shape[0])
    weights[0].set_data(nd(w.reshape(t_shape[0], s_shape[0], 1, 1)))
    biases[0].set_data(nd(b))
    value, grad = run(loss, s, t)

    def ref(x):
        return ref_fitnet(x, t, w, b)

    assert value == pytest.approx(ref(s), rel=1e-5)
    fd_check(grad, ref, s, rng)
    # the regressor is trained: it receives a gradient
    assert np.abs(weights[0].grad().asnumpy()).sum() > 0


def test_fitnet_infers_student_channels_and_needs_teacher_shape():
    loss = get_loss("fitnet", teacher_shape=(5, 4, 4))
    loss.initialize()
    assert loss(mx.nd.ones((2, 3, 4, 4)), mx.nd.ones((2, 5, 4, 4))).shape == (1,)
    with pytest.raises(NSTError, match="teacher_shape"):
        get_loss("fitnet", student_shape=(3, 4, 4))
    with pytest.raises(NSTError, match="teacher channels"):
        loss(mx.nd.ones((2, 3, 4, 4)), mx.nd.ones((2, 6, 4, 4)))


# ============================================================ all losses


def _inputs(name, rng, zero=None):
    if name == "kd":
        s_shape, t_shape = (10,), (10,)
    else:
        s_shape, t_shape = (6, 8, 8), (5, 4, 4)
    s, t = features(rng, 3, s_shape, "normal"), features(rng, 3, t_shape, "normal")
    if zero in ("student", "both"):
        s = np.zeros_like(s)
    if zero in ("teacher", "both"):
        t = np.zeros_like(t)
    return s_shape, t_shape, s, t


# The paper's losses; the other methods (SP, AB, ..., CRD) have their own test files.
CORE = ["at", "fitnet", "kd", "nst_gaussian", "nst_linear", "nst_poly"]


@pytest.mark.parametrize("name", CORE)
def test_teacher_gets_no_gradient_and_hybrid_equals_imperative(name):
    rng = np.random.default_rng(13)
    s_shape, t_shape, s, t = _inputs(name, rng)
    results = []
    for hybridize in (False, True):
        mx.random.seed(0)                      # same FitNet regressor in both
        loss = make_loss(name, s_shape, t_shape, "float32", hybridize)
        for _ in range(2):                     # second call runs the cached graph
            value, grad, t_grad = run(loss, s, t, "float32", teacher_grad=True)
        assert not np.any(t_grad)
        assert np.any(grad)
        results.append((value, grad))
    (v0, g0), (v1, g1) = results
    assert v1 == pytest.approx(v0, rel=1e-5, abs=1e-7)
    assert np.allclose(g1, g0, rtol=1e-4, atol=1e-6 * np.abs(g0).max())


@pytest.mark.parametrize("zero", ["student", "teacher", "both"])
@pytest.mark.parametrize("name", SPATIAL_NAMES)
def test_all_zero_maps_give_finite_loss_and_gradient(name, zero):
    rng = np.random.default_rng(17)
    s_shape, t_shape, s, t = _inputs(name, rng, zero)
    for hybridize in (False, True):
        value, grad = run(make_loss(name, s_shape, t_shape, "float32", hybridize), s, t, "float32")
        assert math.isfinite(value) and value >= -1e-6
        assert np.all(np.isfinite(grad))
    if name in NST_NAMES and zero == "both":
        assert value == pytest.approx(0.0, abs=1e-7)


def test_shape_change_rebuilds_hybridized_graph():
    rng = np.random.default_rng(19)
    loss = make_loss("nst_poly", None, None, "float64", hybridize=True)
    for s_shape, t_shape in [((12, 2, 2), (9, 2, 2)), ((3, 5, 5), (4, 5, 5)),
                             ((6, 8, 8), (5, 4, 4))]:
        s, t = features(rng, 2, s_shape), features(rng, 2, t_shape)
        assert run(loss, s, t)[0] == pytest.approx(ref_nst(s, t, "poly"), rel=1e-5)


def test_symbolic_call_uses_constructor_shapes():
    loss = get_loss("nst_poly", student_shape=(6, 8, 8), teacher_shape=(5, 4, 4))
    out = loss(mx.sym.var("s"), mx.sym.var("t"))
    assert isinstance(out, mx.sym.Symbol)
    _, out_shapes, _ = out.infer_shape(s=(2, 6, 8, 8), t=(2, 5, 4, 4))
    assert out_shapes == [(1,)]
    with pytest.raises(NSTError, match="student_shape"):
        get_loss("nst_poly")(mx.sym.var("s"), mx.sym.var("t"))


# ====================================================== API and error handling


def test_registry_attributes_and_default_weights():
    assert set(CORE) <= set(list_losses())
    expected = {KDLoss: (16, "logits"), FitNetLoss: (100, "feature"), ATLoss: (1000, "feature"),
                NSTLinear: (50, "feature"), NSTPoly: (50, "feature"),
                NSTGaussian: (100, "feature")}
    for cls, (weight, inputs) in expected.items():
        assert cls.default_weight == weight and cls.inputs == inputs
        assert cls.__doc__ and "default_weight = %d" % weight in " ".join(cls.__doc__.split())
    for name in CORE:
        loss = get_loss(name, student_shape=None, teacher_shape=(5, 4, 4) if name == "fitnet"
                        else None)
        assert type(loss).loss_name == name
        assert isinstance(loss, mx.gluon.HybridBlock)
    assert get_loss(" NST_Poly ").loss_name == "nst_poly"
    assert not list(get_loss("nst_poly").collect_params().keys())


def test_unknown_name_and_parameters_raise_nsterror():
    with pytest.raises(NSTError) as err:
        get_loss("mmd")
    for name in list_losses():
        assert name in str(err.value)
    with pytest.raises(NSTError) as err:
        get_loss("nst_poly", dgree=3)
    assert "dgree" in str(err.value) and "degree" in str(err.value)
    assert "student_shape" in str(err.value)
    with pytest.raises(NSTError, match="temperature"):
        get_loss("kd", tau=3)
    bad = [("kd", {"temperature": 0}), ("kd", {"temperature": "4"}),
           ("nst_poly", {"degree": 1.5}), ("nst_poly", {"degree": 0}),
           ("nst_poly", {"c": -1}), ("nst_poly", {"form": "gram"}),
           ("nst_poly", {"form": "spatial", "degree": 3}), ("at", {"p": 0.5}),
           ("nst_gaussian", {"eps": 0}), ("nst_linear", {"student_shape": (3, 4)}),
           ("kd", {"teacher_shape": (3, 4, 4)}), ("at", {"student_shape": (3, -4, 4)})]
    for name, params in bad:
        with pytest.raises(NSTError):
            get_loss(name, **params)


def test_bad_inputs_raise_nsterror():
    loss = get_loss("nst_poly")
    with pytest.raises(NSTError, match="batch sizes"):
        loss(mx.nd.ones((2, 3, 4, 4)), mx.nd.ones((3, 3, 4, 4)))
    with pytest.raises(NSTError, match="feature maps"):
        loss(mx.nd.ones((2, 3)), mx.nd.ones((2, 3)))
    with pytest.raises(NSTError, match="classes"):
        get_loss("kd")(mx.nd.ones((2, 10)), mx.nd.ones((2, 100)))


def test_batch_loss_is_mean_of_per_sample_losses():
    rng = np.random.default_rng(23)
    for name in CORE:
        s_shape, t_shape, s, t = _inputs(name, rng)
        mx.random.seed(1)
        loss = make_loss(name, s_shape, t_shape)
        whole = run(loss, s, t)[0]
        parts = [run(loss, s[i:i + 1], t[i:i + 1])[0] for i in range(len(s))]
        assert whole == pytest.approx(np.mean(parts), rel=1e-10)


def test_every_combination_of_kernel_and_form_is_hybridizable():
    rng = np.random.default_rng(29)
    s, t = features(rng, 2, (4, 3, 3)), features(rng, 2, (5, 3, 3))
    combos = [("nst_poly", {"form": f}) for f in ("auto", "channel", "spatial")] + \
             [("nst_poly", {"degree": 3, "c": 1.0}), ("nst_linear", {}), ("nst_gaussian", {})]
    for (name, params), hyb in itertools.product(combos, (False, True)):
        loss = make_loss(name, (4, 3, 3), (5, 3, 3), "float64", hyb, **params)
        kernel = NST_KERNELS[name]
        expected = ref_nst(s, t, kernel, **{k: v for k, v in params.items() if k != "form"})
        assert run(loss, s, t)[0] == pytest.approx(expected, rel=1e-6)
