"""Multi-machine training through MXNet's parameter server (kvstore dist_sync).

A scheduler, one server and two workers run on loopback (``nst launch``); each
worker trains on its own shard, gradients are summed every step, and both must
end with identical parameters.
"""

import json
import sys

import mxnet as mx
import numpy as np
import yaml

from train.launch import launch


def test_dist_sync_two_workers_end_identical(cifar_root, tmp_path):
    out = tmp_path / "dist"
    cfg = {"name": "dist", "out": str(out), "seed": 1, "epochs": 2,
           "data": {"dataset": "cifar10", "root": str(cifar_root), "batch_size": 32,
                    "train_limit": 128, "test_limit": 32},
           "student": {"network": "inception_bn_small", "params": {"width": 0.125}},
           "optimizer": {"lr": 0.05}, "train": {"kvstore": "dist_sync"}}
    path = tmp_path / "dist.yaml"
    path.write_text(yaml.safe_dump(cfg))
    command = [sys.executable, "-m", "nst.cli", "train", str(path), "--no-progress"]
    codes = launch(command, workers=2, servers=1, timeout=300, log_dir=str(tmp_path / "logs"))
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").iterdir()))
    assert codes == [0, 0], logs
    a = mx.nd.load(str(out / "student.params"))
    b = mx.nd.load(str(out / "worker1" / "student.params"))
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy(), err_msg=key)
    log0 = json.loads((out / "log.json").read_text())
    log1 = json.loads((out / "worker1" / "log.json").read_text())
    # each worker trained on its own half of the data (64 images, 16 per step), so
    # without the summed gradients their parameters would have drifted apart
    assert log0[-1]["train_images"] == 64 and log1[-1]["train_images"] == 64
    assert log0[-1]["train_top1_err"] != log1[-1]["train_top1_err"] or \
        log0[-1]["loss_ce"] != log1[-1]["loss_ce"]
