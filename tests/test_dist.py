"""Synchronisation of replicas: devices in one process, workers under ``dist_sync``.

Every test compares against a reference computed another way, so switching
the aggregation off (or summing replicas instead of averaging them) fails:

- two devices equal one device that differentiates the same two halves one
  after the other and applies the summed gradient;
- at an epoch's end every replica's BatchNorm running statistics equal the
  mean of the replicas' statistics before it (weights unchanged);
- two ``dist_sync`` workers (scheduler, server and workers on loopback, ``nst
  launch``) with 16 images each equal one process that puts each worker's
  batch on one of its two devices, batch 32.

Scikit-learn's digits: no data download or ``../shared`` needed.
"""

import json
import sys

import mxnet as mx
import numpy as np
import yaml

from train.data import build_batches
from train.config import validate_config
from train.devices import parse_contexts
from train.launch import launch
from train.trainer import Distiller
from trainer_helpers import STUDENT


def raw_config(out, **extra):
    cfg = {"name": "sync", "out": str(out), "seed": 1, "epochs": 1,
           "data": {"dataset": "digits", "batch_size": 32, "train_limit": 32,
                    "test_limit": 16, "test_batch_size": 16},
           "student": dict(STUDENT),
           "optimizer": {"lr": 0.1}}
    cfg.update(extra)
    return cfg


def distiller(out, cpus, **extra):
    return Distiller(validate_config(raw_config(out, **extra)), parse_contexts(cpus=cpus),
                     progress=False, log=lambda *_: None)


def copies_of(net):
    """name -> list of per-device NumPy copies."""
    return {k: [c.asnumpy() for c in p.list_data()]
            for k, p in net._collect_params_with_prefix().items()}


def weights_of(net):
    return {k: p for k, p in net._collect_params_with_prefix().items() if p.grad_req != "null"}


def test_two_devices_equal_one_device_on_the_same_halves(tmp_path):
    one, two = distiller(tmp_path / "one", 1), distiller(tmp_path / "two", 2)
    before = copies_of(one.student)
    for key, copies in copies_of(two.student).items():  # same seed, same initial weights
        for copy in copies:
            np.testing.assert_array_equal(copy, before[key][0], err_msg=key)
    data, label = [mx.nd.array(a) for a in next(iter(one.train_batches.iter_epoch(0)))]
    two.train_step(0, (data, label))
    # one device: each half's gradient in turn, then one update with their sum
    summed = {}
    for half in (slice(0, 16), slice(16, 32)):
        one._forward_backward(0, data[half], label[half])
        for key, param in weights_of(one.student).items():
            summed[key] = summed.get(key, 0) + param.grad().asnumpy()
    for key, param in weights_of(one.student).items():
        param.grad()[:] = summed[key]
    one.trainer.step(32)
    expected = copies_of(one.student)
    after = copies_of(two.student)
    changed = 0
    for key in weights_of(one.student):
        changed += not np.allclose(expected[key][0], before[key][0])
        for copy in after[key]:
            np.testing.assert_allclose(copy, expected[key][0], rtol=1e-4,
                                       atol=1e-6 * np.abs(expected[key][0]).max(), err_msg=key)
    assert changed > 20


def test_epoch_end_averages_every_replica(tmp_path):
    two = distiller(tmp_path / "two", 2)
    data, label = next(iter(two.train_batches.iter_epoch(0)))
    for _ in range(2):  # (the kvstore's set-up at the first update copies device 0's)
        two.train_step(0, (data, label))
    before = copies_of(two.student)
    running = [k for k in before if "running_" in k]
    assert running and any(not np.array_equal(*before[k]) for k in running)
    two._synchronise_replicas()
    after = copies_of(two.student)
    for key, copies in before.items():
        mean = (copies[0].astype(np.float64) + copies[1]) / 2
        for copy in after[key]:
            np.testing.assert_allclose(copy, mean, rtol=1e-6, atol=1e-7, err_msg=key)


def test_dist_sync_workers_equal_one_process_on_both_shards(tmp_path):
    """One update (16 images per worker, batch 32), then the epoch end."""
    out = tmp_path / "dist"
    path = tmp_path / "dist.yaml"
    path.write_text(yaml.safe_dump(raw_config(out, train={"kvstore": "dist_sync"})))
    command = [sys.executable, "-m", "nst.cli", "train", str(path), "--no-progress"]
    codes = launch(command, workers=2, servers=1, timeout=300, log_dir=str(tmp_path / "logs"))
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").iterdir()))
    assert codes == [0, 0], logs
    for folder in (out, out / "worker1"):
        record = json.loads((folder / "log.json").read_text())[0]
        assert record["train_images"] == 16  # each worker trained on its own shard

    # the reference: worker r's batch on device r of one process
    cfg = validate_config(raw_config(tmp_path / "ref"))
    shards = [next(iter(build_batches(cfg["data"], cfg["seed"], 16, rank, 2).train
                        .iter_epoch(0))) for rank in (0, 1)]
    assert not np.array_equal(shards[0][0], shards[1][0])
    reference = Distiller(cfg, parse_contexts(cpus=2), progress=False, log=lambda *_: None)
    reference.train_step(0, (np.concatenate([s[0] for s in shards]),
                             np.concatenate([s[1] for s in shards])))
    reference._synchronise_replicas()
    expected = {k: v[0] for k, v in copies_of(reference.student).items()}
    for folder in (out, out / "worker1"):
        got = {k: v.asnumpy() for k, v in mx.nd.load(str(folder / "student.params")).items()}
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-4,
                                       atol=1e-6 * max(1e-3, np.abs(expected[key]).max()),
                                       err_msg="%s: %s" % (folder.name, key))
