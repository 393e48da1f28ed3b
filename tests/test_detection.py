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
         "epochs": 1, "train.log_interval": 1, "optimizer.lr": 0.004}


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


#: the shared run: 2 epochs of 2 steps on 2 CPU contexts, lr x0.1 after epoch 1
RUN = {"epochs": 2, "optimizer.lr_steps": [1], "train.eval_every": 2}


def stop_at_step(trainer, count):
    """Deliver SIGTERM (as the handler would) during the ``count``-th training step."""
    calls = []
    forward_backward = trainer.forward_backward

    def counted(batch):
        calls.append(1)
        if len(calls) == count:
            trainer._stop_signal = signal.SIGTERM
        return forward_backward(batch)

    trainer.forward_backward = counted


@pytest.fixture(scope="module")
def run(tiny_voc, backbone, tmp_path_factory):
    """Train on 2 CPU contexts: stop during epoch 2, step 1 (SIGTERM), resume, finish, test.
    A copy of the stopped run folder is kept for the resume-on-other-devices tests."""
    out = tmp_path_factory.mktemp("run")
    cfg = small_config(tiny_voc, backbone, out, **RUN)
    contexts = [mx.cpu(0), mx.cpu(1)]
    first = DetectionTrainer(cfg, contexts, progress=False, log=lambda *_: None)
    before = snapshot(first.net)
    stop_at_step(first, 3)
    assert first.fit() is None
    stopped = json.load(open(os.path.join(out, "checkpoint.json")))
    stopped_copy = str(tmp_path_factory.mktemp("stopped") / "run")
    shutil.copytree(str(out), stopped_copy)
    messages = []
    second = DetectionTrainer(cfg, contexts, progress=False, log=messages.append)
    results = second.fit(resume=True)
    return {"cfg": cfg, "out": str(out), "before": before, "stopped": stopped,
            "messages": messages, "results": results, "net": second.net,
            "trainer": second, "stopped_copy": stopped_copy}


@pytest.fixture(scope="module")
def straight(run, tmp_path_factory):
    """The same run without the interruption."""
    out = tmp_path_factory.mktemp("straight")
    cfg = dict(run["cfg"], out=str(out))
    trainer = DetectionTrainer(cfg, [mx.cpu(0), mx.cpu(1)], progress=False, log=lambda *_: None)
    return {"out": str(out), "results": trainer.fit(), "net": trainer.net}


def test_stop_writes_a_mid_epoch_checkpoint_and_resume_continues(run):
    assert run["stopped"]["epoch"] == 1 and run["stopped"]["step_in_epoch"] == 1
    assert run["stopped"]["images_per_step"] == 2 and run["stopped"]["devices"] == 2
    assert any("resuming" in m and "epoch 2, step 1" in m for m in run["messages"])
    log = json.load(open(os.path.join(run["out"], "log.json")))
    assert [r["epoch"] for r in log] == [1, 2]
    assert [r["train_images"] for r in log] == [4, 4]   # 2 steps x 2 devices, none twice
    assert log[0]["lr"] == pytest.approx(0.004) and log[1]["lr"] == pytest.approx(0.0004)
    assert np.isfinite(log[1]["loss_total"]) and log[1]["loss_total"] > 0
    assert os.path.isfile(os.path.join(run["out"], "log.csv"))
    manifest = json.load(open(os.path.join(run["out"], "checkpoint.json")))
    assert manifest["epoch"] == 2 and manifest["step_in_epoch"] == 0


def test_resumed_run_equals_the_uninterrupted_run_bitwise(run, straight):
    """Stopped mid-epoch 2 and resumed == never stopped: every parameter, every logged loss
    (the RoI sampler's draws are seeded per step, the momentum and lr schedule restored)."""
    resumed, uninterrupted = snapshot(run["net"]), snapshot(straight["net"])
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)
    logs = [json.load(open(os.path.join(r["out"], "log.json"))) for r in (run, straight)]
    for a, b in zip(*logs):
        for key in ("loss_total", "loss_rpn_cls", "loss_rpn_box", "loss_rcnn_cls",
                    "loss_rcnn_box", "lr", "train_images"):
            assert a[key] == b[key], key
    assert run["results"]["mAP"] == straight["results"]["mAP"]


