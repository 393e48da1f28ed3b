"""ImageNet path: packing image folders into RecordIO, the ImageRecordIter batches,
teachers from symbol checkpoints, a KD+NST run on RecordIO data, corrupt files.

Everything runs on a tiny ImageNet-style folder of real JPEG photographs (crops
of scikit-learn's sample photos, which ship with scikit-learn), so no test
needs /work/shared; the one test on upscaled CIFAR-10 images skips without it.
"""

import json
import os
import re
import shutil
import struct

import mxnet as mx
import numpy as np
import pytest
import yaml

import symbols
from nst import cli
from nst.errors import NSTError
from train.data import recordio as imagenet
from train.config import load_config, validate_config
from train.devices import parse_contexts
from train.data.pack import list_classes, make_tiny_imagenet, pack
from train.trainer import Distiller

CLASSES, PER_CLASS = 4, 12


def _args_of(rec):
    return {"root": rec, "image_size": 32, "val_resize": 36, "threads": 1, "augment": True,
            "flip": True, "test_batch_size": 5, "train_limit": None, "test_limit": None}


def read_records(folder, split):
    """``[(label, id, image HxWx3 BGR), ...]`` of a packed split, in file order."""
    import cv2
    rec, idx = imagenet.split_paths(str(folder), split)
    reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    out = []
    for key in sorted(reader.keys):
        header, payload = mx.recordio.unpack(reader.read_idx(key))
        out.append((header.label, header.id,
                    cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)))
    reader.close()
    return out


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    return make_tiny_imagenet(str(tmp_path_factory.mktemp("tiny") / "images"), classes=CLASSES,
                              per_class=PER_CLASS, size=48, seed=1, source="photos")


