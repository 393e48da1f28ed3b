"""The Inception-BN Faster R-CNN (``detection/``) end to end on a tiny VOC of CIFAR images.

One module-scoped run (two CPU contexts: the multi-device path) is stopped
after its first step by a signal, resumed, finished and tested; the tests
below check its pieces.  Small images and a quarter-width backbone keep the
whole file to well under a minute on two cores.
"""

import json
import os
import shutil
import signal

import mxnet as mx
import numpy as np
import pytest

from detection.config import QUICK_CONFIG, load_config
from detection.data import VOCDataset
from detection.model import backbone_parameters, build_detector
from detection.quick_backbone import make_quick_backbone
from detection.tiny_voc import make_tiny_voc, tiny_voc_classes
from detection.train import DetectionTrainer
from nst.cli import main as nst_main
from nst.errors import NSTError
from tools import voc_eval
from tools.voc_eval import VOC_CLASSES

SMALL = {"data.short": 96, "data.max_size": 128, "data.train_limit": 4, "data.test_limit": 6,
         "epochs": 1, "train.log_interval": 1, "optimizer.lr_per_image": 0.002}


@pytest.fixture(scope="module")
def tiny_voc(cifar_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    make_tiny_voc(str(root), str(cifar_root), trainval=8, test=6, seed=1)
    return str(root)


@pytest.fixture(scope="module")
def backbone(cifar_root, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("backbone") / "student.params")
    return make_quick_backbone(path, str(cifar_root), width=0.25, seed=3, steps=2, batch_size=8)


def small_config(voc_root, backbone_path, out, **values):
    merged = dict(SMALL, **{"data.voc_root": voc_root, "backbone.checkpoint": backbone_path,
                            "out": str(out)})
    merged.update(values)
    return load_config(QUICK_CONFIG, values=merged)


# ------------------------------------------------------------------ tiny VOC
def test_tiny_voc_is_a_voc2007_folder(tiny_voc):
    folder = os.path.join(tiny_voc, "VOC2007")
    main = os.path.join(folder, "ImageSets", "Main")
    for split, count in (("trainval", 8), ("train", 4), ("val", 4), ("test", 6)):
        ids = voc_eval.read_imageset(os.path.join(main, split + ".txt"))
        assert len(ids) == count
    ids = voc_eval.read_imageset(os.path.join(main, "test.txt"))
    gts = voc_eval.load_ground_truth(os.path.join(folder, "Annotations"), ids, list(VOC_CLASSES))
    names = {c for c in VOC_CLASSES for boxes, _ in gts[c].values() if len(boxes)}
    assert names and names <= set(tiny_voc_classes())
    import cv2
    for image_id in ids:
        img = cv2.imread(os.path.join(folder, "JPEGImages", image_id + ".jpg"))
        ann = voc_eval.parse_annotation(os.path.join(folder, "Annotations", image_id + ".xml"))
        assert img.shape == (ann["height"], ann["width"], 3)
        assert ann["objects"]
        for obj in ann["objects"]:
            xmin, ymin, xmax, ymax = obj["bbox"]
            assert 1 <= xmin < xmax <= ann["width"] and 1 <= ymin < ymax <= ann["height"]
    # per-class image sets in the devkit's format
    lines = open(os.path.join(main, "cat_test.txt")).read().split("\n")
    assert all(line.split()[1] in ("-1", "0", "1") for line in lines if line)


def test_tiny_voc_is_deterministic(cifar_root, tiny_voc, tmp_path):
    make_tiny_voc(str(tmp_path), str(cifar_root), trainval=8, test=6, seed=1)
    for image_id in ("000001", "000010"):
        a = open(os.path.join(tiny_voc, "VOC2007", "Annotations", image_id + ".xml")).read()
        b = open(os.path.join(tmp_path, "VOC2007", "Annotations", image_id + ".xml")).read()
        assert a == b


# ------------------------------------------------------------------ model
def test_backbone_checkpoint_is_loaded_and_frozen_as_documented(tiny_voc, backbone, tmp_path):
    cfg = small_config(tiny_voc, backbone, tmp_path)
    net = build_detector(cfg, VOC_CLASSES, backbone, [mx.cpu()])
    saved = mx.nd.load(backbone)
    params = backbone_parameters(net)
    assert len(params) == len([k for k in saved if k.startswith("stages.")]) > 100
    for key, param in params.items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key].asnumpy(), err_msg=key)
    # stride 16 and 4b's channels (576 x 0.25) at the split
    feat = net.features(mx.nd.zeros((1, 3, 96, 128)))
    assert feat.shape == (1, 144, 6, 8)
    trainable = set(net.collect_train_params().keys())
    by_name = net.collect_params()
    for name, param in by_name.items():
        assert (param.grad_req != "null") == (name in trainable), name
    assert not any("batchnorm" in n for n in trainable)          # BN frozen everywhere
    stem = {p.name for p in net.features[:9].collect_params().values()}  # data_bn .. pool2
    assert len(stem) > 10 and not stem & trainable
    assert any(p.name in trainable for p in net.features[9].collect_params().values())  # 3a
    assert any("rpn" in n for n in trainable) and any("dense" in n for n in trainable)
    assert all(b._kwargs["use_global_stats"] for b in _batchnorms(net))


