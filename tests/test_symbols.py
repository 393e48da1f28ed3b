"""Tests of the network zoo in ``symbols/``: shapes, parameter counts, feature taps."""

import os

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import HybridBlock


from nst.errors import NSTError
from symbols import count_parameters, get_model, list_models

CIFAR = (2, 3, 32, 32)
IMAGENET = (1, 3, 224, 224)


def _init(net, seed=0):
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    return net


def _data(shape, seed=1):
    return mx.nd.array(np.random.RandomState(seed).uniform(-1, 1, size=shape).astype("float32"))


def _assert_close(a, b):
    np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-5)


def _within(count, expected, tolerance=0.02):
    return abs(count - expected) <= tolerance * expected


# ---------------------------------------------------------------- registry
def test_list_models_all_build_with_feature_and_stage_names():
    names = list_models()
    for required in ("preact_resnet1001_cifar", "preact_resnet164_cifar", "preact_resnet101",
                     "inception_bn", "inception_bn_small"):
        assert required in names
    for name in names:
        net = get_model(name)
        assert isinstance(net, HybridBlock)
        assert len(net.stages) == len(net.stage_names)
        assert set(net.stage_names) <= set(net.feature_names)
        assert net.requested_features is None


def test_default_classes():
    assert get_model("preact_resnet29_cifar").output._units == 10
    assert get_model("inception_bn_small").output._units == 10
    assert get_model("preact_resnet101").output._units == 1000
    assert get_model("inception_bn").output._units == 1000
    assert get_model("inception_bn_small", classes=100).output._units == 100


def test_unknown_model_lists_known_names():
    with pytest.raises(NSTError) as err:
        get_model("resnet_1001")
    for name in list_models():
        assert name in str(err.value)
    assert "9n+2" in str(err.value)


@pytest.mark.parametrize("depth", [32, 1000, 2, 9])
def test_bad_cifar_depth(depth):
    with pytest.raises(NSTError, match=r"9n\+2"):
        get_model("preact_resnet%d_cifar" % depth)


def test_any_9n_plus_2_depth_builds_and_runs():
    net = _init(get_model("preact_resnet11_cifar", classes=7, features=["stage3"], width=0.25))
    logits, stage3 = net(_data(CIFAR))
    assert logits.shape == (2, 7)
    assert stage3.shape == (2, 64, 8, 8)
    assert len(net.stages[net.stage_names.index("stage1")]) == 1  # n = 1 unit per group
    assert len(get_model("preact_resnet29_cifar").stage("stage2")) == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"classes": 0}, "classes"),
    ({"classes": 2.5}, "classes"),
    ({"width": 0}, "width"),
    ({"width": "wide"}, "width"),
    ({"depth": 3}, "unknown option"),
])
def test_bad_options_raise_nsterror(kwargs, match):
    with pytest.raises(NSTError, match=match):
        get_model("inception_bn_small", **kwargs)


# ---------------------------------------------------------------- features
def test_unknown_feature_lists_feature_names():
    with pytest.raises(NSTError) as err:
        get_model("inception_bn_small", features=["in5b", "in6a"])
    message = str(err.value)
    assert "in6a" in message
    for name in ("in3a", "in5b", "in5b_bn", "4b"):
        assert name in message
    with pytest.raises(NSTError, match="stage3"):
        get_model("preact_resnet164_cifar", features=["stage4"])


def test_features_must_be_a_list():
    with pytest.raises(NSTError, match=r"\['in5b'\]"):
        get_model("inception_bn_small", features="in5b")


def test_feature_order_follows_request_and_hybridized_output_is_identical():
    net = _init(get_model("inception_bn_small", features=["in5b", "conv1", "in3c", "in5b"]))
    x = _data(CIFAR)
    out = net(x)
    assert isinstance(out, tuple)
    assert [o.shape for o in out] == [(2, 10), (2, 336, 8, 8), (2, 96, 32, 32),
                                      (2, 160, 16, 16), (2, 336, 8, 8)]
    net.hybridize(static_alloc=True, static_shape=True)
    hybrid = net(x)
    assert isinstance(hybrid, tuple) and len(hybrid) == len(out)
    for a, b in zip(out, hybrid):
        _assert_close(a, b)
    # changing the request on a hybridized network rebuilds the graph
    net.set_features(["in4b"])
    logits, in4b = net(x)
    assert in4b.shape == (2, 160, 16, 16)
    _assert_close(logits, out[0])


def test_empty_and_no_features():
    x = _data((1, 3, 32, 32))
    net = _init(get_model("inception_bn_small", features=[], width=0.25))
    out = net(x)
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == (1, 10)
    net.hybridize(static_alloc=True, static_shape=True)
    hybrid = net(x)
    assert isinstance(hybrid, tuple) and len(hybrid) == 1
    _assert_close(out[0], hybrid[0])
    net.set_features(None)
    logits = net(x)
    assert isinstance(logits, mx.nd.NDArray)
    _assert_close(logits, out[0])