@pytest.fixture(scope="module")
def packed(tiny_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "data"
    pack(tiny_images, str(out), val_fraction=0.25, resize=40, quality=90, threads=2,
         progress=False, log=lambda *_: None)
    return out


# --------------------------------------------------------------------- pack
def test_pack_writes_classes_records_and_labels(tiny_images, packed, tmp_path):
    classes = list_classes(tiny_images)
    assert (packed / "classes.txt").read_text().split() == classes == \
        ["n%08d" % c for c in range(CLASSES)]
    stats = json.loads((packed / "pack.json").read_text())
    assert (stats["train"], stats["val"]) == (36, 12) and stats["skipped"] == []
    train, val = read_records(packed, "train"), read_records(packed, "val")
    assert len(train) == 36 and len(val) == 12
    assert len((packed / "train.idx").read_text().splitlines()) == 36
    # every class: 9 training and 3 validation images, labels = class-folder index
    for records, per_class in ((train, 9), (val, 3)):
        labels = [int(r[0]) for r in records]
        assert sorted(labels) == sorted(list(range(CLASSES)) * per_class)
        assert all(min(r[2].shape[:2]) == 40 and r[2].shape[2] == 3 for r in records)
    # validation in listing (class) order, training shuffled (dist_sync parts mix classes)
    assert [int(r[0]) for r in val] == sorted(int(r[0]) for r in val)
    assert [int(r[0]) for r in train] != sorted(int(r[0]) for r in train)
    # deterministic: packing again gives the same bytes; no temporary files are left
    again = tmp_path / "again"
    pack(tiny_images, str(again), val_fraction=0.25, resize=40, quality=90, threads=1,
         progress=False, log=lambda *_: None)
    for name in ("train.rec", "train.idx", "val.rec", "val.idx", "classes.txt"):
        assert (again / name).read_bytes() == (packed / name).read_bytes()
    assert sorted(os.listdir(again)) == ["classes.txt", "pack.json", "train.idx", "train.rec",
                                         "val.idx", "val.rec"]


def test_pack_with_val_dir_and_bad_trees(tiny_images, tmp_path):
    val_dir = tmp_path / "val"
    shutil.copytree(os.path.join(tiny_images, "n00000002"), val_dir / "n00000002")
    (val_dir / "n00000002" / "broken.jpg").write_bytes(b"not a jpeg")
    logs = []
    stats = pack(tiny_images, str(tmp_path / "out"), val_dir=str(val_dir), resize=0,
                 threads=2, progress=False, log=logs.append)
    assert (stats["train"], stats["val"]) == (48, 12) and len(stats["skipped"]) == 1
    assert "skipped 1 unreadable" in logs[0]
    assert {int(r[0]) for r in read_records(tmp_path / "out", "val")} == {2}
    assert min(read_records(tmp_path / "out", "val")[0][2].shape[:2]) == 48  # --resize 0
    (val_dir / "n09999999").mkdir()
    (val_dir / "n09999999" / "x.jpg").write_bytes((val_dir / "n00000002" /
                                                   "n00000002_0.JPEG").read_bytes())
    with pytest.raises(NSTError, match="class folders that .* lacks: n09999999"):
        pack(tiny_images, str(tmp_path / "out2"), val_dir=str(val_dir), progress=False)
    with pytest.raises(NSTError, match="no class sub-folders"):
        pack(str(tmp_path / "out"), str(tmp_path / "out3"), progress=False)
    assert not (tmp_path / "out3" / "train.rec").exists()


def test_tiny_imagenet_from_cifar(cifar_root, tmp_path):
    """The quick run's source: upscaled genuine CIFAR-10 photos, class k = CIFAR class k."""
    folder = make_tiny_imagenet(str(tmp_path / "img"), classes=3, per_class=2, size=64,
                                cifar_root=str(cifar_root), source="cifar")
    import cv2
    files = sorted(os.listdir(os.path.join(folder, "n00000001")))
    assert files == ["n00000001_0.JPEG", "n00000001_1.JPEG"]
    image = cv2.imread(os.path.join(folder, "n00000001", files[0]))
    assert image.shape == (64, 64, 3) and image.std() > 10


# ---------------------------------------------------------------- iterators
def _epoch(batches, epoch, start=0):
    return [(d.asnumpy().copy(), l.asnumpy().copy()) for d, l in batches.iter_epoch(epoch, start)]


def test_iterators_shapes_determinism_and_full_validation(packed):
    source = imagenet.record_source(_args_of(str(packed)), seed=7, local_batch=8)
    assert source.classes == CLASSES and source.image_shape == (3, 32, 32)
    train, test = source.train, source.test
    assert len(train) == 36 // 8 and len(test) == 3  # 12 images in batches of 5, 5, 2
    first = _epoch(train, 0)
    assert len(first) == 4
    for data, label in first:
        assert data.shape == (8, 3, 32, 32) and data.dtype == np.float32
        assert label.shape == (8,) and set(label.astype(int)) <= set(range(CLASSES))
        assert np.all(label == label.astype(int))
    stacked = np.concatenate([d for d, _ in first])
    assert abs(stacked.mean()) < 1.0 and 0.3 < stacked.std() < 2.0  # mean/std normalised
    # the same epoch gives the same batches (resume), another epoch others
    again = _epoch(train, 0)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(first, again))
    resumed = _epoch(train, 0, start=2)
    assert len(resumed) == 2 and np.array_equal(resumed[0][0], first[2][0])
    other = _epoch(train, 1)
    assert not np.array_equal(np.concatenate([d for d, _ in other]), stacked)
    # validation: every image exactly once, in file order, identical on every pass
    val = _epoch(test, 0)
    assert [len(l) for _, l in val] == [5, 5, 2]
    labels = np.concatenate([l for _, l in val]).astype(int)
    assert labels.tolist() == [int(r[0]) for r in read_records(packed, "val")]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(val, _epoch(test, 3)))
    # test_limit: the first images only
    limited = imagenet.record_source(dict(_args_of(str(packed)), test_limit=7), seed=7,
                                     local_batch=8).test
    labels7 = [l for _, l in _epoch(limited, 0)]
    assert [len(l) for l in labels7] == [5, 2]
    assert np.concatenate(labels7).astype(int).tolist() == labels.tolist()[:7]


