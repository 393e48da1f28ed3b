"""The visualisation tools: nst tsne (Fig. 5), heatmap (Fig. 2), curves (Figs. 3/4), tables.

Tiny networks (quarter width, ResNet-11 teacher, Inception-BN-small student)
with seeded random weights stand in for trained ones; every run folder is
written the way ``nst train`` writes it (checkpoint.json with the validated
config, student.params, log.json, results.json).  The tools are driven
through ``nst.cli.main`` as a user would.
"""

import json
import os

import matplotlib.image as mpimg
import mxnet as mx
import numpy as np
import pytest

import symbols
from nst.cli import main
from nst.errors import NSTError
from nst.io import write_json
from tools import features as F
from tools.heatmap import figure_pixels as heatmap_pixels
from tools.tsne import effective_perplexity, embed, figure_pixels as tsne_pixels
from train.config import validate_config
from train.losses import get_loss

TEACHER = ("preact_resnet11_cifar", 0.25, "stage3")     # 64 channels, 8x8
STUDENT = ("inception_bn_small", 0.25, "in5b_bn")       # 80 channels, 8x8


def _save_net(path, network, width, seed):
    mx.random.seed(seed)
    net = symbols.get_model(network, classes=10, width=width)
    net.initialize(mx.init.Xavier(magnitude=2))
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(str(path))
    return str(path)


def _history(errors):
    return [{"epoch": e + 1, "train_top1_err": train, "test_top1_err": test, "lr": 0.1,
             "loss_ce": 1.0 / (e + 1), "images_per_s": 100.0}
            for e, (train, test) in enumerate(errors)]


