"""Bad input across every command: one clear line, exit status 2, nothing lost.

Each case prepares its inputs in a fresh folder that already holds outputs of
an earlier run (``keep/``); the command must fail with one line on stderr
naming the problem (no traceback), exit with status 2, and leave every
existing file byte-for-byte as it was.
"""

import errno
import os
import pickle
import re

import mxnet as mx
import numpy as np
import pytest
import yaml

import symbols
from nst.cli import main as nst_main


def _config(tmp, **changes):
    cfg = {"name": "bad", "out": str(tmp / "keep"), "epochs": 1,
           "data": {"dataset": "digits", "batch_size": 32, "train_limit": 64,
                    "test_limit": 32},
           "student": {"network": "inception_bn_small", "params": {"width": 0.25}}}
    for key, value in changes.items():
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    path = tmp / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _teacher(tmp, classes=10):
    net = symbols.get_model("preact_resnet11_cifar", classes=classes, width=0.25)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = tmp / ("teacher%d.params" % classes)
    net.save_parameters(str(path))
    return str(path)


def _distill(tmp, teacher=None, **changes):
    teacher = teacher or _teacher(tmp)
    changes.setdefault("teacher", {"network": "preact_resnet11_cifar",
                                   "params": {"width": 0.25}, "checkpoint": teacher})
    changes.setdefault("transfer", [
        {"loss": "kd", "student": "logits", "teacher": "logits"},
        {"loss": "nst_poly", "student": "in5b_bn", "teacher": "stage3"}])
    return _config(tmp, **changes)


def _cifar_folder(tmp, corrupt):
    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    corrupt(folder / "data_batch_3")
    return str(tmp / "cifar")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch %s" % os.environ["NST_EVIL_MARKER"],))


def _evil_pickle(path):
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2))


def _voc(tmp, xml):
    ann = tmp / "voc" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "000001.xml").write_text(xml)
    imageset = tmp / "voc" / "test.txt"
    imageset.write_text("000001\n")
    dets = tmp / "voc" / "dets"
    dets.mkdir()
    (dets / "comp4_det_test_cat.txt").write_text("000001 0.9 1 1 10 10\n")
    return ["voc-eval", "--dets", str(dets), "--annotations", str(ann),
            "--imageset", str(imageset)]


CASES = {
    # ---- nst train: configs
    "missing config": (lambda t: ["train", str(t / "nope.yaml")], "does not exist"),
    "unknown key": (lambda t: ["train", _config(t, **{"data.batchsize": 3})],
                    r"unknown key 'data.batchsize' \(did you mean 'batch_size'\?\)"),
    "wrong type": (lambda t: ["train", _config(t, epochs="ten")], "must be an integer"),
    "python tag in yaml": (lambda t: ["train", str(_write(
        t / "tag.yaml", "name: !!python/object/apply:os.getcwd []\nepochs: 1\n"))],
        "not valid YAML"),
    "extends a missing file": (lambda t: ["train", str(_write(
        t / "child.yaml", "extends: parent.yaml\nname: x\n"))], "parent.yaml does not exist"),
    "bad --set": (lambda t: ["train", _config(t), "--set", "epochs"], "key=value"),
    # ---- nst train: names
    "unknown network": (lambda t: ["train", _config(t, **{"student.network": "resnet5000"})],
                        "resnet5000"),
    "unknown feature": (lambda t: ["train", _distill(t, transfer=[
        {"loss": "nst_poly", "student": "in9z", "teacher": "stage3"}])], "in9z"),
    "unknown loss": (lambda t: ["train", _distill(t, transfer=[
        {"loss": "mmd_magic", "student": "in5b", "teacher": "stage3"}])],
        "unknown transfer loss 'mmd_magic'"),
    "unknown loss parameter": (lambda t: ["train", _distill(t, transfer=[
        {"loss": "kd", "student": "logits", "teacher": "logits", "params": {"tau": 3}}])],
        "tau"),
    "unknown dataset": (lambda t: ["train", _config(t, **{"data.dataset": "mnist"})],
                        "unknown dataset 'mnist'"),
    # ---- nst train: files
    "missing data root": (lambda t: ["train", _config(t, **{"data.dataset": "cifar10",
                                                           "data.root": str(t / "none")})],
                          "nst data cifar10"),
    "truncated CIFAR batch": (lambda t: ["train", _config(t, **{
        "data.dataset": "cifar10", "data.root": _cifar_folder(
            t, lambda p: p.write_bytes(p.read_bytes()[:100]))})], "data_batch_3"),
    "garbage CIFAR batch": (lambda t: ["train", _config(t, **{
        "data.dataset": "cifar10", "data.root": _cifar_folder(
            t, lambda p: p.write_bytes(b"\x00garbage" * 50))})], "data_batch_3"),
    "crafted CIFAR pickle": (lambda t: ["train", _config(t, **{
        "data.dataset": "cifar10", "data.root": _cifar_folder(t, _evil_pickle)})],
        "data_batch_3"),
    "missing teacher checkpoint": (lambda t: ["train", _distill(t, teacher=str(t / "no.params"))],
                                   "does not exist"),
    "mismatched teacher checkpoint": (lambda t: ["train", _config(t, teacher={
        "network": "preact_resnet20_cifar", "checkpoint": _teacher(t)}, transfer=[
        {"loss": "kd", "student": "logits", "teacher": "logits"}])], "does not match network"),
    "teacher with other class count": (lambda t: ["train", _distill(t, teacher=_teacher(t, 100))],
                                       "does not match"),
    "output folder is a file": (lambda t: ["train", _config(t, out=str(_write(
        t / "afile", "x") / "run"))], "cannot create the run folder"),
    "no GPU": (lambda t: ["train", _config(t), "--gpus", "0"], "GPU 0 requested"),
    "RecordIO without index": (lambda t: ["train", _config(t, **{
        "data.dataset": "imagenet", "data.root": str(_rec_without_index(t))})], r"\.idx"),
    # ---- other commands
    "demo output is a file": (lambda t: ["demo", "--out-root", str(_write(t / "f", "x") / "d")],
                              "cannot (create|write)"),
    "data: wrong checksum": (lambda t: ["data", "cifar10", "--root", str(t / "d"), "--archive",
                                        str(_write(t / "a.tar.gz", "not an archive"))],
                             "MD5|checksum"),
    "data: unknown dataset": (lambda t: ["data", "mnist"], "invalid choice: 'mnist'"),
    "tsne: missing checkpoint": (lambda t: ["tsne", "--teacher", str(t / "none"),
                                            str(t / "none2")], "does not exist"),
    "voc-eval: malformed XML": (lambda t: _voc(t, "<annotation><object>"), "000001.xml"),
    "voc-eval: entity in XML": (lambda t: _voc(t, '<!DOCTYPE a [<!ENTITY x "y">]><annotation/>'),
                                "000001.xml"),
    "tables: unreadable results": (lambda t: ["tables", "--table", "table1", "--runs",
                                              str(_bad_results(t))], "unreadable"),
    "bench: unknown benchmark": (lambda t: ["bench", "gpus"], "invalid choice: 'gpus'"),
    "unknown command": (lambda t: ["trian"], "unknown command 'trian'"),
}