def _batchnorms(block):
    out = [block] if isinstance(block, mx.gluon.nn.BatchNorm) else []
    for child in block._children.values():
        out += _batchnorms(child)
    return out


def test_backbone_width_mismatch_is_one_clear_error(tiny_voc, backbone, tmp_path):
    cfg = small_config(tiny_voc, backbone, tmp_path, **{"backbone.width": 0.5})
    with pytest.raises(NSTError, match=r"at width 0\.5 \(its first convolution has 16 channels"
                                      r".*backbone\.width"):
        build_detector(cfg, VOC_CLASSES, backbone, [mx.cpu()])
    with pytest.raises(NSTError, match="does not exist"):
        build_detector(cfg, VOC_CLASSES, str(tmp_path / "none.params"), [mx.cpu()])


# ------------------------------------------------------------------ training
def snapshot(net):
    """{structural key: value on device 0} of every parameter (names differ between nets)."""
    return {k: p.data(p.list_ctx()[0]).asnumpy().copy()
            for k, p in net._collect_params_with_prefix().items()}


def trainable_keys(net):
    names = set(net.collect_train_params().keys())
    return {k for k, p in net._collect_params_with_prefix().items() if p.name in names}


@pytest.fixture(scope="module")
def run(tiny_voc, backbone, tmp_path_factory):
    """Train on 2 CPU contexts: stop after step 1 (SIGTERM), resume, finish, test."""
    out = tmp_path_factory.mktemp("run")
    cfg = small_config(tiny_voc, backbone, out)
    contexts = [mx.cpu(0), mx.cpu(1)]
    first = DetectionTrainer(cfg, contexts, progress=False, log=lambda *_: None)
    before = snapshot(first.net)
    first._stop_signal = signal.SIGTERM            # as if killed during the first step
    assert first.fit() is None
    stopped = json.load(open(os.path.join(out, "checkpoint.json")))
    messages = []
    second = DetectionTrainer(cfg, contexts, progress=False, log=messages.append)
    results = second.fit(resume=True)
    return {"cfg": cfg, "out": str(out), "before": before, "stopped": stopped,
            "messages": messages, "results": results, "net": second.net,
            "trainer": second}


