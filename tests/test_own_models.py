"""Distilling your own models on your own data (issue 17): any network as student or
teacher, `nst features`, image folders, `nst export`.

Everything runs on a tiny image folder made here with PIL (3 classes, 32 x 32
inputs) and tiny random-weight networks (GluonCV mobilenetv2_0.25 and
resnet18_v1 with ``pretrained: false``, and :class:`UserNet` below, "the
user's own HybridBlock").
"""

import json
import os
import sys

import mxnet as mx
import numpy as np
import pytest
import yaml
from mxnet import gluon
from mxnet.gluon import nn

import symbols
from nst.cli import main
from nst.errors import NSTError
from train.config import validate_config

CLASSES = ("cat", "dog", "fish")
SIZE = 32
MODULE = __name__  # "python:<this module>:UserNet" names the user's network


class UserNet(gluon.HybridBlock):
    """The user's own network: two conv stages and a classifier."""

    def __init__(self, classes=10, width=8, **kwargs):
        super(UserNet, self).__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(width, 3, padding=1, use_bias=False), nn.BatchNorm(),
                          nn.Activation("relu"),
                          nn.Conv2D(2 * width, 3, strides=2, padding=1, use_bias=False),
                          nn.BatchNorm(), nn.Activation("relu"))
            self.pool = nn.GlobalAvgPool2D()
            self.head = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.head(self.pool(self.body(x)))


class NotABlock:
    """A class that is not a HybridBlock."""


# ------------------------------------------------------------------ fixtures
def make_folder(root, per_class=8, split=False, size=(40, 48)):
    """Images whose colour depends on the class, with per-image noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = {"cat": (200, 60, 40), "dog": (40, 180, 60), "fish": (50, 70, 210)}
    for label in CLASSES:
        for i in range(per_class):
            sub = ("val" if i % 4 == 3 else "train") if split else ""
            folder = os.path.join(str(root), sub, label)
            os.makedirs(folder, exist_ok=True)
            pixels = np.clip(np.array(base[label]) + rng.normal(0, 40, size + (3,)), 0, 255)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, "%d.%s" % (i, ext)))
    return str(root)


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "photos")


def folder_config(root, out, student, teacher=None, transfer=(), threads=0, epochs=1, **data):
    cfg = {"name": "own", "out": str(out), "seed": 3, "epochs": epochs,
           "data": dict({"dataset": "folder", "root": root, "image_size": SIZE,
                         "val_resize": 36, "batch_size": 6, "test_batch_size": 8,
                         "threads": threads, "folder": {"val_fraction": 0.25}}, **data),
           "student": student, "transfer": list(transfer),
           "optimizer": {"lr": 0.05, "wd": 1e-4},
           "train": {"log_interval": 1}}
    if teacher is not None:
        cfg["teacher"] = teacher
    return cfg


def write_config(tmp_path, cfg, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def train(tmp_path, cfg):
    """``nst train`` on ``cfg`` (written to ``tmp_path``); returns the exit status."""
    return main(["train", write_config(tmp_path, cfg), "--no-progress"])


def error_line(capsys, argv):
    """Run ``nst argv``; returns (exit code, stderr lines)."""
    capsys.readouterr()
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


GLUON_STUDENT = {"network": "gluoncv:mobilenetv2_0.25", "params": {"pretrained": False}}
GLUON_TEACHER = {"network": "gluoncv:resnet18_v1", "params": {"pretrained": False}}
USER_STUDENT = {"network": "python:%s:UserNet" % MODULE, "params": {"kwargs": {"width": 4}}}
KD_NST = [{"loss": "kd", "weight": 1, "student": "logits", "teacher": "logits"},
          {"loss": "nst_poly", "weight": 5, "student": "linearbottleneck13_relu60_relu6",
           "teacher": "stage3_activation1"}]


def read_log(out):
    with open(os.path.join(str(out), "log.json"), "r", encoding="utf-8") as handle:
        data = json.load(handle)
    return data["epochs"] if isinstance(data, dict) else data


# ------------------------------------------------------ networks of any kind
def test_gluoncv_features_are_the_blocks_own_outputs_and_share_its_parameters():
    net = symbols.get_model("gluoncv:mobilenetv2_0.25", classes=3, pretrained=False,
                            features=["features_relu61_relu6",
                                      "mobilenetv20_features_linearbottleneck4_elemwise_add0"])
    assert "mobilenetv20_features_relu61_relu6_output" in net.feature_names
    block = net.net  # the GluonCV block itself: no copy
    assert all(net.body.collect_params()[k] is p for k, p in block.collect_params().items())
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, SIZE, SIZE))
    logits, relu61, add = net(x)
    assert logits.shape == (2, 3) and relu61.shape == (2, 1280, 1, 1) and add.shape[1:] == (8, 4, 4)
    np.testing.assert_allclose(logits.asnumpy(), block(x).asnumpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(NSTError, match="no internal output 'relu62'.*relu61_relu6_output"):
        net.set_features(["relu62"])
    with pytest.raises(NSTError, match="'batchnorm0_fwd' ends .* give more of the name"):
        net.set_features(["batchnorm0_fwd"])


def test_pretrained_weights_for_other_classes_keep_all_but_the_classifier(monkeypatch):
    """pretrained: true with the data's 3 classes: every parameter that fits comes from the
    pretrained model (here a stand-in with random weights: no download), the classifier
    is new; with the pretrained model's own 1000 classes it is used as it is."""
    from symbols import external

    real, made = external._zoo, []

    def zoo(model, pretrained, extra):
        net = real(model, False, extra)
        if pretrained:
            net.initialize(mx.init.Normal(0.5))
            net(mx.nd.zeros((1, 3, SIZE, SIZE)))
            made.append(net)
        return net

    monkeypatch.setattr(external, "_zoo", zoo)
    net = symbols.get_model("gluoncv:resnet18_v1", classes=3, features=["stage4_activation1"])
    assert net.fresh_parameters == ["output.weight", "output.bias"]
    logits, _ = net(mx.nd.random.uniform(shape=(1, 3, SIZE, SIZE)))
    assert logits.shape == (1, 3) and net.net is not made[0]
    for key, param in net.net._collect_params_with_prefix().items():
        if not key.startswith("output."):
            np.testing.assert_array_equal(
                param.data().asnumpy(), made[0]._collect_params_with_prefix()[key].data().asnumpy())
    same = symbols.get_model("gluoncv:resnet18_v1", classes=1000)
    assert same.net is made[1] and same.fresh_parameters == []


