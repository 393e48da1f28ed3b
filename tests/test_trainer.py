"""The distillation trainer end to end on the genuine CIFAR-10 subset.

Tiny networks (ResNet-11 at quarter width as teacher, Inception-BN-small at
1/8 width as student) and a few hundred images keep every run to seconds.
"""

import json
import os
import re

import mxnet as mx
import numpy as np
import pytest
import yaml

import symbols
from nst.cli import main as nst_main
from nst.errors import NSTError
from train import checkpoint as ckpt
from train.devices import parse_contexts
from train.trainer import Distiller
from trainer_helpers import STUDENT, TEACHER, base_config


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def teacher_checkpoint(cifar_root, tmp_path_factory):
    """A teacher trained by the same trainer (one epoch), as a plain .params file."""
    out = tmp_path_factory.mktemp("teacher")
    cfg = base_config(cifar_root, out, epochs=1, student=dict(TEACHER), name="teacher")
    path = write_config(out / "teacher.yaml", cfg)
    assert nst_main(["train", path, "--no-progress"]) == 0
    return str(out / "student.params")


def distill_config(root, out, teacher_checkpoint, **extra):
    cfg = base_config(root, out, **extra)
    cfg["teacher"] = dict(TEACHER, checkpoint=teacher_checkpoint)
    cfg.setdefault("transfer", [
        {"loss": "kd", "weight": 16, "student": "logits", "teacher": "logits"},
        {"loss": "nst_poly", "weight": 25, "student": "in5b_bn", "teacher": "stage3"},
    ])
    return cfg