def test_training_parts_for_dist_sync_workers(packed):
    """Two workers read disjoint halves of the training set (no augmentation: compare images)."""
    cfg = dict(_args_of(str(packed)), augment=False)
    seen = []
    for rank in (0, 1):
        source = imagenet.record_source(cfg, seed=0, local_batch=6, rank=rank, num_workers=2)
        assert len(source.train) == 3 and len(source.test) == 3
        seen.append({d.tobytes() for data, _ in _epoch(source.train, 0) for d in data})
    assert len(seen[0]) == len(seen[1]) == 18 and not seen[0] & seen[1]
    assert imagenet.part_range(50, 2, 3) == (34, 50) and imagenet.part_range(5, 3, 4) == (5, 5)


def test_training_augmentation_is_fb_resnet_style(packed):
    """Random-sized crops, flips and colour changes: the same image differs across epochs,
    and the validation transform is the plain resize + centre crop."""
    cfg = _args_of(str(packed))
    args = imagenet.iterator_args(cfg, train=True)
    assert args["random_resized_crop"] and args["rand_mirror"]
    assert (args["min_random_area"], args["max_random_area"]) == (0.08, 1.0)
    assert (args["min_aspect_ratio"], args["max_aspect_ratio"]) == (0.75, 4.0 / 3.0)
    assert args["brightness"] == args["contrast"] == args["saturation"] == 0.4
    assert args["pca_noise"] == 0.1
    val_args = imagenet.iterator_args(cfg, train=False)
    assert val_args["resize"] == 36 and "random_resized_crop" not in val_args
    batches = imagenet.RecordBatches(*imagenet.split_paths(str(packed), "train"), 36, 36, args,
                                     train=False)  # file order, so epochs are comparable
    a, b = _epoch(batches, 0)[0][0], _epoch(batches, 1)[0][0]
    assert not np.allclose(a, b)


# ----------------------------------------------------- checkpoint teachers
def original_resnet_symbol(classes=CLASSES, filters=(8, 16, 24, 32)):
    """A tiny pre-activation ResNet with the layer names of the original NST code's
    teacher symbol (bn_data on raw pixels, ..., bn1, relu1, pool1, fc1, softmax)."""
    data = mx.sym.var("data")
    body = mx.sym.BatchNorm(data, fix_gamma=True, eps=2e-5, name="bn_data")
    body = mx.sym.Convolution(body, num_filter=filters[0], kernel=(3, 3), stride=(2, 2),
                              pad=(1, 1), no_bias=True, name="conv0")
    body = mx.sym.Activation(mx.sym.BatchNorm(body, fix_gamma=False, name="bn0"),
                             act_type="relu", name="relu0")
    body = mx.sym.Pooling(body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max",
                          name="pooling0")
    for i, channels in enumerate(filters[1:]):
        name = "stage%d_unit1" % (i + 1)
        act1 = mx.sym.Activation(mx.sym.BatchNorm(body, fix_gamma=False, name=name + "_bn1"),
                                 act_type="relu", name=name + "_relu1")
        conv1 = mx.sym.Convolution(act1, num_filter=channels, kernel=(3, 3), stride=(2, 2),
                                   pad=(1, 1), no_bias=True, name=name + "_conv1")
        act2 = mx.sym.Activation(mx.sym.BatchNorm(conv1, fix_gamma=False, name=name + "_bn2"),
                                 act_type="relu", name=name + "_relu2")
        conv2 = mx.sym.Convolution(act2, num_filter=channels, kernel=(3, 3), pad=(1, 1),
                                   no_bias=True, name=name + "_conv2")
        short = mx.sym.Convolution(act1, num_filter=channels, kernel=(1, 1), stride=(2, 2),
                                   no_bias=True, name=name + "_sc")
        body = conv2 + short
    bn1 = mx.sym.BatchNorm(body, fix_gamma=False, name="bn1")
    relu1 = mx.sym.Activation(bn1, act_type="relu", name="relu1")
    pool1 = mx.sym.Pooling(relu1, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    fc1 = mx.sym.FullyConnected(mx.sym.Flatten(pool1, name="flatten0"), num_hidden=classes,
                                name="fc1")
    return mx.sym.SoftmaxOutput(fc1, name="softmax")


@pytest.fixture(scope="module")
def symbol_teacher(tmp_path_factory):
    """``<prefix>-symbol.json`` + ``<prefix>-0000.params`` of the tiny original-style ResNet,
    trained on raw 0-255 pixels (its bn_data statistics hold the pixel mean/variance)."""
    prefix = str(tmp_path_factory.mktemp("teacher") / "resnet-tiny")
    sym = original_resnet_symbol()
    mx.random.seed(0)
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 3, 32, 32))], label_shapes=[("softmax_label", (1,))],
             for_training=False)
    mod.init_params(mx.init.Xavier(magnitude=2))
    arg, aux = mod.get_params()
    aux["bn_data_moving_mean"][:] = 115.0
    aux["bn_data_moving_var"][:] = 58.0 ** 2
    for name in aux:
        if name.endswith("moving_var") and name != "bn_data_moving_var":
            aux[name][:] = mx.nd.random.uniform(0.5, 2.0, shape=aux[name].shape)
    mod.set_params(arg, aux)
    mod.save_checkpoint(prefix, 0)
    return prefix