def test_gluoncv_student_from_gluoncv_teacher_with_nst_and_kd(tmp_path, folder):
    out = tmp_path / "run"
    cfg = folder_config(folder, out, GLUON_STUDENT, GLUON_TEACHER, KD_NST)
    assert train(tmp_path, cfg) == 0
    record = read_log(out)[-1]
    assert record["epoch"] == 1 and np.isfinite(record["loss_total"])
    assert record["loss_nst_poly"] > 0 and record["loss_kd"] > 0
    with open(out / "classes.txt") as handle:
        assert handle.read().split() == list(CLASSES)
    # the student file is the GluonCV block's own: the user's code loads it
    from gluoncv import model_zoo
    mine = model_zoo.get_model("mobilenetv2_0.25", classes=3)
    mine.load_parameters(str(out / "student.params"))
    ours = symbols.get_model("gluoncv:mobilenetv2_0.25", classes=3, pretrained=False)
    ours.load_parameters(str(out / "student.params"))
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, SIZE, SIZE))
    np.testing.assert_allclose(mine(x).asnumpy(), ours(x).asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """One epoch of the user's HybridBlock distilled from a GluonCV teacher (KD + NST)."""
    tmp_path = tmp_path_factory.mktemp("user")
    root = make_folder(tmp_path / "photos", split=True)
    out = tmp_path / "run"
    transfer = [{"loss": "kd", "weight": 1, "student": "logits", "teacher": "logits"},
                {"loss": "nst_poly", "weight": 5, "student": "relu1",
                 "teacher": "stage1_activation1"}]
    cfg = folder_config(root, out, USER_STUDENT, GLUON_TEACHER, transfer, image_size=SIZE)
    assert train(tmp_path, cfg) == 0
    return out


def test_users_hybridblock_student_with_nst_and_kd(user_run):
    record = read_log(user_run)[-1]
    assert record["loss_nst_poly"] > 0 and record["loss_kd"] > 0
    net = UserNet(classes=3, width=4)  # the user's own code loads the trained student
    net.load_parameters(str(user_run / "student.params"))
    ours = symbols.get_model("python:%s:UserNet" % MODULE, classes=3, kwargs={"width": 4},
                             features=["relu1"])
    ours.load_parameters(str(user_run / "student.params"))
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, SIZE, SIZE))
    logits, relu1 = ours(x)
    np.testing.assert_allclose(logits.asnumpy(), net(x).asnumpy(), rtol=1e-5, atol=1e-6)
    assert relu1.shape == (2, 8, SIZE // 2, SIZE // 2)
    # built without weights, so as a teacher it needs teacher.checkpoint
    assert symbols.get_model("python:%s:UserNet" % MODULE, classes=3).loads_own_weights is False


def test_export_round_trip(user_run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(user_run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "equal the trained student's" in text
    symbol_file, params_file = str(out / "own-symbol.json"), str(out / "own-0000.params")
    imported = gluon.SymbolBlock.imports(symbol_file, ["data"], params_file)
    trained = UserNet(classes=3, width=4)
    trained.load_parameters(str(user_run / "student.params"))
    from train.data.folder import FolderBatches, FolderSamples, list_folder
    _, items = list_folder(os.path.join(os.path.dirname(str(user_run)), "photos", "val"))
    data, _ = next(FolderBatches(FolderSamples(items, False, SIZE, 36), 6, False).iter_epoch(0))
    np.testing.assert_allclose(imported(data).asnumpy(), trained(data).asnumpy(),
                               rtol=1e-5, atol=1e-6)


def test_onnx_export_is_checked_or_one_clear_error(user_run, tmp_path, capsys, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "onnx", None)  # as if it were not installed
        code, err = error_line(capsys, ["export", str(user_run), "--out", str(tmp_path),
                                        "--format", "onnx"])
    assert code == 2 and len(err) == 1 and "needs the onnx package" in err[0]
    onnx = pytest.importorskip("onnx")
    assert main(["export", str(user_run), "--out", str(tmp_path), "--format", "onnx"]) == 0
    model = onnx.load(str(tmp_path / "own.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input][0] == "data"


def test_exported_student_fine_tunes_as_mxnet_checkpoint(user_run, tmp_path):
    """mxnet_checkpoint as a student: the exported files train further, and the result
    loads with gluon.SymbolBlock.imports again."""
    assert main(["export", str(user_run), "--out", str(tmp_path), "--name", "user"]) == 0
    prefix = str(tmp_path / "user")
    photos = os.path.join(os.path.dirname(str(user_run)), "photos")
    cfg = folder_config(photos, tmp_path / "fine", {"network": "mxnet_checkpoint",
                                                    "params": {"prefix": prefix, "epoch": 0}})
    assert train(tmp_path, cfg) == 0
    before = {k.split(":", 1)[1]: v for k, v in mx.nd.load(prefix + "-0000.params").items()}
    after = mx.nd.load(str(tmp_path / "fine" / "student.params"))
    assert sorted(after) == sorted(before)
    assert any(not np.array_equal(after[k].asnumpy(), before[k].asnumpy()) for k in after)
    net = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                    str(tmp_path / "fine" / "student.params"))
    assert net(mx.nd.zeros((1, 3, SIZE, SIZE))).shape == (1, 3)


# ------------------------------------------------------------ nst features
def test_features_command_lists_names_shapes_and_pairs(capsys):
    assert main(["features", "inception_bn_small", "--param", "width=0.25"]) == 0
    text = capsys.readouterr().out
    assert "input 3x32x32" in text and "in5b" in text
    assert main(["features", "gluoncv:mobilenetv2_0.25", "--input", "3,32,32", "--classes",
                 "3"]) == 0
    text = capsys.readouterr().out
    line = [l for l in text.splitlines() if "mobilenetv20_features_relu61_relu6_output" in l][0]
    assert line.split()[-1] == "1280x1x1"
    logits = [l.split() for l in text.splitlines() if l.endswith("<- logits")]
    assert logits == [["mobilenetv20_output_flatten0_flatten0_output", "3", "<-", "logits"]]
    assert main(["features", "python:%s:UserNet" % MODULE, "--param", "kwargs.width=4",
                 "--input", "3,32,32", "--pair", "gluoncv:resnet18_v1"]) == 0
    text = capsys.readouterr().out
    assert "usernet0_relu1_fwd_output" in text
    pairs = text.split("candidate pairs")[1].splitlines()[1:]
    # the user net ends at 16 x 16 (stride 2): same size as resnet18's first ReLU
    assert any("usernet0_relu1_fwd_output" in p and "resnetv10_relu0_fwd_output" in p
               and p.endswith("same size") for p in pairs)


def test_candidate_pairs_are_equal_or_integer_ratio():
    from tools.features import candidate_pairs, spatial_ratio, stage_ends
    student = [("a", (8, 16, 16)), ("b", (8, 16, 16)), ("c", (16, 8, 8)), ("d", (32, 6, 6)),
               ("p", (32, 1, 1)), ("fc", (10,))]
    teacher = [("t1", (4, 32, 32)), ("t2", (8, 8, 8)), ("t3", (8, 3, 3))]
    assert stage_ends(student) == [("b", (8, 16, 16)), ("c", (16, 8, 8)), ("d", (32, 6, 6))]
    assert spatial_ratio((1, 16, 16), (1, 32, 32)) == (2, 1)
    assert spatial_ratio((1, 6, 6), (1, 3, 3)) == (1, 2)
    assert spatial_ratio((1, 6, 6), (1, 4, 4)) is None
    got = [(p[0], p[2], p[4]) for p in candidate_pairs(student, teacher)]
    assert got[0] == ("c", "t2", (1, 1))
    assert set(got) == {("c", "t2", (1, 1)), ("b", "t1", (2, 1)), ("b", "t2", (1, 2)),
                        ("c", "t1", (4, 1)), ("d", "t3", (1, 2))}


# ------------------------------------------------------------- image folders
def test_folder_layouts_split_and_class_names(tmp_path):
    from train.data.folder import folder_source

    flat = make_folder(tmp_path / "flat", per_class=8)
    dcfg = validate_config(folder_config(flat, tmp_path / "o", GLUON_STUDENT))["data"]
    source = folder_source(dcfg, seed=0, local_batch=4)
    assert source.class_names == CLASSES and source.classes == 3
    assert source.image_shape == (3, SIZE, SIZE)
    assert source.train.dataset_size == 18 and source.test.dataset_size == 6  # 2 per class
    val_labels = sorted(int(l) for _, l in source.test.samples.items)
    assert val_labels == [0, 0, 1, 1, 2, 2]
    split = make_folder(tmp_path / "split", split=True)
    dcfg["root"] = split
    source = folder_source(dcfg, seed=0, local_batch=4)
    assert source.test.dataset_size == 6 and all("/val/" in p for p, _ in source.test.samples.items)
    data, label = next(iter(source.test))
    assert data.shape == (6, 3, SIZE, SIZE) and data.dtype == np.float32
    os.rename(os.path.join(split, "val", "fish"), os.path.join(split, "val", "bird"))
    with pytest.raises(NSTError, match="same class sub-folders; they differ in bird, fish"):
        folder_source(dcfg, seed=0, local_batch=4)
    files_only = tmp_path / "files_only"
    files_only.mkdir()
    (files_only / "a.jpg").write_bytes(b"x")
    dcfg["root"] = str(files_only)
    with pytest.raises(NSTError, match="has no class sub-folders"):
        folder_source(dcfg, seed=0, local_batch=4)


def test_folder_batches_are_deterministic_across_workers_and_epochs(folder):
    from train.data.folder import FolderBatches, FolderSamples, list_folder

    _, items = list_folder(folder)
    batches = {}
    for workers in (0, 2):
        source = FolderBatches(FolderSamples(items, True, SIZE, 36, seed=5), 6, True, seed=5,
                               workers=workers)
        batches[workers] = [[a.asnumpy() for a in b] for b in source.iter_epoch(1, start=1)]
        other = [b[0].asnumpy() for b in source.iter_epoch(2)]
    assert len(batches[0]) == 3
    for a, b in zip(batches[0], batches[2]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(other[1], batches[0][0][0])  # another epoch, other crops


def test_same_seed_with_workers_gives_identical_parameters(tmp_path, folder):
    results = []
    for run in ("a", "b"):
        cfg = folder_config(folder, tmp_path / run, USER_STUDENT, threads=2)
        assert train(tmp_path, cfg) == 0
        results.append(mx.nd.load(str(tmp_path / run / "student.params")))
    assert sorted(results[0]) == sorted(results[1])
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key].asnumpy(), results[1][key].asnumpy())


def test_corrupt_images_stop_with_the_file_name_or_are_skipped(tmp_path, folder, capsys, caplog):
    bad = os.path.join(folder, "dog", "broken.jpg")
    with open(bad, "wb") as handle:
        handle.write(b"\xff\xd8 not a jpeg at all")
    cfg = folder_config(folder, tmp_path / "err", USER_STUDENT, threads=2)
    code, err = error_line(capsys, ["train", write_config(tmp_path, cfg), "--no-progress"])
    assert code == 2 and len(err) == 1 and "cannot read image %s" % bad in err[0]
    cfg = folder_config(folder, tmp_path / "skip", USER_STUDENT,
                        folder={"val_fraction": 0.25, "corrupt": "skip"})
    with caplog.at_level("WARNING", logger="nst.data"):
        assert train(tmp_path, cfg) == 0
    assert "skipped 1 unreadable image(s)" in caplog.text and "broken.jpg" in caplog.text


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_give_one_clear_error_line(tmp_path, folder, capsys):
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    cases = [
        ({"network": "python:no_such_package.nets:Net"}, folder,
         "cannot import module 'no_such_package.nets'"),
        ({"network": "python:%s:NotABlock" % MODULE}, folder, "not a Gluon HybridBlock"),
        ({"network": "python:%s:Missing" % MODULE}, folder, "has no attribute 'Missing'.*UserNet"),
        (dict(GLUON_STUDENT), folder, None),  # with the bad feature below
        (USER_STUDENT, str(tmp_path / "nowhere"), "does not exist or is not a folder"),
        (USER_STUDENT, str(empty), "has no images"),
    ]
    for index, (student, root, message) in enumerate(cases):
        transfer = []
        if message is None:
            transfer = [{"loss": "nst_poly", "student": "no_such_layer",
                         "teacher": "stage3_activation1"}]
            message = "no internal output 'no_such_layer'; the closest names are"
        cfg = folder_config(root, tmp_path / ("bad%d" % index), student,
                            GLUON_TEACHER if transfer else None, transfer)
        code, err = error_line(capsys, ["train", write_config(tmp_path, cfg), "--no-progress"])
        assert code == 2 and len(err) == 1, (student, err)
        import re
        assert re.search(message, err[0]), err[0]
    code, err = error_line(capsys, ["export", str(tmp_path / "nowhere")])
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]


def test_the_own_student_example_config_runs(tmp_path, folder, monkeypatch):
    """configs/examples/folder_own_student_kd_nst.yaml (the docs' step 3) on the tiny folder:
    the example module is imported from the folder nst runs in, its feature names resolve."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    teacher = symbols.get_model("gluoncv:resnet50_v1", classes=3, pretrained=False)
    teacher(mx.nd.zeros((1, 3, 64, 64)))
    teacher.save_parameters(str(tmp_path / "teacher.params"))
    monkeypatch.chdir(repo)
    out = tmp_path / "example"
    assert main(["train", "configs/examples/folder_own_student_kd_nst.yaml", "--no-progress",
                 "--out", str(out), "--set", "data.root=%s" % folder, "--set", "epochs=1",
                 "--set", "data.image_size=64", "--set", "data.val_resize=72",
                 "--set", "data.batch_size=6", "--set", "data.threads=0",
                 "--set", "data.folder.val_fraction=0.25",
                 "--set", "teacher.checkpoint=%s" % (tmp_path / "teacher.params")]) == 0
    assert read_log(out)[-1]["loss_nst_poly"] > 0


@pytest.mark.slow
def test_resumed_run_of_a_users_student_equals_an_uninterrupted_one(tmp_path, folder):
    """Checkpoints of a GraphNet student (its own parameter file, optimiser state) and the
    folder batches of a resumed epoch give the parameters of an uninterrupted run."""
    straight = folder_config(folder, tmp_path / "straight", USER_STUDENT, epochs=2)
    assert train(tmp_path, straight) == 0
    first = folder_config(folder, tmp_path / "resumed", USER_STUDENT, epochs=1)
    assert train(tmp_path, first) == 0
    path = write_config(tmp_path, dict(first, epochs=2), "resume.yaml")
    assert main(["train", path, "--no-progress", "--resume"]) == 0
    a = mx.nd.load(str(tmp_path / "straight" / "student.params"))
    b = mx.nd.load(str(tmp_path / "resumed" / "student.params"))
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy())