def _write(path, text):
    path.write_text(text)
    return path


def _rec_without_index(tmp):
    folder = tmp / "rec"
    folder.mkdir()
    record = mx.recordio.MXRecordIO(str(folder / "train.rec"), "w")
    record.write(mx.recordio.pack(mx.recordio.IRHeader(0, 0, 0, 0), b"x"))
    record.close()
    (folder / "classes.txt").write_text("a\nb\n")
    return folder


def _bad_results(tmp):
    row = tmp / "runs" / "cifar10" / "kd"
    row.mkdir(parents=True)
    (row / "results.json").write_text("{not json")
    return tmp / "runs"


def _snapshot(folder):
    return {os.path.relpath(os.path.join(root, name), folder):
            open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(folder) for name in names}


def test_at_least_twenty_cases_across_all_commands():
    assert len(CASES) >= 20
    names = " ".join(CASES)
    for family in ("demo", "data", "tsne", "voc-eval", "tables", "bench"):
        assert family in names


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_error(case, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "evil-ran"
    monkeypatch.setenv("NST_EVIL_MARKER", str(marker))
    keep = tmp_path / "keep"
    (keep / "checkpoints").mkdir(parents=True)
    (keep / "results.json").write_text('{"test_top1_err": 1.0}\n')
    (keep / "checkpoints" / "step000000001-student.params").write_bytes(b"earlier run")
    before = _snapshot(keep)
    make, pattern = CASES[case]
    argv = make(tmp_path)
    capsys.readouterr()
    code = nst_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    assert _snapshot(keep) == before
    assert not marker.exists()


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, capsys,
                                                                     monkeypatch):
    cfg = _config(tmp_path, out=str(tmp_path / "run"), epochs=2)
    assert nst_main(["train", cfg, "--no-progress", "--set", "epochs=1"]) == 0
    before = _snapshot(tmp_path / "run")
    real_replace = os.replace

    def full_disk(src, dst):
        if "checkpoint" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    capsys.readouterr()
    code = nst_main(["train", cfg, "--no-progress", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
    after = _snapshot(tmp_path / "run")
    for name, data in before.items():
        if name.startswith("log"):  # epoch 2 was logged before its checkpoint failed
            continue
        assert after[name] == data, name
    assert not [n for n in after if os.path.basename(n).startswith(".tmp")]