def test_symbol_checkpoint_teacher_matches_the_symbol(symbol_teacher):
    net = symbols.get_model("mxnet_checkpoint", classes=CLASSES,
                            features=["bn1_output", "stage2_unit1_bn1", "bn1_output"],
                            prefix=symbol_teacher, epoch=0, input_mean=[0, 0, 0],
                            input_std=[1, 1, 1])
    assert net.loads_own_weights and net.logits_name == "fc1_output"
    assert "bn1_output" in net.feature_names and "fc1_output" in net.feature_names
    rng = np.random.RandomState(0)
    raw = rng.uniform(0, 255, size=(2, 3, 32, 32)).astype(np.float32)
    normalised = (raw - np.array(imagenet.MEAN_RGB).reshape(1, 3, 1, 1)) / \
        np.array(imagenet.STD_RGB).reshape(1, 3, 1, 1)
    net.hybridize(static_alloc=True, static_shape=True)
    logits, bn1, unit, bn1_again = net(mx.nd.array(normalised))
    assert logits.shape == (2, CLASSES) and bn1.shape == (2, 32, 1, 1)
    assert unit.shape == (2, 16, 4, 4) and np.array_equal(bn1.asnumpy(), bn1_again.asnumpy())
    # reference: MXNet's own executor on the raw pixels the symbol was made for
    sym, arg, aux = mx.model.load_checkpoint(symbol_teacher, 0)
    internals = sym.get_internals()
    ref = mx.mod.Module(mx.sym.Group([internals["fc1_output"], internals["bn1_output"]]),
                        label_names=None, context=mx.cpu())
    ref.bind(data_shapes=[("data", raw.shape)], for_training=False)
    ref.set_params(arg, aux)
    ref.forward(mx.io.DataBatch([mx.nd.array(raw)]), is_train=False)
    want_logits, want_bn1 = [o.asnumpy() for o in ref.get_outputs()]
    np.testing.assert_allclose(logits.asnumpy(), want_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn1.asnumpy(), want_bn1, rtol=1e-4, atol=1e-4)
    # a second device gets its own copy of the weights, with the same result
    other = net(mx.nd.array(normalised, ctx=mx.cpu(1)))[0]
    np.testing.assert_allclose(other.asnumpy(), want_logits, rtol=1e-4, atol=1e-4)
    back = net(mx.nd.array(normalised, ctx=mx.cpu(0)))[0]
    np.testing.assert_array_equal(back.asnumpy(), logits.asnumpy())
    # logits only
    only = symbols.get_model("mxnet_checkpoint", prefix=symbol_teacher, input_mean=[0, 0, 0],
                             input_std=[1, 1, 1])
    np.testing.assert_allclose(only(mx.nd.array(normalised)).asnumpy(), want_logits,
                               rtol=1e-4, atol=1e-4)


def test_checkpoint_teacher_errors(symbol_teacher, tmp_path):
    with pytest.raises(NSTError, match=r"no internal output 'bn2_output'.*bn1_output"):
        symbols.get_model("mxnet_checkpoint", features=["bn2_output"], prefix=symbol_teacher)
    with pytest.raises(NSTError, match="does not exist.*params.prefix"):
        symbols.get_model("mxnet_checkpoint", features=[], prefix=str(tmp_path / "nope"))
    with pytest.raises(NSTError, match="unknown param.*width"):
        symbols.get_model("mxnet_checkpoint", prefix=symbol_teacher, width=0.5)
    with pytest.raises(NSTError, match="input_mean and input_std must be 3 numbers"):
        symbols.get_model("mxnet_checkpoint", prefix=symbol_teacher, input_std=[1, 0])