def _resume_argv(run, out, *extra):
    argv = ["detect", "train", "--config", QUICK_CONFIG, "--out", out, "--resume",
            "--no-progress", "--backbone", run["cfg"]["backbone"]["checkpoint"],
            "--voc-root", run["cfg"]["data"]["voc_root"]]
    for key, value in dict(SMALL, **RUN).items():
        argv += ["--set", "%s=%s" % (key, json.dumps(value))]
    return argv + list(extra)


def test_resume_at_another_global_batch_is_one_clear_error(run, tmp_path, capsys):
    out = str(tmp_path / "run")
    shutil.copytree(run["stopped_copy"], out)
    before = open(os.path.join(out, "checkpoint.json")).read()
    assert nst_main(_resume_argv(run, out, "--cpus", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nst detect: error: cannot resume")
    for fragment in ("2 images per step (2 device(s) x 1 image(s), 2 steps per epoch, now at "
                     "epoch 2, step 1)", "1 device(s) x 1 image(s) = 1",
                     "--set train.images_per_device=2"):
        assert fragment in err[0], err[0]
    assert open(os.path.join(out, "checkpoint.json")).read() == before   # nothing trained


def test_resume_on_other_devices_at_the_same_global_batch_continues(run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(run["stopped_copy"], out)
    cfg = dict(run["cfg"], out=out)
    cfg["train"] = dict(cfg["train"], images_per_device=2)
    messages = []
    results = DetectionTrainer(cfg, [mx.cpu(0)], progress=False,
                               log=messages.append).fit(resume=True)
    assert results["mAP"] is not None
    assert any("1 device(s) x 2 image(s) instead of 2 x 1: the same 2 images per step" in m
               and "(epoch 2, step 1)" in m for m in messages), messages
    log = json.load(open(os.path.join(out, "log.json")))
    assert [r["train_images"] for r in log] == [4, 4]
    assert log[1]["lr"] == pytest.approx(0.0004)       # the schedule's position carried over
    manifest = json.load(open(os.path.join(out, "checkpoint.json")))
    assert manifest["global_step"] == 4 and manifest["devices"] == 1


def test_checkpoint_without_batch_record_resumes_with_a_warning(run):
    trainer, messages = run["trainer"], []
    trainer.log = messages.append
    legacy = {k: v for k, v in run["stopped"].items()
              if k not in ("devices", "images_per_device", "images_per_step", "steps_per_epoch")}
    trainer._check_resume_batch(legacy)
    assert len(messages) == 1 and messages[0].startswith("warning: checkpoint")
    assert "assuming this run's 2 (2 device(s) x 1)" in messages[0]


def test_resume_with_another_training_set_is_refused(run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(run["stopped_copy"], out)
    cfg = dict(run["cfg"], out=out)
    cfg["data"] = dict(cfg["data"], train_limit=6)
    with pytest.raises(NSTError, match=r"trained on 4 images per epoch \(2 steps of 2\), this "
                                       r"run's training set gives 3 steps"):
        DetectionTrainer(cfg, [mx.cpu(0), mx.cpu(1)], progress=False,
                         log=lambda *_: None).fit(resume=True)


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


# ------------------------------------------- one step against GluonCV's own training step
@pytest.fixture(scope="module")
def gluoncv_step(tiny_voc, backbone, tmp_path_factory):
    """One training step of ours (2 CPU contexts, the recipe's lr 0.001, wd 5e-4, momentum
    0.9) beside GluonCV's own: its VOCDetection, FasterRCNNDefaultTrainTransform (RPN target
    generator) and FasterRCNNTrainBatchify build the batch, its ForwardBackwardTask (the
    R-CNN target generator inside the net, the four losses of train_faster_rcnn.py) runs
    forward and backward, and a gluon.Trainer with train_faster_rcnn.py's VOC optimizer
    settings steps with the batch size, on a copy of the same initial detector."""
    import random

    from gluoncv.data import VOCDetection
    from gluoncv.data.batchify import FasterRCNNTrainBatchify
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform
    from gluoncv.model_zoo.rcnn.faster_rcnn.data_parallel import ForwardBackwardTask

    from detection.data import _sample_seed
    from detection.train import split_and_load
    from train.rng import seed_step

    out = tmp_path_factory.mktemp("gluoncv_step")
    cfg = small_config(tiny_voc, backbone, out / "ours", **{
        "data.train_limit": 2, "optimizer.lr": 0.001, "optimizer.lr_steps": [14, 20]})
    full = load_config()["optimizer"]
    for key in ("lr", "wd", "momentum", "lr_factor", "warmup_steps"):
        assert cfg["optimizer"][key] == full[key], key
    ctx = [mx.cpu(0), mx.cpu(1)]
    ours = DetectionTrainer(cfg, ctx, progress=False, log=lambda *_: None)
    ours.sampler.set_epoch(0, 0)
    keys = next(iter(ours.sampler))
    our_batch = next(iter(ours.loader))
    initial = str(out / "initial.params")
    ours.net.save_parameters(initial)
    ref = build_detector(cfg, VOC_CLASSES, None, ctx)
    ref.load_parameters(initial, ctx=ctx)
    ours.net.hybridize()
    ref.hybridize()

    # GluonCV's batch: its dataset and transform, each sample's RNGs seeded as ours are
    dataset = VOCDetection(root=tiny_voc, splits=[(2007, "trainval")])
    transform = FasterRCNNDefaultTrainTransform(ref.short, ref.max_size, ref, ashape=ref.ashape,
                                                multi_stage=False)
    samples = []
    for key in keys:
        epoch, idx = divmod(key, len(ours.train_set))
        random.seed(_sample_seed(cfg["seed"], epoch, idx))
        np.random.seed(_sample_seed(cfg["seed"], epoch, idx))
        samples.append(transform(*dataset[idx]))
    ref_batch = FasterRCNNTrainBatchify(ref, len(ctx))(samples)

    loss = gluon_losses()
    ref_trainer = mx.gluon.Trainer(ref.collect_train_params(), "sgd",
                                   {"learning_rate": 0.001, "wd": 5e-4, "momentum": 0.9},
                                   kvstore=mx.kvstore.create("device"))
    task = ForwardBackwardTask(ref, ref_trainer, *loss, mix_ratio=1.0, amp_enabled=False)
    seed_step(cfg["seed"], 0, 0)   # the RoI sampler draws what our step 0 draws
    metrics = [task.forward_backward(x) for x in zip(*split_and_load(ref_batch, ctx))]
    ref_losses = np.array([[m[k].asscalar() for k in range(4)] for m in metrics])
    ref_grads = [[g.asnumpy().copy() for g in p.list_grad()]
                 for p in ref.collect_train_params().values()]
    ref_trainer.step(len(ctx))

    seed_step(cfg["seed"], 0, 0)
    our_losses = np.array([c.asnumpy() for c in ours.forward_backward(
        split_and_load(our_batch, ctx))])
    our_grads = [[g.asnumpy().copy() for g in p.list_grad()]
                 for p in ours.net.collect_train_params().values()]
    record = ours._train_epoch(0, 0, None)   # our own loop: one step, forward again, update
    return {"ours": ours, "ref": ref, "our_batch": our_batch, "ref_batch": ref_batch,
            "our_losses": our_losses, "ref_losses": ref_losses, "our_grads": our_grads,
            "ref_grads": ref_grads, "record": record, "initial": mx.nd.load(initial)}


def gluon_losses():
    """The four losses of GluonCV's train_faster_rcnn.py (its --rpn/--rcnn-smoothl1-rho)."""
    loss = mx.gluon.loss
    return (loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False), loss.HuberLoss(rho=1. / 9.),
            loss.SoftmaxCrossEntropyLoss(), loss.HuberLoss(rho=1.))


def test_training_batch_equals_gluoncv_data_pipeline(gluoncv_step):
    ours, ref = gluoncv_step["our_batch"], gluoncv_step["ref_batch"]
    assert len(ours) == len(ref) == 5                # image, label, 3 RPN target arrays
    for a, b in zip(ours, ref):
        assert len(a) == len(b) == 2                 # one shard per device
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.asnumpy(), y.asnumpy())


def test_step_losses_and_gradients_equal_gluoncv_training_step(gluoncv_step):
    ours, ref = gluoncv_step["our_losses"], gluoncv_step["ref_losses"]
    assert ours.shape == ref.shape == (2, 4)          # per device: rpn cls/box, rcnn cls/box
    assert (ref > 0).all()
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)
    record = gluoncv_step["record"]                   # the loop's log = mean over images
    for k, name in enumerate(("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box")):
        assert record["loss_" + name] == pytest.approx(ref[:, k].mean(), rel=1e-6)
    assert len(gluoncv_step["our_grads"]) == len(gluoncv_step["ref_grads"]) > 50
    nonzero = 0
    for mine, theirs in zip(gluoncv_step["our_grads"], gluoncv_step["ref_grads"]):
        for a, b in zip(mine, theirs):
            scale = max(float(np.abs(b).max()), 1e-30)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)
            nonzero += bool(np.abs(b).max() > 0)
    assert nonzero > 50


