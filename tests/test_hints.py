"""``nst hints`` (tools/hints.py): linear CKA, clustering of layers, the proposal end to end."""

import json

import mxnet as mx
import numpy as np
import pytest

import symbols
from nst.cli import main as nst_main
from nst.errors import NSTError
from tools.hints import (cka_matrix, cluster_layers, linear_cka, medoids, make_hints,
                         propose_hints)
from tools.features import ModelSpec


def ref_cka(x, y):
    """Kornblith et al. (2019), Eq. for linear CKA in feature space:
    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), columns centred."""
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


# ====================================================================== CKA

def test_cka_matches_the_feature_space_formula():
    rng = np.random.default_rng(0)
    for shape_x, shape_y in (((20, 7), (20, 11)), ((15, 3, 4, 4), (15, 5, 2, 2)),
                             ((30, 50), (30, 2))):
        x, y = rng.standard_normal(shape_x), rng.standard_normal(shape_y)
        assert linear_cka(x, y) == pytest.approx(ref_cka(x, y), rel=1e-10)
        assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)
        assert 0.0 <= linear_cka(x, y) <= 1.0


def test_cka_is_one_on_identical_and_invariant_to_orthogonal_maps_and_isotropic_scaling():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((25, 8))
    y = np.tanh(x @ rng.standard_normal((8, 6)))        # some other representation
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q = orthogonal(rng, 8)
    assert linear_cka(x @ q, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(linear_cka(x, y), rel=1e-10)  # centring
    # ... but not to an anisotropic scaling
    d = np.diag(np.linspace(0.1, 10, 8))
    assert abs(linear_cka(x @ d, y) - linear_cka(x, y)) > 1e-3
    # independent noise: far from 1
    assert linear_cka(x, rng.standard_normal((25, 8))) < 0.6


def test_cka_matrix_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(2)
    acts = [rng.standard_normal((12, k)) for k in (3, 5, 7)]
    m = cka_matrix(acts)
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0)
    cross = cka_matrix(acts, acts[:2])
    assert cross.shape == (3, 2) and np.allclose(cross, m[:, :2])
    with pytest.raises(NSTError, match="same images"):
        linear_cka(np.ones((4, 2)), np.ones((5, 2)))


# =============================================================== clustering

BLOCKS = np.array([
    [1.00, 0.95, 0.90, 0.20, 0.10, 0.10],
    [0.95, 1.00, 0.93, 0.25, 0.15, 0.10],
    [0.90, 0.93, 1.00, 0.30, 0.20, 0.15],
    [0.20, 0.25, 0.30, 1.00, 0.40, 0.35],
    [0.10, 0.15, 0.20, 0.40, 1.00, 0.97],
    [0.10, 0.10, 0.15, 0.35, 0.97, 1.00],
])


@pytest.mark.parametrize("method", ["agglomerative", "kmeans"])
def test_clusters_and_medoids_of_a_block_matrix(method):
    labels = cluster_layers(BLOCKS, 3, method)
    assert labels.tolist() == [0, 0, 0, 1, 2, 2]
    # medoid: smallest summed 1 - CKA; in the first block layer 1 (0.05 + 0.07)
    assert medoids(BLOCKS, labels) == [1, 3, 4]        # a tie (4 vs 5) goes to the earlier
    assert cluster_layers(BLOCKS, 1, method).tolist() == [0] * 6
    assert cluster_layers(BLOCKS, 6, method).tolist() == list(range(6))


def test_propose_hints_pairs_each_medoid_with_the_most_similar_student_layer():
    cross = np.array([[0.1, 0.9, 0.2], [0.8, 0.1, 0.3], [0.1, 0.2, 0.3],
                      [0.5, 0.5, 0.1], [0.0, 0.1, 0.7], [0.6, 0.1, 0.2]])
    names = ["t%d" % i for i in range(6)]
    labels, proposals = propose_hints(BLOCKS, cross, names, ["a", "b", "c"], 3)
    assert [p["teacher_layer"] for p in proposals] == ["t1", "t3", "t4"]
    assert [p["student_layer"] for p in proposals] == ["a", "a", "c"]
    assert [p["cluster"] for p in proposals] == [["t0", "t1", "t2"], ["t3"], ["t4", "t5"]]
    assert proposals[2]["cka"] == pytest.approx(0.7)
    with pytest.raises(NSTError, match="--hints"):
        cluster_layers(BLOCKS, 7)
    with pytest.raises(NSTError, match="method"):
        cluster_layers(BLOCKS, 2, "spectral")


# =============================================================== end to end