def test_stop_writes_a_mid_epoch_checkpoint_and_resume_continues(run):
    assert run["stopped"]["epoch"] == 0 and run["stopped"]["step_in_epoch"] == 1
    assert any("resuming" in m and "step 1" in m for m in run["messages"])
    log = json.load(open(os.path.join(run["out"], "log.json")))
    assert len(log) == 1
    assert log[0]["train_images"] == 4                  # 2 steps x 2 devices, none twice
    assert np.isfinite(log[0]["loss_total"]) and log[0]["loss_total"] > 0
    assert os.path.isfile(os.path.join(run["out"], "log.csv"))
    manifest = json.load(open(os.path.join(run["out"], "checkpoint.json")))
    assert manifest["epoch"] == 1 and manifest["step_in_epoch"] == 0


def test_training_changes_trained_parameters_only(run):
    net = run["net"]
    after = snapshot(net)
    before = run["before"]
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed, "no parameter changed"
    assert changed <= trainable_keys(net)
    stem = {k for k in before if k.split(".")[:2] in [["features", str(i)] for i in range(9)]}
    assert stem and not changed & stem                           # stem frozen
    assert not any(k.endswith(("running_mean", "running_var", "gamma", "beta")) for k in changed)
    assert any(k.startswith("rpn.") for k in changed)
    assert any(k.startswith(("class_predictor.", "box_predictor.")) for k in changed)
    assert any(k.startswith("features.9.") for k in changed)   # 3a is trained
    # the replicas of the two devices agree
    for name, param in net.collect_params().items():
        copies = [c.asnumpy() for c in param.list_data()]
        np.testing.assert_allclose(copies[0], copies[1], rtol=1e-5, atol=1e-6, err_msg=name)


def test_results_and_detections_are_written_and_rescored_exactly(run, capsys):
    results = run["results"]
    assert results["metric"] == "voc07"
    assert results["mAP"] is not None and 0.0 <= results["mAP"] <= 1.0
    assert set(results["ap"]) == set(VOC_CLASSES)
    on_disk = json.load(open(os.path.join(run["out"], "results.json")))
    assert on_disk["mAP"] == results["mAP"]
    assert os.path.isfile(os.path.join(run["out"], "detector.params"))
    dets = results["detections"]
    assert os.path.isfile(dets)
    assert os.path.isfile(os.path.join(os.path.dirname(dets), "comp4_det_test_cat.txt"))
    # the first 6 test images (test_limit) as an image set, re-scored by nst voc-eval
    folder = os.path.join(run["cfg"]["data"]["voc_root"], "VOC2007")
    ids = voc_eval.read_imageset(os.path.join(folder, "ImageSets", "Main", "test.txt"))[:6]
    imageset = os.path.join(run["out"], "test6.txt")
    with open(imageset, "w") as handle:
        handle.write("\n".join(ids) + "\n")
    for source in (dets, os.path.dirname(dets)):
        assert nst_main(["voc-eval", "--dets", source, "--annotations",
                         os.path.join(folder, "Annotations"), "--imageset", imageset,
                         "--json"]) == 0
        scored = json.loads(capsys.readouterr().out)
        assert scored["mAP"] == pytest.approx(results["mAP"], abs=1e-9)
        for cls, ap in results["ap"].items():
            assert scored["ap"][cls] == (None if ap is None else pytest.approx(ap, abs=1e-9))