def test_exported_gluon_net_and_gluoncv_model_as_teachers(tmp_path):
    """A Gluon net exported to prefix files loads as mxnet_checkpoint with the same outputs;
    ``gluoncv:<model>`` runs the same machinery (pretrained=False: no download)."""
    teacher = symbols.get_model("gluoncv:resnet18_v1", classes=CLASSES, pretrained=False,
                                features=["stage4_activation1", "resnetv10_stage3_activation1"])
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 64, 64))
    logits, stage4, stage3 = teacher(x)
    assert logits.shape == (2, CLASSES) and stage4.shape == (2, 512, 2, 2)
    assert stage3.shape == (2, 256, 4, 4) and teacher.logits_name == "resnetv10_dense0_fwd_output"

    net = symbols.get_model("inception_bn", classes=CLASSES, width=0.125, features=["in5b_bn"])
    net.initialize(mx.init.Xavier())
    net.hybridize()
    want_logits, want_in5b = net(x)
    net.export(str(tmp_path / "incbn"), 0)
    heads = mx.sym.load(str(tmp_path / "incbn-symbol.json")).list_outputs()
    assert heads[1] in _names(tmp_path / "incbn")  # in5b_bn: an internal name such as
    loaded = symbols.get_model("mxnet_checkpoint", prefix=str(tmp_path / "incbn"), epoch=0,
                               features=[heads[1][:-len("_output")]])  # inceptionbn0_5b_concat0
    got_logits, got_in5b = loaded(x)
    np.testing.assert_allclose(got_logits.asnumpy(), want_logits.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_in5b.asnumpy(), want_in5b.asnumpy(), rtol=1e-5, atol=1e-5)


def _names(prefix):
    from symbols.checkpoint_teacher import list_outputs
    return list_outputs(mx.sym.load(str(prefix) + "-symbol.json"))


# --------------------------------------------------- training on RecordIO
def distill_config(packed, out, teacher_prefix, epochs=1):
    return {"name": "kd_nst_imagenet", "out": str(out), "seed": 1, "epochs": epochs,
            "data": {"dataset": "imagenet", "root": str(packed), "batch_size": 8,
                     "image_size": 32, "val_resize": 36, "test_batch_size": 12, "threads": 1,
                     "train_limit": 16},
            "student": {"network": "inception_bn", "params": {"width": 0.125}},
            "teacher": {"network": "mxnet_checkpoint",
                        "params": {"prefix": teacher_prefix, "epoch": 0,
                                   "input_mean": [0, 0, 0], "input_std": [1, 1, 1]}},
            "transfer": [
                {"loss": "kd", "weight": 16, "student": "logits", "teacher": "logits",
                 "params": {"temperature": 4}},
                {"loss": "nst_poly", "weight": 25, "student": "in5b_bn",
                 "teacher": "bn1_output"}],
            "optimizer": {"lr": 0.05, "lr_steps": [1]},
            "train": {"log_interval": 1}}


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_kd_nst_from_symbol_teacher_trains_evaluates_and_resumes(packed, symbol_teacher,
                                                                tmp_path):
    """Two iterations per epoch of KD+NST (Inception-BN student, symbol-checkpoint teacher)
    on two devices; resuming the one-epoch run to two epochs equals a straight two-epoch run."""
    straight = distill_config(packed, tmp_path / "straight", symbol_teacher, epochs=2)
    path = write_config(tmp_path / "straight.yaml", straight)
    assert cli.main(["train", path, "--cpus", "2", "--no-progress"]) == 0
    results = json.loads((tmp_path / "straight" / "results.json").read_text())
    log = json.loads((tmp_path / "straight" / "log.json").read_text())
    assert [r["train_images"] for r in log] == [16, 16]  # 2 iterations of 8 per epoch
    assert 0 <= results["test_top1_err"] <= 100
    assert [t["loss"] for t in results["transfer"]] == ["kd", "nst_poly"]
    # top-1 / top-5 of the exported student on the whole validation set
    cfg = validate_config(straight)
    distiller = Distiller(cfg, parse_contexts(cpus=1), progress=False, log=lambda *_: None)
    distiller.student.load_parameters(results["student_params"], ctx=distiller.ctx)
    scores = distiller.evaluate()
    assert scores["top1_err"] == pytest.approx(results["test_top1_err"])
    assert scores["top5_err"] == 0.0  # 4 classes: the right one is always in the top 5
    # one epoch, then --resume to two
    short = write_config(tmp_path / "short.yaml",
                         distill_config(packed, tmp_path / "resumed", symbol_teacher, epochs=1))
    assert cli.main(["train", short, "--cpus", "2", "--no-progress"]) == 0
    longer = write_config(tmp_path / "long.yaml",
                          distill_config(packed, tmp_path / "resumed", symbol_teacher, epochs=2))
    assert cli.main(["train", longer, "--cpus", "2", "--no-progress", "--resume"]) == 0
    want = mx.nd.load(str(tmp_path / "straight" / "student.params"))
    got = mx.nd.load(str(tmp_path / "resumed" / "student.params"))
    assert sorted(want) == sorted(got)
    for key in want:
        np.testing.assert_array_equal(got[key].asnumpy(), want[key].asnumpy())