@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A tiny ResNet-11 (quarter width) with fixed random weights, as a .params file."""
    mx.random.seed(7)
    net = symbols.get_model("preact_resnet11_cifar", classes=10, width=0.25)
    net.initialize(mx.init.Xavier(magnitude=2))
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = tmp_path_factory.mktemp("hints") / "teacher.params"
    net.save_parameters(str(path))
    return str(path)


def test_nst_hints_end_to_end_is_deterministic(tiny_teacher, tmp_path, capsys):
    argv = ["hints", "--teacher-params", tiny_teacher, "--teacher-net", "preact_resnet11_cifar",
            "--teacher-width", "0.25", "--student-net", "inception_bn_small",
            "--student-width", "0.125", "--images", "24", "--hints", "2", "--no-progress"]
    results = []
    for name in ("a", "b"):
        out = tmp_path / ("%s.png" % name)
        assert nst_main(argv + ["-o", str(out)]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"
        results.append(json.loads((tmp_path / ("%s.json" % name)).read_text()))
    printed = capsys.readouterr().out
    a, b = results
    assert a["teacher_cka"] == b["teacher_cka"] and a["proposals"] == b["proposals"]
    assert a["teacher_layers"] == ["conv0", "stage1", "stage2", "stage3", "bn1", "relu1"]
    assert len(a["student_layers"]) == len(symbols.get_model("inception_bn_small").stage_names)
    t = np.array(a["teacher_cka"])
    cross = np.array(a["teacher_student_cka"])
    assert t.shape == (6, 6) and cross.shape == (6, len(a["student_layers"]))
    assert np.allclose(np.diag(t), 1.0) and np.allclose(t, t.T)
    assert ((t >= -1e-9) & (t <= 1 + 1e-9)).all()
    assert len(a["proposals"]) == 2 and len(a["clusters"]) == 2
    assert sorted(sum(a["clusters"], [])) == sorted(a["teacher_layers"])
    for p in a["proposals"]:
        assert p["teacher_layer"] in p["cluster"]
        row = cross[a["teacher_layers"].index(p["teacher_layer"])]
        assert p["student_layer"] == a["student_layers"][int(np.argmax(row))]
        assert "| %s |" % p["teacher_layer"] in printed
    assert a["student"]["untrained"] is True and a["data"]["images"] == 24


def test_make_hints_with_chosen_layers_and_pooling(tiny_teacher, tmp_path):
    teacher = ModelSpec("preact_resnet11_cifar", tiny_teacher, {"width": 0.25})
    student = ModelSpec("inception_bn_small", None, {"width": 0.125})
    result = make_hints(teacher, student, str(tmp_path / "h.png"), hints=2, images=16,
                        teacher_layers=["stage1", "stage2", "stage3"],
                        student_layers=["in3c", "in4e", "in5b"], pool=2, log=lambda *_: None)
    assert result["teacher_layers"] == ["stage1", "stage2", "stage3"]
    assert result["student_layers"] == ["in3c", "in4e", "in5b"]
    assert "pooled to at most 2x2" in result["metric"]
    # CKA of the same activations computed here directly
    from tools.features import load_images, load_network
    _, _, _, data, _, _ = load_images("digits", None, "train", 16)
    net = load_network(ModelSpec("preact_resnet11_cifar", tiny_teacher, {"width": 0.25},
                                 classes=10), ["stage2", "stage3"])
    outs = net(mx.nd.array(data))
    s2, s3 = [o.asnumpy() for o in outs[1:]]

    def pool(x):
        n, c, h, w = x.shape
        k = -(-h // 2)
        return x.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))

    assert result["teacher_cka"][1][2] == pytest.approx(ref_cka(pool(s2), pool(s3)), rel=1e-5)


def test_nst_hints_errors(tiny_teacher, tmp_path, capsys):
    base = ["hints", "--teacher-params", tiny_teacher, "--teacher-net", "preact_resnet11_cifar",
            "--teacher-width", "0.25", "--images", "8", "-o", str(tmp_path / "x.png")]
    cases = [(["hints", "--student-net", "inception_bn_small"], "which teacher"),
             (base, "which student"),
             (base + ["--student-net", "inception_bn_small", "--hints", "9"], "--hints 9"),
             (base + ["--student-net", "inception_bn_small", "--teacher-layers", "stage7"],
              "stage7"),
             (["hints", tiny_teacher, "--student-net", "inception_bn_small"], "--teacher-net")]
    for argv, pattern in cases:
        assert nst_main(argv) == 2
        err = capsys.readouterr().err
        assert pattern in err and "Traceback" not in err, err