def _make_run(folder, network, width, seed, teacher=None, transfer=(), errors=((60, 50), (30, 35))):
    folder.mkdir(parents=True)
    raw = {"name": folder.name, "epochs": len(errors), "out": str(folder),
           "data": {"dataset": "digits"},
           "student": {"network": network, "params": {"width": width}},
           "transfer": list(transfer)}
    if teacher is not None:
        raw["teacher"] = teacher
    cfg = validate_config(raw, source="test")
    write_json(folder / "checkpoint.json", {"config": cfg, "epoch": len(errors),
                                            "files": {}, "global_step": 10, "step_in_epoch": 0})
    _save_net(folder / "student.params", network, width, seed)
    write_json(folder / "log.json", _history(errors))
    write_json(folder / "results.json", {"test_top1_err": errors[-1][1],
                                         "train_top1_err": errors[-1][0],
                                         "test_top5_err": None, "epochs": len(errors)})
    return str(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher run, a student trained alone and a student trained with NST (digits)."""
    root = tmp_path_factory.mktemp("runs")
    teacher = _make_run(root / "teacher", TEACHER[0], TEACHER[1], seed=1,
                        errors=((40, 30), (10, 12)))
    t_cfg = {"network": TEACHER[0], "params": {"width": TEACHER[1]},
             "checkpoint": os.path.join(teacher, "student.params")}
    student = _make_run(root / "student", STUDENT[0], STUDENT[1], seed=2)
    nst = _make_run(root / "nst_poly", STUDENT[0], STUDENT[1], seed=3, teacher=t_cfg,
                    transfer=[{"loss": "nst_poly", "weight": 25, "student": STUDENT[2],
                               "teacher": TEACHER[2]}],
                    errors=((55, 45), (20, 22)))
    return {"root": root, "teacher": teacher, "student": student, "nst": nst}


def _cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _png_shape(path):
    return mpimg.imread(str(path)).shape


def _unit_rows(x, eps=1e-10):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).sum(axis=-1, keepdims=True) + eps)


def _numpy_poly_mmd2(s_points, t_points):
    """Eq. 4 with k(x, y) = (x.y)^2 between two point sets (rows), written out."""
    k = lambda a, b: (a @ b.T) ** 2  # noqa: E731
    return k(s_points, s_points).mean() + k(t_points, t_points).mean() \
        - 2 * k(s_points, t_points).mean()


def _numpy_batch_mmd2(s, t):
    """The batch mean of the per-image MMD^2 of (N, C, H, W) maps of equal H, W."""
    n = len(s)
    return np.mean([_numpy_poly_mmd2(_unit_rows(s[i].reshape(s.shape[1], -1)),
                                     _unit_rows(t[i].reshape(t.shape[1], -1))) for i in range(n)])


def _numpy_mean_points(f):
    """One point per channel: the images' mean unit map, scaled to unit norm again."""
    return _unit_rows(_unit_rows(f.reshape(f.shape[0], f.shape[1], -1)).mean(axis=0))


def _features(run, feature, images=8):
    spec = F.spec_from_run(run)
    spec.feature = feature
    data = F.load_images("digits", None, "test", images)[3]
    return F.extract(F.load_network(spec, [feature]), data)[0]


# ---------------------------------------------------------------------------
# nst tsne
# ---------------------------------------------------------------------------

def test_tsne_from_run_folders_writes_png_and_json(runs, tmp_path, capsys):
    out = tmp_path / "tsne.png"
    code, text, err = _cli(["tsne", runs["student"], runs["nst"], "--labels", "before", "after",
                            "--images", "16", "--iterations", "250", "-o", str(out)], capsys)
    assert code == 0, err
    assert _png_shape(out)[:2] == tsne_pixels(2) == (480, 920)
    result = json.loads((tmp_path / "tsne.json").read_text())
    # the teacher and both layers come from the NST run's config; the plain
    # student borrows the layer of the NST student (same network)
    assert result["teacher"]["network"] == TEACHER[0]
    assert result["teacher"]["feature"] == TEACHER[2]
    assert [p["label"] for p in result["panels"]] == ["before", "after"]
    for panel in result["panels"]:
        assert panel["student"]["feature"] == STUDENT[2]
        assert len(panel["teacher_xy"]) == 64 and len(panel["student_xy"]) == 80
        assert panel["mmd2"] > 0 and panel["perplexity"] == 30.0
    assert result["settings"]["images"] == 16 and result["settings"]["kernel"] == "poly"
    assert "before" in text and "MMD^2" in text

    # the batch value and the plotted points' value, against NumPy on the same features
    t = _features(runs["teacher"], TEACHER[2], 16)
    s = _features(runs["nst"], STUDENT[2], 16)
    assert result["panels"][1]["loss_mmd2"] == pytest.approx(_numpy_batch_mmd2(s, t), rel=1e-5)
    assert result["panels"][1]["mmd2"] == pytest.approx(
        _numpy_poly_mmd2(_numpy_mean_points(s), _numpy_mean_points(t)), rel=1e-5)

    # deterministic for a fixed seed
    again = tmp_path / "again.png"
    assert main(["tsne", runs["student"], runs["nst"], "--images", "16", "--iterations", "250",
                 "--labels", "before", "after", "-o", str(again)]) == 0
    second = json.loads((tmp_path / "again.json").read_text())
    for a, b in zip(result["panels"], second["panels"]):
        assert a["teacher_xy"] == b["teacher_xy"] and a["student_xy"] == b["student_xy"]
        assert a["mmd2"] == b["mmd2"]


def test_tsne_panel_mmd_equals_the_nst_loss(runs, tmp_path):
    """With one image the plotted points are the loss's samples: same MMD^2."""
    out = tmp_path / "one.png"
    assert main(["tsne", runs["nst"], "--teacher", runs["teacher"], "--teacher-feature",
                 TEACHER[2], "--images", "1", "--iterations", "250", "--perplexity", "100",
                 "-o", str(out)]) == 0
    panel = json.loads((tmp_path / "one.json").read_text())["panels"][0]
    t = _features(runs["teacher"], TEACHER[2], 1)
    s = _features(runs["nst"], STUDENT[2], 1)
    expected = _numpy_batch_mmd2(s, t)
    assert expected > 0
    assert abs(panel["mmd2"] - expected) < 1e-5
    assert abs(panel["loss_mmd2"] - expected) < 1e-5
    assert panel["perplexity"] == pytest.approx((64 + 80 - 1) / 3.0)   # 100 clamped


@pytest.mark.parametrize("kernel", ["poly", "linear", "gaussian"])
def test_mmd_of_points_equals_the_loss_on_the_same_maps(runs, kernel):
    """mmd2 of the (averaged or per-image) points = get_loss on those points as one image;
    maps of different sizes are resized as the losses resize them."""
    t = _features(runs["teacher"], TEACHER[2], 4)                   # (4, 64, 8, 8)
    s = _features(runs["nst"], "in4d_bn", 4)                        # (4, 48, 16, 16)
    assert s.shape[2:] == (16, 16) and t.shape[2:] == (8, 8)
    loss = get_loss("nst_" + kernel)
    s8, t8 = F.match_maps(s, t)
    assert s8.shape == (4, 48, 8, 8) and t8.shape == t.shape
    # one image: the points are exactly the loss's samples
    one = F.mmd2(F.selectivity_points(t8[:1]), F.selectivity_points(s8[:1]), kernel)
    ref = loss(mx.nd.array(s[:1]), mx.nd.array(t[:1])).asscalar()
    assert abs(one - ref) < 1e-5
    # averaged and per-image point sets, fed to the loss as a single "image"
    for per_image in (False, True):
        tp = F.selectivity_points(t8, per_image)
        sp = F.selectivity_points(s8, per_image)
        as_map = loss(mx.nd.array(sp.reshape(1, -1, 8, 8)),
                      mx.nd.array(tp.reshape(1, -1, 8, 8))).asscalar()
        assert abs(F.mmd2(tp, sp, kernel) - as_map) < 1e-5
    assert np.allclose(np.linalg.norm(F.selectivity_points(t8), axis=1), 1.0, atol=1e-6)


def test_tsne_embedding_is_deterministic_and_perplexity_clamped():
    points = np.random.default_rng(0).normal(size=(10, 6))
    a, perp = embed(points, perplexity=30, seed=3, iterations=250)
    b, _ = embed(points, perplexity=30, seed=3, iterations=250)
    assert perp == 3.0 and a.shape == (10, 2)
    assert np.array_equal(a, b)
    assert effective_perplexity(5, 1000) == 5.0
    with pytest.raises(NSTError, match="at least 5 points"):
        embed(points[:3])


def test_tsne_explicit_params_and_errors(runs, tmp_path, capsys):
    t_params = os.path.join(runs["teacher"], "student.params")
    s_params = os.path.join(runs["student"], "student.params")
    out = tmp_path / "explicit.png"
    argv = ["tsne", "--teacher-params", t_params, "--teacher-net", TEACHER[0],
            "--teacher-width", "0.25", "--teacher-feature", "stage2",
            "--student-params", s_params, "--student-net", STUDENT[0], "--student-width", "0.25",
            "--student-feature", "in4d_bn", "--per-image", "--images", "2",
            "--iterations", "250", "-o", str(out)]
    code, _, err = _cli(argv, capsys)
    assert code == 0, err
    panel = json.loads((tmp_path / "explicit.json").read_text())["panels"][0]
    # stage2: 32 channels at 16x16; in4d_bn: 48 at 16x16; per image: 2 points per channel
    assert len(panel["teacher_xy"]) == 2 * 32 and len(panel["student_xy"]) == 2 * 48
    assert _png_shape(out)[:2] == tsne_pixels(1)

    missing = argv[:2] + [str(tmp_path / "nope.params")] + argv[3:]
    code, _, err = _cli(missing, capsys)
    assert code == 2 and "nope.params does not exist" in err and len(err.splitlines()) == 1

    empty = tmp_path / "not_a_run"
    empty.mkdir()
    code, _, err = _cli(["tsne", str(empty), "--teacher", runs["teacher"]], capsys)
    assert code == 2 and "has no checkpoint.json" in err

    code, _, err = _cli(["tsne", runs["student"], "--teacher", runs["teacher"]], capsys)
    assert code == 2 and "--teacher-feature" in err       # nothing names a teacher layer

    code, _, err = _cli(["tsne", runs["nst"], "--teacher-feature", "stage9"], capsys)
    assert code == 2 and "has no feature 'stage9'" in err and "stage3" in err


# ---------------------------------------------------------------------------
# nst heatmap
# ---------------------------------------------------------------------------

def test_heatmap_on_cifar_top_k(runs, cifar_root, tmp_path, capsys):
    params = os.path.join(runs["teacher"], "student.params")
    out = tmp_path / "heat.png"
    code, _, err = _cli(["heatmap", params, "--net", TEACHER[0], "--width", "0.25",
                         "--layer", "stage3", "--top-k", "3", "--images", "2", "--cell", "64",
                         "--dataset", "cifar10", "--root", str(cifar_root), "-o", str(out)],
                        capsys)
    assert code == 0, err
    assert heatmap_pixels(2, 3, 64) == (188, 280)
    assert _png_shape(out)[:2] == (188, 280)
    result = json.loads((tmp_path / "heat.json").read_text())
    assert result["layer_shape"] == [64, 8, 8] and result["images"]["indices"] == [0, 1]
    # the three channels of largest mean activation, recomputed independently
    spec = F.ModelSpec(network=TEACHER[0], params={"width": 0.25}, checkpoint=params,
                       classes=10)
    data = F.load_images("cifar10", str(cifar_root), "test", 2)[3]
    feat = F.extract(F.load_network(spec, ["stage3"]), data)[0]
    top = list(np.argsort(-feat.mean(axis=(0, 2, 3)))[:3])
    assert result["channels"] == [int(k) for k in top]
    first = result["stats"][0]
    assert first["max"] == pytest.approx(float(feat[:, top[0]].max()), rel=1e-5)
    assert len(first["images"]) == 2


def test_heatmap_from_run_folder_and_errors(runs, tmp_path, capsys):
    out = tmp_path / "run.png"
    code, _, err = _cli(["heatmap", runs["nst"], "--channel", "0", "79", "--images", "3",
                         "--cell", "48", "-o", str(out)], capsys)
    assert code == 0, err
    assert _png_shape(out)[:2] == heatmap_pixels(3, 2, 48) == (208, 180)
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["layer"] == STUDENT[2] and result["channels"] == [0, 79]
    assert result["images"]["dataset"] == "digits"

    code, _, err = _cli(["heatmap", runs["nst"], "--channel", "80", "-o", str(out)], capsys)
    assert code == 2
    assert "channel 80 is out of range: layer in5b_bn of inception_bn_small has 80 channels " \
           "(0..79)" in err

    code, _, err = _cli(["heatmap", runs["nst"], "--layer", "in9z", "-o", str(out)], capsys)
    assert code == 2 and "has no feature 'in9z'" in err and "in5b_bn" in err

    code, _, err = _cli(["heatmap", str(tmp_path / "missing.params"), "--net", TEACHER[0]],
                        capsys)
    assert code == 2 and "does not exist" in err

    code, _, err = _cli(["heatmap", os.path.join(runs["nst"], "student.params"), "--net",
                         TEACHER[0], "-o", str(out)], capsys)     # wrong network for the file
    assert code == 2 and "does not fit network preact_resnet11_cifar" in err


# ---------------------------------------------------------------------------
# nst curves
# ---------------------------------------------------------------------------

def test_curves_png_and_json(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    code, text, err = _cli(["curves", runs["student"], runs["nst"], "--labels", "Student", "NST",
                            "-o", str(out)], capsys)
    assert code == 0, err
    assert _png_shape(out)[:2] == (450, 700)
    result = json.loads((tmp_path / "curves.json").read_text())
    assert [r["label"] for r in result["runs"]] == ["Student", "NST"]
    nst = result["runs"][1]
    assert (nst["final_train"], nst["final_test"], nst["best_test"], nst["best_test_epoch"]) \
        == (20, 22, 22, 2)
    assert nst["results"]["test_top1_err"] == 22

    code, _, err = _cli(["curves", runs["nst"], "--metric", "top5_err", "-o", str(out)], capsys)
    assert code == 2 and "no top5_err values" in err

    bare = tmp_path / "bare"
    bare.mkdir()
    code, _, err = _cli(["curves", str(bare), "-o", str(out)], capsys)
    assert code == 2 and "has no log.json" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------
# nst tables
# ---------------------------------------------------------------------------

def _results(path, **values):
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, "results.json"), values)