def test_step_update_equals_gluoncv_trainer_at_the_recipe_lr(gluoncv_step):
    """Our loop's update == GluonCV's trainer.step(batch) at lr 0.001 on 2 devices: the lr is
    not scaled by the images per step, the gradients are averaged over the images."""
    ours, ref, initial = gluoncv_step["ours"], gluoncv_step["ref"], gluoncv_step["initial"]
    assert ours.trainer.learning_rate == 0.001 and ours.images_per_step == 2
    mine = ours.net._collect_params_with_prefix()
    theirs = ref._collect_params_with_prefix()
    moved = 0
    for key, param in mine.items():
        a = param.data(mx.cpu(0)).asnumpy().astype(np.float64) - initial[key].asnumpy()
        b = theirs[key].data(mx.cpu(0)).asnumpy().astype(np.float64) - initial[key].asnumpy()
        if not b.any():
            assert not a.any(), key
            continue
        moved += 1
        assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b), key
    assert moved > 50


def test_lr_schedule_is_gluoncv_epoch_steps(gluoncv_step):
    """train_faster_rcnn.py multiplies the lr by 0.1 when epoch 14 (0-based) starts and never
    again in 20 epochs (its second step, 20, is the end): the update after 14 epochs of steps
    is the first at 1e-4."""
    ours = gluoncv_step["ours"]
    schedule, spe = ours.trainer._optimizer.lr_scheduler, ours.steps_per_epoch
    assert spe == 1
    assert schedule(14 * spe) == pytest.approx(0.001)
    assert schedule(14 * spe + 1) == pytest.approx(1e-4)
    assert schedule(20 * spe) == pytest.approx(1e-4)