def params_of(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


def run(cfg, cpus=1, resume=False):
    return Distiller(load_config_dict(cfg), parse_contexts(cpus=cpus), progress=False,
                     log=lambda *_: None).fit(resume=resume)


def load_config_dict(cfg):
    from train.config import validate_config
    return validate_config(cfg)


def test_two_epoch_distillation_on_two_contexts(cifar_root, teacher_checkpoint, tmp_path):
    out = tmp_path / "kd_nst"
    cfg = distill_config(cifar_root, out, teacher_checkpoint)
    result = run(cfg, cpus=2)
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    for record in log:
        for key in ("train_top1_err", "test_top1_err", "loss_ce", "loss_kd", "loss_nst_poly",
                    "loss_total", "images_per_s", "lr"):
            assert key in record and np.isfinite(record[key]), key
        assert record["loss_nst_poly"] > 0
        total = record["loss_ce"] + 16 * record["loss_kd"] + 25 * record["loss_nst_poly"]
        assert record["loss_total"] == pytest.approx(total, rel=1e-6)
    assert log[0]["lr"] == pytest.approx(0.05) and log[1]["lr"] == pytest.approx(0.005)
    assert "train_top5_err" not in log[0]  # CIFAR-10: top-1 only
    csv = (out / "log.csv").read_text().splitlines()
    assert len(csv) == 3 and "loss_nst_poly" in csv[0]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the exported student is a plain Gluon parameter file of the student alone, and
    # the reported test error is that student's on the first 64 test images
    net = symbols.get_model("inception_bn_small", classes=10, width=0.125)
    net.load_parameters(str(out / "student.params"))
    from train import data as arrays
    test_x, test_y = arrays.load_dataset("cifar10", str(cifar_root), "test")
    info = arrays.dataset_info("cifar10")
    x = (test_x[:64].astype(np.float64) / 255 - info["mean"]) / info["std"]
    logits = net(mx.nd.array(x.transpose(0, 3, 1, 2))).asnumpy()
    expected_err = 100.0 * np.mean(logits.argmax(axis=1) != test_y[:64])
    assert result["test_top1_err"] == pytest.approx(expected_err)
    manifest = ckpt.read_manifest(str(out))
    assert manifest["epoch"] == 2 and manifest["step_in_epoch"] == 0
    assert manifest["global_step"] == 2 * (192 // 32)


def test_teacher_is_frozen(cifar_root, teacher_checkpoint, tmp_path):
    before = params_of(teacher_checkpoint)
    cfg = distill_config(cifar_root, tmp_path / "run", teacher_checkpoint, epochs=1)
    distiller = Distiller(load_config_dict(cfg), parse_contexts(), progress=False,
                          log=lambda *_: None)
    distiller.fit()
    teacher = {k: v.data().asnumpy() for k, v in
               distiller.teacher._collect_params_with_prefix().items()}
    assert set(teacher) == set(before)
    for key, value in before.items():
        np.testing.assert_array_equal(teacher[key], value)


def test_fitnet_regressor_trains_but_is_not_exported(cifar_root, teacher_checkpoint, tmp_path):
    out = tmp_path / "fitnet"
    cfg = distill_config(cifar_root, out, teacher_checkpoint, epochs=1, transfer=[
        {"loss": "fitnet", "weight": 1, "student": "in5b_bn", "teacher": "stage3"}])
    run(cfg)
    manifest = ckpt.read_manifest(str(out))
    assert "transfer0" in manifest["files"]
    exported = set(mx.nd.load(str(out / "student.params")))
    net = symbols.get_model("inception_bn_small", classes=10, width=0.125)
    assert exported == set(net._collect_params_with_prefix())


def test_resume_after_epoch_boundary_equals_uninterrupted(cifar_root, teacher_checkpoint,
                                                          tmp_path):
    full = distill_config(cifar_root, tmp_path / "full", teacher_checkpoint)
    run(full)
    part = distill_config(cifar_root, tmp_path / "part", teacher_checkpoint)
    run(dict(part, epochs=1))
    run(part, resume=True)
    a = params_of(str(tmp_path / "full" / "student.params"))
    b = params_of(str(tmp_path / "part" / "student.params"))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)
    log = json.loads((tmp_path / "part" / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]


def test_resume_mid_epoch_after_signal_equals_uninterrupted(cifar_root, teacher_checkpoint,
                                                            tmp_path, monkeypatch):
    full = distill_config(cifar_root, tmp_path / "full", teacher_checkpoint)
    run(full)
    part_cfg = distill_config(cifar_root, tmp_path / "part", teacher_checkpoint)
    distiller = Distiller(load_config_dict(part_cfg), parse_contexts(), progress=False,
                          log=lambda *_: None)
    original = distiller.trainer.step
    calls = {"n": 0}

    def step_then_signal(batch_size, **kwargs):
        original(batch_size, **kwargs)
        calls["n"] += 1
        if calls["n"] == 9:  # epoch 2, step 3: as if SIGTERM arrived
            distiller._stop_signal = 15

    monkeypatch.setattr(distiller.trainer, "step", step_then_signal)
    assert distiller.fit() is None
    manifest = ckpt.read_manifest(str(tmp_path / "part"))
    assert (manifest["epoch"], manifest["step_in_epoch"]) == (1, 3)
    run(part_cfg, resume=True)
    a = params_of(str(tmp_path / "full" / "student.params"))
    b = params_of(str(tmp_path / "part" / "student.params"))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)
    log_a = json.loads((tmp_path / "full" / "log.json").read_text())
    log_b = json.loads((tmp_path / "part" / "log.json").read_text())
    assert [r["epoch"] for r in log_b] == [1, 2]
    assert log_b[1]["train_top1_err"] == pytest.approx(log_a[1]["train_top1_err"])
    assert log_b[1]["loss_total"] == pytest.approx(log_a[1]["loss_total"], rel=1e-5)


def test_existing_run_is_not_overwritten_without_resume(cifar_root, teacher_checkpoint,
                                                        tmp_path, capsys):
    cfg = base_config(cifar_root, tmp_path / "s", epochs=1)
    path = write_config(tmp_path / "s.yaml", cfg)
    assert nst_main(["train", path, "--no-progress"]) == 0
    before = (tmp_path / "s" / "student.params").read_bytes()
    assert nst_main(["train", path, "--no-progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (tmp_path / "s" / "student.params").read_bytes() == before


def _expect_error(capsys, argv, pattern):
    code = nst_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("change, pattern", [
    (lambda c: c["data"].update(root="/nonexistent/data"), "nst data cifar10"),
    (lambda c: c["teacher"].update(network="preact_resnet20_cifar"), "does not match network"),
    (lambda c: c["teacher"].update(checkpoint="/nonexistent/t.params"), "does not exist"),
    (lambda c: c["transfer"][1].update(student="in9z"), "in9z"),
    (lambda c: c["transfer"][1].update(teacher="stage7"), "stage7"),
    (lambda c: c["transfer"][1].update(loss="mmd_magic"), "mmd_magic"),
    (lambda c: c["data"].update(dataset="imagenet21k"), "unknown dataset"),
    (lambda c: c["student"].update(network="resnet5000"), "resnet5000"),
])
def test_bad_inputs_give_one_clear_error(cifar_root, teacher_checkpoint, tmp_path, capsys,
                                         change, pattern):
    cfg = distill_config(cifar_root, tmp_path / "bad", teacher_checkpoint, epochs=1)
    change(cfg)
    path = write_config(tmp_path / "bad.yaml", cfg)
    _expect_error(capsys, ["train", path, "--no-progress"], pattern)


def test_kd_with_different_class_counts_is_refused(cifar_root, teacher_checkpoint, tmp_path,
                                                   capsys):
    # a 100-class teacher checkpoint for a 10-class student
    teacher = symbols.get_model(TEACHER["network"], classes=100, **TEACHER["params"])
    teacher.initialize()
    teacher(mx.nd.zeros((1, 3, 32, 32)))
    t100 = str(tmp_path / "t100.params")
    teacher.save_parameters(t100)
    cfg = distill_config(cifar_root, tmp_path / "bad", t100, epochs=1)
    path = write_config(tmp_path / "bad.yaml", cfg)
    _expect_error(capsys, ["train", path, "--no-progress"], "does not match|classes")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cifar_root, teacher_checkpoint,
                                                       tmp_path, capsys):
    out = tmp_path / "nan"
    cfg = distill_config(cifar_root, out, teacher_checkpoint, epochs=1)
    path = write_config(tmp_path / "nan.yaml", cfg)
    assert nst_main(["train", path, "--no-progress"]) == 0
    good = ckpt.read_manifest(str(out))
    good_student = (out / good["files"]["student"]).read_bytes()
    # continue with an absurd NST weight: the gradients overflow in epoch 2
    cfg.update(epochs=3)
    cfg["transfer"][1]["weight"] = 1e38
    path = write_config(tmp_path / "nan.yaml", cfg)
    code = nst_main(["train", path, "--no-progress", "--resume"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(r"loss term '\w+' became (nan|inf|-inf) at step \d+ \(epoch 2, batch \d+\)",
                     err), err
    assert "last good checkpoint" in err
    after = ckpt.read_manifest(str(out))
    assert after["global_step"] == good["global_step"]
    assert (out / after["files"]["student"]).read_bytes() == good_student


def test_atomic_checkpoint_leaves_previous_on_failure(cifar_root, tmp_path, monkeypatch):
    cfg = base_config(cifar_root, tmp_path / "a", epochs=1)
    distiller = Distiller(load_config_dict(cfg), parse_contexts(), progress=False,
                          log=lambda *_: None)
    distiller.fit()
    manifest = ckpt.read_manifest(str(tmp_path / "a"))

    def broken(path):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(distiller.trainer, "save_states", broken)
    with pytest.raises(NSTError, match="No space left"):
        distiller._save(5, 0, None)
    assert ckpt.read_manifest(str(tmp_path / "a")) == manifest
    leftovers = [n for n in os.listdir(tmp_path / "a" / "checkpoints") if n.startswith(".tmp")]
    assert leftovers == []


def test_demo_command_end_to_end(tmp_path, capsys):
    """`nst demo` (the README's first command) at one epoch per run and two seeds:
    every row trained per seed (the teacher once), mean ± std and per-seed values in
    demo.json, the table, its reading, curves and t-SNE written, numbers from this run."""
    out = tmp_path / "demo"
    assert nst_main(["demo", "--epochs", "1", "--seeds", "0,1", "--out-root", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "demo.json").read_text())["digits"]
    assert set(results) == {"teacher", "student", "kd", "nst_poly", "kd_nst"}
    for key, result in results.items():
        assert 0 <= result["test_top1_err"] <= 100
        assert "%.2f" % result["test_top1_err"] in printed
        folder = out / key if key == "teacher" else out / key / "seed0"
        assert (folder / "student.params").exists()
        if key != "teacher":
            assert set(result["seeds"]) == {"0", "1"}
            assert result["test_top1_err"] == pytest.approx(sum(result["seeds"].values()) / 2)
            assert result["test_top1_err_std"] == pytest.approx(
                abs(result["seeds"]["0"] - result["seeds"]["1"]) / 2 ** 0.5)
    assert results["kd_nst"]["transfer"] == [{"loss": "kd", "weight": 16.0},
                                             {"loss": "nst_poly", "weight": 50.0}]
    for png in ("demo_digits_curves.png", "demo_tsne.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "MMD^2 (poly)" in printed and "| KD+NST (poly) |" in (out / "demo.md").read_text()
    assert "What the numbers mean" in printed and "of the gap" in printed


# ---------------------------------------------------------------- trainer hooks
# Test-only losses exercising the generic hooks later methods use: list inputs
# (FSP's layer pairs), sample indices (CRD's memory bank), activity windows and
# the transfer-only stage (AB), and a loss pre-training stage (FT).
from mxnet.gluon import HybridBlock  # noqa: E402

from train.losses import register  # noqa: E402


class _PairLoss(HybridBlock):
    loss_name = "_test_pair"
    inputs = "feature"
    default_weight = 1.0
    seen_shapes = []

    def __init__(self, student_shape=None, teacher_shape=None):
        super().__init__()
        _PairLoss.seen_shapes.append((student_shape, teacher_shape))

    def hybrid_forward(self, F, student, teacher):
        s = [F.mean(F.square(f)) for f in student]
        t = [F.stop_gradient(F.mean(F.square(f))) for f in teacher]
        return F.square(s[0] - t[0]) + F.square(s[1] - t[1])


class _IndexLoss(HybridBlock):
    loss_name = "_test_index"
    inputs = "logits"
    default_weight = 1.0
    needs_index = True
    seen = []

    def __init__(self, student_shape=None, teacher_shape=None, num_samples=None):
        super().__init__()
        _IndexLoss.num_samples = num_samples

    def forward(self, student, teacher, index):  # imperative: records the indices
        _IndexLoss.seen.append(index.asnumpy().astype(int))
        return mx.nd.mean(mx.nd.square(student - teacher)) * 0


class _PretrainLoss(HybridBlock):
    loss_name = "_test_pretrain"
    inputs = "feature"
    default_weight = 1.0

    def __init__(self, student_shape=None, teacher_shape=None):
        super().__init__()
        with self.name_scope():
            self.scale = self.params.get("scale", shape=(1,), init=mx.init.Zero())

    def pretrain_params(self):
        return self.collect_params()

    def pretrain_loss(self, teacher):  # learn the teacher feature's RMS
        rms = mx.nd.sqrt(mx.nd.mean(mx.nd.square(teacher)))
        return mx.nd.square(self.scale.data(teacher.context) - rms)

    def hybrid_forward(self, F, student, teacher, scale):
        return F.mean(F.square(student)) * 0 + F.sum(scale) * 0


for _cls in (_PairLoss, _IndexLoss, _PretrainLoss):
    try:
        register(_cls)
    except ValueError:  # module imported twice
        pass


def test_list_inputs_reach_the_loss_as_lists(cifar_root, teacher_checkpoint, tmp_path):
    _PairLoss.seen_shapes.clear()
    cfg = distill_config(cifar_root, tmp_path / "pair", teacher_checkpoint, epochs=1, transfer=[
        {"loss": "_test_pair", "student": ["in4e", "in5b_bn"], "teacher": ["stage2", "stage3"]}])
    result = run(cfg)
    student_shapes, teacher_shapes = _PairLoss.seen_shapes[-1]
    assert len(student_shapes) == 2 and student_shapes[1][1:] == (8, 8)
    assert [s[0] for s in teacher_shapes] == [32, 64]  # ResNet-11 at width 0.25
    assert np.isfinite(json.loads((tmp_path / "pair" / "log.json").read_text())[0]
                       ["loss__test_pair"])
    assert result["transfer"] == [{"loss": "_test_pair", "weight": 1.0}]


def test_sample_indices_reach_index_losses(cifar_root, teacher_checkpoint, tmp_path):
    _IndexLoss.seen.clear()
    cfg = distill_config(cifar_root, tmp_path / "idx", teacher_checkpoint, epochs=1, transfer=[
        {"loss": "_test_index", "student": "logits", "teacher": "logits"}])
    run(cfg, cpus=2)
    assert _IndexLoss.num_samples == 192
    seen = np.concatenate(_IndexLoss.seen)
    assert len(seen) == 192 and sorted(seen.tolist()) == list(range(192))


def test_activity_windows_and_transfer_only_stage(cifar_root, teacher_checkpoint, tmp_path):
    cfg = distill_config(cifar_root, tmp_path / "ab", teacher_checkpoint, epochs=2, transfer=[
        {"loss": "nst_poly", "weight": 25, "student": "in5b_bn", "teacher": "stage3",
         "end_epoch": 1}])
    cfg["train"]["ce_start_epoch"] = 1
    run(cfg)
    log = json.loads((tmp_path / "ab" / "log.json").read_text())
    # epoch 1: transfer only (CE logged but not optimised); epoch 2: CE only
    assert log[0]["loss_total"] == pytest.approx(25 * log[0]["loss_nst_poly"], rel=1e-6)
    assert log[1]["loss_nst_poly"] == 0 and log[1]["loss_total"] == pytest.approx(
        log[1]["loss_ce"], rel=1e-6)


def test_loss_pretraining_stage(cifar_root, teacher_checkpoint, tmp_path):
    cfg = distill_config(cifar_root, tmp_path / "ft", teacher_checkpoint, epochs=1, transfer=[
        {"loss": "_test_pretrain", "student": "in5b_bn", "teacher": "stage3",
         "pretrain_epochs": 2}])
    messages = []
    distiller = Distiller(load_config_dict(cfg), parse_contexts(), progress=False,
                          log=messages.append)
    distiller.fit()
    assert [m for m in messages if m.startswith("pre-training _test_pretrain")][-1] \
        .startswith("pre-training _test_pretrain: epoch 2/2")
    assert float(distiller.terms[0].block.scale.data().asscalar()) > 0.01
    cfg["transfer"][0]["loss"] = "nst_poly"
    with pytest.raises(NSTError, match="no pre-training stage"):
        Distiller(load_config_dict(dict(cfg, out=str(tmp_path / "x"))), parse_contexts(),
                  progress=False, log=lambda *_: None).fit()


# ------------------------------------------- schedule and metrics (no ../shared)
# Digits (scikit-learn, always available): 48 training images in batches of
# 16 give 3 updates per epoch.

def digits_config(out, **extra):
    cfg = {"name": "d", "out": str(out), "seed": 4, "epochs": 3,
           "data": {"dataset": "digits", "batch_size": 16, "train_limit": 48,
                    "test_limit": 16, "test_batch_size": 16},
           "student": dict(STUDENT),
           "train": {"eval_every": 10}}
    cfg.update(extra)
    return load_config_dict(cfg)


def record_learning_rates(distiller, stop_after=None):
    """The learning rate of every update (``trainer.learning_rate`` right after it)."""
    rates = []
    original = distiller.trainer.step

    def step(batch_size, **kwargs):
        original(batch_size, **kwargs)
        rates.append(distiller.trainer.learning_rate)
        if stop_after is not None and len(rates) == stop_after:
            distiller._stop_signal = 15

    distiller.trainer.step = step
    return rates


@pytest.mark.parametrize("optimizer, expected", [
    # steps at epochs 1 and 2 = updates 3 and 6: update 4 is the first at the lower rate
    ({"lr": 0.4, "lr_steps": [1, 2], "lr_factor": 0.5},
     [0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1]),
    # one epoch of linear warm-up from 0 (update n of 3 at n/3 of the rate), then a step
    ({"lr": 0.4, "lr_steps": [2], "lr_factor": 0.25, "warmup_epochs": 1},
     [0.4 / 3, 0.8 / 3, 0.4, 0.4, 0.4, 0.4, 0.1, 0.1, 0.1]),
])
def test_learning_rate_at_every_update_and_after_resume(tmp_path, optimizer, expected):
    """Updates 1..4 of a run stopped after update 4 (epoch 2, step 1), then updates
    5..9 after --resume: the rates of an uninterrupted schedule."""
    cfg = digits_config(tmp_path / "part", optimizer=optimizer)
    part = Distiller(cfg, parse_contexts(), progress=False, log=lambda *_: None)
    assert part.steps_per_epoch == 3
    first = record_learning_rates(part, stop_after=4)
    assert part.fit() is None
    np.testing.assert_allclose(first, expected[:4], rtol=1e-6)
    resumed = Distiller(cfg, parse_contexts(), progress=False, log=lambda *_: None)
    rest = record_learning_rates(resumed)
    resumed.fit(resume=True)
    np.testing.assert_allclose(first + rest, expected, rtol=1e-6)
    log = json.loads((tmp_path / "part" / "log.json").read_text())
    np.testing.assert_allclose([r["lr"] for r in log], expected[2::3], rtol=1e-6)


class _TableNet(mx.gluon.Block):
    """A stand-in student whose logits for sample ``i`` are row ``i`` of a table
    (the sample number is carried in pixel [0, 0, 0])."""

    def __init__(self, table):
        super().__init__()
        self.table = mx.nd.array(table)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.asnumpy())
        return mx.nd.take(self.table.as_in_context(x.context), x[:, 0, 0, 0])


def known_logits(classes=10, n=40, seed=0):
    """Logits where sample i's label has rank ``ranks[i]`` (0 = the largest logit)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(n) % classes          # every rank 0..9 four times
    labels = rng.integers(0, classes, n)
    table = np.empty((n, classes), np.float32)
    for i in range(n):
        order = rng.permutation([c for c in range(classes) if c != labels[i]])
        ranked = np.insert(order, ranks[i], labels[i])   # classes by decreasing logit
        table[i, ranked] = np.linspace(5.0, -5.0, classes)
    return table, labels, ranks


@pytest.mark.parametrize("cpus", [1, 2])
def test_top1_top5_errors_of_known_logits(tmp_path, cpus):
    """Ten classes; the label is the k-th largest logit for k = 0..9, four samples each:
    top-1 error 90 %, top-5 error 50 %, in evaluation and in the training-time counts."""
    distiller = Distiller(digits_config(tmp_path / "m"), parse_contexts(cpus=cpus),
                          progress=False, log=lambda *_: None)
    table, labels, ranks = known_logits()
    assert 100 * np.mean(ranks > 0) == 90 and 100 * np.mean(ranks >= 5) == 50
    distiller.student = _TableNet(table)
    ids = np.arange(len(labels), dtype=np.float32)
    batches = [(np.broadcast_to(ids[s:s + 16, None, None, None], (len(ids[s:s + 16]), 3, 32, 32)),
                labels[s:s + 16].astype(np.float32)) for s in range(0, len(ids), 16)]
    result = distiller.evaluate(batches)
    assert result["top1_err"] == pytest.approx(90.0)
    assert result["top5_err"] == pytest.approx(50.0)
    log_p = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    assert result["ce"] == pytest.approx(-log_p[np.arange(len(labels)), labels].mean(), rel=1e-5)
    # the training loop's on-device counts (top-1, top-5 correct)
    counts = sum(distiller._correct_counts(mx.nd.array(table[s:s + 16]),
                                           mx.nd.array(labels[s:s + 16])).asnumpy()
                 for s in range(0, len(labels), 16))
    np.testing.assert_array_equal(counts, [4, 20])


def test_evaluation_reads_the_test_split(tmp_path, make_cifar10):
    """What the student sees in evaluation is the test_batch file, in order, channel
    planes as stored (R, G, B), normalised per channel -- not the training files."""
    root = make_cifar10(tmp_path / "data", per_file=8, test=12, seed=3)
    cfg = digits_config(tmp_path / "e", epochs=1)
    cfg["data"].update(dataset="cifar10", root=str(root), train_limit=32, test_limit=None,
                       test_batch_size=5)
    distiller = Distiller(cfg, parse_contexts(), progress=False, log=lambda *_: None)
    import pickle
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    planes = np.asarray(raw[b"data"], np.float64).reshape(12, 3, 32, 32)
    recorder = _TableNet(np.zeros((1, 10), np.float32))
    recorder.forward = lambda x: recorder.seen.append(x.asnumpy()) or mx.nd.zeros(
        (x.shape[0], 10), ctx=x.context)
    distiller.student = recorder
    result = distiller.evaluate()
    seen = np.concatenate(recorder.seen)
    assert seen.shape == (12, 3, 32, 32)
    for c in range(3):  # an increasing affine map of each stored plane
        a, b = np.polyfit(planes[:, c].ravel(), seen[:, c].ravel(), 1)
        assert a > 0
        np.testing.assert_allclose(seen[:, c], a * planes[:, c] + b, atol=1e-4)
    labels = np.asarray(raw[b"labels"])
    assert result["top1_err"] == pytest.approx(100 * np.mean(labels != 0))