def test_tables_render_known_results_exactly(tmp_path, capsys):
    root = tmp_path / "runs"
    _results(root / "cifar10" / "student", test_top1_err=6.12, train_top1_err=1.0)
    _results(root / "cifar10" / "nst_poly", test_top1_err=4.9, train_top1_err=1.5)
    out = tmp_path / "tables.md"
    code, text, err = _cli(["tables", "--runs", str(root), "--table", "table1", "-o", str(out)],
                           capsys)
    assert code == 0, err
    expected = """# Measured results beside the paper's

Measured: the `results.json` of the runs under `%s` ("not run": none yet).

**Table 1. CIFAR results of individual transfer methods (test error %%)**

| Method | Model | cifar10 paper | cifar10 measured | Δ | cifar100 paper | cifar100 measured | Δ |
|---|---|---|---|---|---|---|---|
| Student | Inception-BN | 5.80 | 6.12 | +0.32 | 25.63 | not run | — |
| KD [19] | Inception-BN | 4.47 | not run | — | 22.18 | not run | — |
| FitNet [36] | Inception-BN | 4.75 | not run | — | 23.48 | not run | — |
| AT [38] | Inception-BN | 4.64 | not run | — | 24.31 | not run | — |
| NST (linear) | Inception-BN | 4.87 | not run | — | 24.28 | not run | — |
| NST (poly) | Inception-BN | 4.39 | 4.90 | +0.51 | 23.46 | not run | — |
| NST (Gaussian) | Inception-BN | 4.48 | not run | — | 23.85 | not run | — |
| Teacher | ResNet-1001 | 4.04 | not run | — | 20.50 | not run | — |

Teacher ResNet-1001: trained with configs/<dataset>/teacher.yaml, He et al.'s 164-epoch recipe (lr 0.1, /10 at epochs 82 and 123, batch 128). Its published error: cifar10 4.92, cifar100 22.71 (He et al. 2016, Identity Mappings in Deep Residual Networks, Table 3, ResNet-1001 pre-act); the paper's teacher: cifar10 4.04, cifar100 20.50.

Source of the paper's numbers: Huang & Wang 2017, Table 1.
""" % root
    assert out.read_text(encoding="utf-8") == expected
    assert expected in text
    numbers = json.loads((tmp_path / "tables.json").read_text())
    assert numbers["tables"]["table1"]["cifar10"]["nst_poly"]["test_top1_err"] == 4.9
    assert numbers["tables"]["table1"]["cifar100"] == {}


