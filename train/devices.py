"""Devices and kvstores: ``--gpus 0,1,2,3`` on a GPU machine, ``--cpus N`` here.

Data parallelism follows MXNet's Gluon recipe: every batch is split over the
contexts (``gluon.utils.split_and_load``), each context runs forward and
backward on its part, and ``gluon.Trainer`` reduces the gradients through a
kvstore:

- ``device``: gradients summed on the devices (GPU peer-to-peer); the default.
- ``nccl``: NVIDIA NCCL all-reduce (``mxnet-cu112`` builds with NCCL).
- ``local``: gradients summed on the CPU.
- ``dist_sync``: synchronous parameter-server training across machines
  (see docs/training.md, "Several machines").  Each worker reads its own shard of the
  training data; gradients are summed over all workers every step.

Several ``mx.cpu(i)`` contexts exercise the multi-device code path on a machine
without GPUs; they share the same cores, so they are not faster.
"""

import mxnet as mx

from nst.errors import NSTError

KVSTORES = ("device", "nccl", "local", "dist_sync", "dist_device_sync")


def parse_contexts(gpus=None, cpus=None):
    """``gpus='0,1'`` -> [gpu(0), gpu(1)]; ``cpus=2`` -> [cpu(0), cpu(1)]."""
    if gpus not in (None, ""):
        try:
            ids = [int(part) for part in str(gpus).split(",") if part.strip() != ""]
        except ValueError:
            raise NSTError("--gpus must be a comma-separated list of GPU ids such as 0,1,2,3; "
                           "got %r" % (gpus,)) from None
        if not ids:
            raise NSTError("--gpus is empty; give GPU ids such as 0,1 or leave it out for CPU")
        available = mx.context.num_gpus()
        missing = [i for i in ids if i >= available]
        if missing:
            raise NSTError("GPU %s requested but this machine/MXNet build has %d GPU(s); "
                           "install mxnet-cu112 on a CUDA machine or train on CPU with --cpus N"
                           % (",".join(map(str, missing)), available))
        return [mx.gpu(i) for i in ids]
    count = 1 if cpus in (None, "") else int(cpus)
    if count < 1:
        raise NSTError("--cpus must be at least 1, got %d" % count)
    return [mx.cpu(i) for i in range(count)]


def create_kvstore(name):
    """Create the kvstore; returns (kvstore or name, rank, num_workers)."""
    if name not in KVSTORES:
        raise NSTError("unknown kvstore %r; choose one of %s" % (name, ", ".join(KVSTORES)))
    if name.startswith("dist"):
        try:
            kv = mx.kv.create(name)
        except mx.base.MXNetError as err:
            raise NSTError("could not join the parameter-server job (%s). Start training "
                           "through scripts/launch_dist.sh or set DMLC_ROLE, "
                           "DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT, DMLC_NUM_SERVER and "
                           "DMLC_NUM_WORKER" % str(err).splitlines()[0]) from err
        return kv, kv.rank, kv.num_workers
    return name, 0, 1