def test_eval_command_reloads_the_detector(run, capsys):
    code = nst_main(["detect", "eval", "--run", run["out"], "--cpus", "1", "--json",
                     "--no-progress"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mAP"] == pytest.approx(run["results"]["mAP"], abs=1e-6)
    assert os.path.isfile(os.path.join(run["out"], "eval", "detections.json"))


def test_existing_run_needs_resume(run):
    with pytest.raises(NSTError, match="--resume"):
        DetectionTrainer(run["cfg"], [mx.cpu()], progress=False, log=lambda *_: None).fit()
    again = DetectionTrainer(run["cfg"], [mx.cpu()], progress=False, log=lambda *_: None)
    assert again.fit(resume=True)["mAP"] == run["results"]["mAP"]   # finished: not retrained


# ------------------------------------------------------------------ bad data
@pytest.fixture
def broken_voc(tiny_voc, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    return root


def test_malformed_xml_is_one_clear_error(broken_voc, backbone, tmp_path, capsys):
    path = broken_voc / "VOC2007" / "Annotations" / "000002.xml"
    path.write_text("<annotation>\n  <object>\n    <name>cat</name>\n</annotation>\n")
    with pytest.raises(NSTError, match=r"000002\.xml is not well-formed XML \(line 4"):
        VOCDataset(str(broken_voc), [[2007, "trainval"]])
    code = nst_main(["detect", "train", "--config", QUICK_CONFIG, "--voc-root", str(broken_voc),
                     "--backbone", backbone, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("nst detect: error: ") and "000002.xml" in err[0]


def test_missing_image_is_one_clear_error(broken_voc, backbone, tmp_path, capsys):
    os.remove(broken_voc / "VOC2007" / "JPEGImages" / "000003.jpg")
    with pytest.raises(NSTError, match=r"000003\.jpg is missing \(listed on line 3 of .*trainval"):
        VOCDataset(str(broken_voc), [[2007, "trainval"]])
    code = nst_main(["detect", "train", "--config", QUICK_CONFIG, "--voc-root", str(broken_voc),
                     "--backbone", backbone, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "000003.jpg" in err[0]
    assert "Traceback" not in "\n".join(err)


def test_missing_voc_root_and_backbone(tmp_path, backbone, capsys):
    argv = ["detect", "train", "--config", QUICK_CONFIG, "--voc-root", str(tmp_path / "nowhere"),
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert nst_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--backbone" in err and "\n" not in err
    assert nst_main(argv + ["--backbone", backbone]) == 2
    err = capsys.readouterr().err.strip()
    assert "VOC root" in err and "nowhere" in err and "\n" not in err


def test_undecodable_image_is_one_clear_error(broken_voc):
    path = broken_voc / "VOC2007" / "JPEGImages" / "000002.jpg"
    path.write_bytes(b"not a jpeg")
    dataset = VOCDataset(str(broken_voc), [[2007, "trainval"]])
    with pytest.raises(NSTError, match=r"cannot decode image .*000002\.jpg"):
        dataset[1]


# ------------------------------------------------------------------ Table 4
def test_table4_quick_pipeline(cifar_root, backbone, tmp_path, capsys):
    """Two rows, scaled down further: one from an 'ImageNet' student found under
    --imagenet-root (the NST* row, by its nst_poly folder), one from a stand-in."""
    student = tmp_path / "imagenet" / "nst_poly" / "student.params"
    student.parent.mkdir(parents=True)
    shutil.copy(backbone, student)
    out_root = tmp_path / "voc_runs"
    argv = ["detect", "table4", "--quick", "--rows", "baseline", "nst",
            "--imagenet-root", str(tmp_path / "imagenet"), "--voc-root", str(tmp_path / "voc"),
            "--cifar-root", str(cifar_root), "--out-root", str(out_root), "--no-progress",
            "--set", "data.short=96", "--set", "data.max_size=128",
            "--set", "data.train_limit=2", "--set", "data.test_limit=3", "--set", "epochs=1"]
    assert nst_main(argv) == 0
    out = capsys.readouterr().out
    assert "NOT a reproduction" in out
    assert "| NST* | paper | 76.8 | 75.7 |" in out
    assert "| NST* | quick |" in out and "| Baseline | quick |" in out
    assert "| KD |" not in out                                   # only the chosen rows
    results = json.load(open(out_root / "table4.json"))["rows"]
    assert results["nst"]["backbone"] == str(student)
    assert results["baseline"]["backbone"].endswith(os.path.join("backbones", "baseline.params"))
    assert (out_root / "table4.md").read_text().startswith("> QUICK MODE")
    # finished rows are kept: a second call trains nothing
    assert nst_main(argv) == 0
    assert "already finished" in capsys.readouterr().out