def test_tables_quick_table4_running_rows_and_bad_results(tmp_path, capsys):
    voc = tmp_path / "voc"
    _results(voc / "nst", mAP=0.5, ap={"aeroplane": 0.25, "bicycle": None})
    (voc / "kd").mkdir(parents=True)
    (voc / "kd" / "log.json").write_text("[]")
    runs = tmp_path / "runs"
    running = runs / "cifar10" / "kd_nst"
    running.mkdir(parents=True)
    write_json(running / "checkpoint.json", {"epoch": 1, "config": {"epochs": 3}})
    code, text, err = _cli(["tables", "--quick", "--runs", str(runs), "--voc-runs", str(voc),
                            "--table", "table2", "--table", "table4"], capsys)
    assert code == 0, err
    assert "QUICK MODE" in text
    assert "| NST* | quick | 50.0 | 25.0 | — |" in text
    assert "| KD | measured | not run |" in text
    assert "Still training: KD+NST* on cifar10 (epoch 1 of 3)." in text
    assert "Still training: KD on voc (started)." in text

    (running / "results.json").write_text("{not json")
    code, _, err = _cli(["tables", "--runs", str(runs), "--table", "table2"], capsys)
    assert code == 2 and "results.json is unreadable" in err

    # Table 3 has top-1 and top-5 columns
    _results(runs / "imagenet" / "nst_poly", test_top1_err=30.0, test_top5_err=10.5)
    code, text, err = _cli(["tables", "--quick", "--runs", str(runs), "--table", "table3"],
                           capsys)
    assert code == 0, err
    assert "Top-5 measured" in text and "| 24.82 | 30.00 | +5.18 | 7.58 | 10.50 | +2.92 |" in text

    code, _, err = _cli(["tables", "--table", "table9"], capsys)
    assert code == 2 and "unknown table 'table9'" in err