# (name, input shape, width, requested features): small widths keep the hybridize test fast
FAMILIES = [
    ("preact_resnet29_cifar", (2, 3, 32, 32), 0.25, ["bn1", "stage3", "stage1"]),
    ("preact_resnet101", (1, 3, 64, 64), 0.0625, ["stage4", "bn1", "pool0"]),
    ("inception_bn", (1, 3, 64, 64), 0.125, ["in5b", "4b_bn", "4b"]),
    ("inception_bn_small", (2, 3, 32, 32), 0.25, ["in5b_bn", "in5b"]),
]


@pytest.mark.parametrize("name, shape, width, features", FAMILIES)
def test_hybridized_equals_imperative(name, shape, width, features):
    net = _init(get_model(name, features=features, width=width))
    x = _data(shape)
    out = net(x)
    assert len(out) == len(features) + 1
    expected = net.feature_shapes(shape, features)
    assert [o.shape for o in out[1:]] == [expected[f] for f in features]
    net.hybridize(static_alloc=True, static_shape=True)
    for a, b in zip(out, net(x)):
        _assert_close(a, b)


@pytest.mark.parametrize("name, feature, full, shape", [
    ("preact_resnet29_cifar", "stage3", 256, CIFAR),
    ("preact_resnet101", "bn1", 2048, (1, 3, 64, 64)),
    ("inception_bn", "in5b", 1024, (1, 3, 64, 64)),
    ("inception_bn_small", "in5b", 336, CIFAR),
])
def test_width_shrinks_channels(name, feature, full, shape):
    wide = get_model(name)
    narrow = get_model(name, width=0.5)
    assert wide.feature_shapes(shape, [feature])[feature][1] == full
    channels = narrow.feature_shapes(shape, [feature])[feature][1]
    if name.startswith("inception"):  # every branch rounded to a multiple of 16
        assert channels % 16 == 0 and abs(channels - full // 2) <= 32
    else:
        assert channels == full // 2
    assert count_parameters(narrow, shape) < 0.4 * count_parameters(wide, shape)
    tiny = get_model(name, width=0.001)  # every channel count rounds to >= 1
    assert tiny.feature_shapes(shape, [feature])[feature][1] >= 1


def test_inception_bn_small_width_scales_the_stem():
    net = get_model("inception_bn_small", width=0.5)
    assert net.feature_shapes(CIFAR, ["conv1"])["conv1"] == (2, 48, 32, 32)


# ---------------------------------------------------------------- the networks
def test_preact_resnet1001_cifar():
    net = get_model("preact_resnet1001_cifar", features=["stage3", "bn1"])
    assert net.stage_names == ("conv0", "stage1", "stage2", "stage3", "bn1", "relu1")
    assert [len(net.stage(s)) for s in ("stage1", "stage2", "stage3")] == [111, 111, 111]
    _init(net)
    logits, stage3, bn1 = net(_data(CIFAR))
    assert logits.shape == (2, 10)
    assert stage3.shape == (2, 256, 8, 8)
    assert bn1.shape == (2, 256, 8, 8)
    params = count_parameters(net)
    assert _within(params, 10.2e6), params


def test_preact_resnet164_cifar_parameter_count():
    net = get_model("preact_resnet164_cifar")
    params = count_parameters(net, CIFAR)  # shapes inferred symbolically
    assert _within(params, 1.7e6), params
    shapes = net.feature_shapes(CIFAR, ["stage1", "stage2", "stage3", "bn1"])
    assert shapes == {"stage1": (2, 64, 32, 32), "stage2": (2, 128, 16, 16),
                      "stage3": (2, 256, 8, 8), "bn1": (2, 256, 8, 8)}


def test_preact_resnet101():
    net = get_model("preact_resnet101", features=["bn1", "stage3"])
    params = count_parameters(net, IMAGENET)
    assert _within(params, 44.5e6), params
    _init(net)
    logits, bn1, stage3 = net(_data(IMAGENET))
    assert logits.shape == (1, 1000)
    assert bn1.shape == (1, 2048, 7, 7)
    assert stage3.shape == (1, 1024, 14, 14)


@pytest.fixture(scope="module")
def inception_bn_224():
    """Inception-BN at 224 x 224 with some features, and its outputs (built once)."""
    net = _init(get_model("inception_bn", features=["4b", "in5b", "5b", "4b_bn", "5b_bn"]))
    x = _data(IMAGENET)
    return net, x, net(x)


def test_inception_bn_pinned_shapes(inception_bn_224):
    net, _, (logits, f4b, in5b, f5b, f4b_bn, f5b_bn) = inception_bn_224
    assert logits.shape == (1, 1000)
    assert f4b.shape == (1, 576, 14, 14)
    assert in5b.shape == (1, 1024, 7, 7)
    _assert_close(in5b, f5b)  # alias
    _assert_close(mx.nd.relu(f4b_bn), f4b)
    _assert_close(mx.nd.relu(f5b_bn), in5b)
    channels = {"3a": 256, "3b": 320, "3c": 576, "4a": 576, "4b": 576, "4c": 608, "4d": 608,
                "4e": 1056, "5a": 1024, "5b": 1024}
    sides = {"3": 27, "4": 14, "5": 7}     # MXNet's layout: pool1/pool2 unpadded
    shapes = net.feature_shapes(IMAGENET)
    for module, c in channels.items():
        side = 14 if module == "3c" else 7 if module == "4e" else sides[module[0]]
        assert shapes[module] == shapes[module + "_bn"] == (1, c, side, side), module
    assert [shapes[s][2] for s in ("conv1", "pool1", "pool2")] == [112, 55, 27]


def test_inception_bn_split_at_4b(inception_bn_224):
    net, x, out = inception_bn_224
    features, top_features = net.split_at("4b")
    assert len(features) == net.stage_names.index("4b") + 1
    assert len(features) + len(top_features) == len(net.stages)
    assert net.stage_names[len(features)] == "4c_bn"
    assert features[-1] is net.stage("4b") and top_features[-1] is net.stage("5b")
    mid = features(x)
    _assert_close(mid, out[1])
    _assert_close(top_features(mid), out[2])
    shared = set(id(p) for p in net.collect_params().values())
    assert all(id(p) in shared for p in features.collect_params().values())
    assert net.split_at("in4b")[0][-1] is features[-1]  # alias accepted


def test_inception_bn_small_pinned_shapes():
    net = _init(get_model("inception_bn_small", features=["in5b", "in5b_bn", "4b", "in4b"]))
    logits, in5b, in5b_bn, f4b, in4b = net(_data(CIFAR))
    assert logits.shape == (2, 10)
    assert in5b.shape == (2, 336, 8, 8)
    assert in5b_bn.shape == (2, 336, 8, 8)
    assert (in5b_bn.asnumpy() < 0).any()  # really the pre-activation
    _assert_close(mx.nd.relu(in5b_bn), in5b)
    _assert_close(f4b, in4b)


# ---------------------------------------------------------------- GluonCV weights
def test_preact_resnet101_loads_gluoncv_weights(tmp_path):
    from gluoncv.model_zoo.resnet import resnet101_v2
    x = _data((1, 3, 64, 64))
    reference = resnet101_v2()
    _init(reference)
    reference(x)
    for param in reference.collect_params(".*running_var").values():
        param.set_data(mx.nd.random.uniform(0.5, 1.5, shape=param.shape))
    expected = reference(x)
    structural, legacy = str(tmp_path / "resnet101_v2.params"), str(tmp_path / "legacy.params")
    reference.save_parameters(structural)
    reference.collect_params().save(legacy)

    for filename in (structural, legacy):
        net = get_model("preact_resnet101", features=["bn1"])
        assert net.load_gluoncv_params(filename) == []
        logits, _ = net(x)
        _assert_close(logits, expected)

    other = get_model("preact_resnet101", classes=10)
    assert other.load_gluoncv_params(structural) == ["output.weight", "output.bias"]
    assert other(x).shape == (1, 10)

    with pytest.raises(NSTError, match="width"):
        get_model("preact_resnet101", width=0.5).load_gluoncv_params(structural)
    with pytest.raises(NSTError, match="cannot read"):
        get_model("preact_resnet101").load_gluoncv_params(os.path.join(str(tmp_path), "nope"))


@pytest.mark.parametrize("name, width, shape", [
    ("inception_bn_small", 0.25, (4, 3, 32, 32)),
    ("inception_bn_small", 0.5, (4, 3, 32, 32)),
    ("inception_bn", 0.25, (2, 3, 64, 64)),
])
def test_width_scaled_inception_trains_under_mkldnn(name, width, shape):
    """Regression: MKL-DNN's blocked concat failed ("could not construct a
    sub-memory") on branch widths that were not multiples of 16."""
    from mxnet import autograd
    net = _init(get_model(name, width=width, features=["in5b_bn"]))
    net.hybridize(static_alloc=True, static_shape=True)
    x = _data(shape)
    with autograd.record():
        logits, feat = net(x)
        loss = logits.sum() + feat.sum()
    loss.backward()
    grads = [p.grad().asnumpy() for p in net.collect_params().values() if p.grad_req != "null"]
    assert all(np.isfinite(g).all() for g in grads)