# ------------------------------------------------------------ bad data sets
def _one_line_error(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def _copy(packed, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(packed, folder)
    return folder


@pytest.mark.parametrize("damage, message", [
    ("garble", r"val.rec is corrupt: no RecordIO record starts at byte \d+"),
    ("truncate", r"val.rec is corrupt: its index .* points at byte \d+ but the file has"),
    ("zeros", r"val.rec is corrupt: no RecordIO record starts at byte 0"),
    ("missing_idx", r"val.rec is a RecordIO file without its index .*val.idx"),
    ("missing_rec", r"train.rec does not exist; pack the image folders .*nst pack"),
    ("missing_classes", r"classes.txt is missing"),
    ("bad_label", r"has label 7, not a class index 0..3 of classes.txt"),
])
def test_corrupt_or_missing_files_give_one_clear_error(packed, tmp_path, capsys, damage,
                                                       message):
    folder = _copy(packed, tmp_path)
    rec = folder / "val.rec"
    data = bytearray(rec.read_bytes())
    offsets = [int(line.split("\t")[1]) for line in (folder / "val.idx").read_text().split("\n")
               if line]
    if damage == "garble":  # overwrite the middle of the file, record headers included
        rng = np.random.RandomState(0)
        middle = offsets[len(offsets) // 2] - 40
        data[middle:middle + 3000] = rng.randint(0, 256, 3000).astype(np.uint8).tobytes()
        rec.write_bytes(bytes(data))
    elif damage == "truncate":  # cut at a 4-byte boundary: MXNet's reader would take it
        rec.write_bytes(bytes(data[:offsets[-3] + 16]))
    elif damage == "zeros":
        rec.write_bytes(bytes(len(data)))
    elif damage == "missing_idx":
        (folder / "val.idx").unlink()
    elif damage == "missing_rec":
        (folder / "train.rec").unlink()
    elif damage == "missing_classes":
        (folder / "classes.txt").unlink()
    elif damage == "bad_label":  # a classes.txt that lists fewer classes than the labels
        (folder / "classes.txt").write_text("a\nb\nc\nd\n")
        header = bytearray(rec.read_bytes())
        struct.pack_into("<f", header, offsets[3] + 12, 7.0)  # magic, length, flag, label
        rec.write_bytes(bytes(header))
    cfg = distill_config(folder, tmp_path / "run", "unused")
    cfg.pop("teacher"), cfg.pop("transfer")
    err = _one_line_error(capsys, ["train", write_config(tmp_path / "c.yaml", cfg),
                                   "--no-progress"])
    assert err.startswith("nst train: error: ")
    assert re.search(message, err), err


def test_corrupt_image_data_found_while_reading(packed, tmp_path, capsys):
    """Valid record framing around garbage image bytes: found while decoding, one line."""
    folder = _copy(packed, tmp_path)
    rec = folder / "train.rec"
    data = bytearray(rec.read_bytes())
    offsets = sorted(int(line.split("\t")[1])
                     for line in (folder / "train.idx").read_text().split("\n") if line)
    start = offsets[5] + 8 + 24  # record 5 is not among the few the up-front check decodes
    data[start:start + 200] = bytes(200)
    rec.write_bytes(bytes(data))
    cfg = distill_config(folder, tmp_path / "run", "unused")
    cfg.pop("teacher"), cfg.pop("transfer")
    cfg["data"]["train_limit"] = None
    err = _one_line_error(capsys, ["train", write_config(tmp_path / "c.yaml", cfg),
                                   "--no-progress"])
    assert "reading" in err and "train.rec failed" in err and "re-create it with nst pack" in err


def test_nst_pack_command(tiny_images, packed, tmp_path, capsys, monkeypatch):
    """``nst pack`` (registered as in nst/cli.py) packs, verifies and reports errors in one line."""
    monkeypatch.setitem(cli.COMMANDS, "pack",
                        ("train.data.pack", "pack image folders into RecordIO"))
    out = tmp_path / "out"
    assert cli.main(["pack", tiny_images, str(out), "--val-fraction", "0.5", "--resize", "32",
                     "--threads", "2", "--no-progress"]) == 0
    assert json.loads((out / "pack.json").read_text())["val"] == 24
    assert cli.main(["pack", "--verify", str(out)]) == 0
    assert "all intact" in capsys.readouterr().out
    err = _one_line_error(capsys, ["pack", str(tmp_path / "missing"), str(tmp_path / "o")])
    assert "image folder" in err and "does not exist" in err
    err = _one_line_error(capsys, ["pack", tiny_images, str(tmp_path / "o"), "--val-dir",
                                   tiny_images, "--val-fraction", "0.2"])
    assert "either --val-dir or --val-fraction" in err
    rec = out / "train.rec"
    original = rec.read_bytes()
    data = bytearray(original)
    offsets = sorted(int(line.split("\t")[1])
                     for line in (out / "train.idx").read_text().split("\n") if line)
    data[offsets[5] + 8 + 24:offsets[5] + 8 + 24 + 200] = bytes(200)  # framing intact
    rec.write_bytes(bytes(data))
    err = _one_line_error(capsys, ["pack", "--verify", str(out), "--no-progress"])
    assert "train.rec is corrupt: record 5 (in file order) holds no decodable image" in err
    rec.write_bytes(original)
    (out / "val.idx").unlink()
    err = _one_line_error(capsys, ["pack", "--verify", str(out)])
    assert "without its index" in err


# ------------------------------------------------------------ configs, table
def test_imagenet_configs_follow_the_paper():
    from train.report.tables import CONFIG_DIR, table_spec

    spec = table_spec("table3")
    rows = {r["key"]: r for r in spec["rows"]}
    assert (rows["kd_nst"]["paper"]["imagenet"], rows["kd_nst"]["paper_top5"]["imagenet"]) == \
        (24.34, 7.11)
    assert rows["teacher"]["role"] == "teacher" and len(rows) == 9
    expected = {"student": [], "kd": [("kd", 16)], "fitnet": [("fitnet", 100)],
                "at": [("at", 1000)], "nst_poly": [("nst_poly", 50)],
                "kd_fitnet": [("kd", 16), ("fitnet", 100)], "kd_at": [("kd", 16), ("at", 1000)],
                "kd_nst": [("kd", 16), ("nst_poly", 50)], "teacher": []}
    for key, row in rows.items():
        cfg = load_config(str(CONFIG_DIR / row["config"]))
        schedule = ([60, 90, 120], 127, 480) if key == "teacher" else ([30, 60, 90], 100, 512)
        assert cfg["optimizer"] == {"name": "nag", "lr": 0.1, "momentum": 0.9, "wd": 1e-4,
                                    "no_wd": ["beta", "bias"], "lr_steps": schedule[0],
                                    "lr_factor": 0.1, "warmup_epochs": 0, "clip_gradient": None}
        assert (cfg["epochs"], cfg["data"]["batch_size"]) == schedule[1:]
        assert (cfg["data"]["image_size"], cfg["data"]["val_resize"]) == (224, 256)
        assert cfg["student"]["network"] == ("preact_resnet101" if key == "teacher"
                                             else "inception_bn")
        assert [(t["loss"], t["weight"]) for t in cfg["transfer"]] == expected[key]
        if cfg["transfer"]:   # the authors' ResNet-101 checkpoint, batch statistics
            assert cfg["teacher"]["network"] == "mxnet_checkpoint"
            assert cfg["teacher"]["params"]["prefix"] == "models/resnet-101"
            assert cfg["teacher"]["batchnorm"] == "batch"
        for entry in cfg["transfer"]:
            if entry["loss"] != "kd":
                assert (entry["student"], entry["teacher"]) == ("in5b_bn", "bn1")
            else:
                assert entry["params"] == {"temperature": 4}
    variant = load_config(str(CONFIG_DIR / "imagenet" / "kd_nst_checkpoint_teacher.yaml"))
    assert variant["teacher"]["network"] == "gluoncv:resnet101_v2"
    assert variant["teacher"]["params"] == {"pretrained": True}
    assert variant["teacher"]["checkpoint"] is None
    assert variant["transfer"][1]["teacher"] == "batchnorm2_fwd"
    # the shapes the losses pair at full scale: in5b 1024x7x7, bn1 2048x7x7
    student = symbols.get_model("inception_bn", classes=1000)
    teacher = symbols.get_model("preact_resnet101", classes=1000)
    assert student.feature_shapes((1, 3, 224, 224), ["in5b_bn"])["in5b_bn"] == (1, 1024, 7, 7)
    assert teacher.feature_shapes((1, 3, 224, 224), ["bn1"])["bn1"] == (1, 2048, 7, 7)


def test_table3_printout():
    measured = {"student": {"test_top1_err": 26.0, "test_top5_err": 8.5},
                "kd_nst": {"test_top1_err": 24.0, "test_top5_err": None}}
    from train.report.tables import format_table
    text = format_table("table3", {"imagenet": measured})
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    assert "| 25.74 | 26.00 | +0.26 | 8.07 | 8.50 | +0.43 |" in lines["Student"]
    assert "| 24.34 | 24.00 | -0.34 | 7.11 | — | — |" in lines["KD+NST*"]
    assert "not run" in lines["Teacher"] and "22.68" in lines["Teacher"]
    # the teacher used by default is the authors' checkpoint, with its published error
    assert "tornadomeet" in text and "top-1 22.68, top-5 6.58" in text
    gluoncv = format_table("table3", {"imagenet": measured}, teacher="gluoncv")
    assert "resnet101_v2" in gluoncv and "top-1 21.47, top-5 5.83" in gluoncv


def test_dist_sync_workers_read_their_own_parts(packed, symbol_teacher, tmp_path):
    """Two dist_sync workers (``nst launch``) on loopback: each reads its own half of
    train.rec, gradients are summed, both end with identical students."""
    import sys

    from train.launch import launch

    cfg = distill_config(packed, tmp_path / "dist", symbol_teacher, epochs=1)
    cfg["data"].update(batch_size=16, train_limit=None)
    cfg["train"]["kvstore"] = "dist_sync"
    path = write_config(tmp_path / "dist.yaml", cfg)
    command = [sys.executable, "-m", "nst.cli", "train", path, "--no-progress"]
    codes = launch(command, workers=2, servers=1, timeout=300, log_dir=str(tmp_path / "logs"))
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").iterdir()))
    assert codes == [0, 0], logs
    a = mx.nd.load(str(tmp_path / "dist" / "student.params"))
    b = mx.nd.load(str(tmp_path / "dist" / "worker1" / "student.params"))
    for key in a:
        np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy(), err_msg=key)
    log0 = json.loads((tmp_path / "dist" / "log.json").read_text())
    log1 = json.loads((tmp_path / "dist" / "worker1" / "log.json").read_text())
    # 18 of the 36 training images per worker: two local batches of 8
    assert log0[0]["train_images"] == log1[0]["train_images"] == 16
    assert log0[0]["loss_ce"] != log1[0]["loss_ce"]