def test_full_recipe_is_gluoncv_published_voc_run():
    """configs/voc/faster_rcnn.yaml's optimizer = the Namespace logged by GluonCV's published
    faster_rcnn_resnet50_v1b_voc run (batch_size=4, epochs=20, lr=0.001, lr_decay=0.1,
    lr_decay_epoch='14,20', lr_warmup=-1, momentum=0.9, wd=0.0005)."""
    from detection.train import GLUONCV_PUBLISHED, recipe_note

    cfg = load_config()
    o = cfg["optimizer"]
    assert (o["name"], o["lr"], o["momentum"], o["wd"], o["lr_steps"], o["lr_factor"],
            o["warmup_steps"]) == ("sgd", 0.001, 0.9, 5e-4, [14, 20], 0.1, 0)
    assert cfg["epochs"] == 20 and cfg["train"]["images_per_device"] == 1
    assert cfg["model"]["post_nms"] == -1            # GluonCV 0.10 never applies its post_nms
    assert GLUONCV_PUBLISHED == {"images_per_step": 4, "lr": 0.001}
    assert "is GluonCV's published VOC run" in recipe_note(0.001, 4, 1, 4137)
    eight = recipe_note(0.001, 8, 1, 2068)
    assert "= 8 image(s) per step" in eight and "0.5x its steps per epoch" in eight
    assert "linear-scaling rule would give lr 0.002" in eight


def test_old_lr_per_image_key_is_refused(tmp_path):
    with pytest.raises(NSTError, match=r"lr_per_image' was removed.*optimizer\.lr"):
        load_config(values={"optimizer.lr_per_image": 0.001})
    with pytest.raises(NSTError, match="finite"):
        load_config(values={"optimizer.lr": float("nan")})
    with pytest.raises(NSTError, match="post_nms"):
        load_config(values={"model.post_nms": 0})


def test_post_nms_caps_the_detections_per_image():
    from detection.train import cap_detections

    ids = np.array([0, 3, -1, 2, 2, 5, -1])
    scores = np.array([0.2, 0.9, 0.95, 0.5, 0.9, 0.1, -1])
    np.testing.assert_array_equal(cap_detections(ids, scores, 3), [-1, 3, -1, 2, 2, -1, -1])
    np.testing.assert_array_equal(cap_detections(ids, scores, 1), [-1, 3, -1, -1, -1, -1, -1])
    np.testing.assert_array_equal(cap_detections(ids, scores, -1), ids)
    np.testing.assert_array_equal(cap_detections(ids, scores, 10), ids)


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
