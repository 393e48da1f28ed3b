"""Data sources for the trainer: a data-set name -> train and test batch iterators.

The trainer asks :func:`build_batches` for two iterators and knows nothing
else about the data.  Every iterator has the same small interface:

- ``len(batches)``: batches per epoch;
- ``batches.iter_epoch(epoch, start=0)``: yields ``(data, label)`` batches
  (NumPy arrays or NDArrays, data in NCHW float32) of that epoch from batch
  index ``start`` on, the same batches every time for the same epoch, so a run
  resumed mid-epoch sees exactly what an uninterrupted one would;
- iterating it directly (``for data, label in batches``) yields one epoch.

Sources:

- ``cifar10``, ``cifar100``, ``digits``: in-memory arrays
  (:class:`train.data.ArrayBatches`, the paper's pad-crop-flip augmentation);
- ``imagenet``: MXNet RecordIO files read by ``mx.io.ImageRecordIter``
  (:mod:`train.imagenet`);
- ``folder``: an image folder, one sub-folder per class, decoded by a
  multi-worker Gluon ``DataLoader`` (:mod:`train.folder`).

Under ``dist_sync`` each worker reads its own shard (``rank`` of
``num_workers``) of the training set; every worker evaluates on the whole test set.
"""

import importlib
from collections import namedtuple

from nst.errors import NSTError
from train import data as arrays

# class_names: the label names when the source knows them (written to <run>/classes.txt)
DataSource = namedtuple("DataSource", "train test classes image_shape class_names",
                        defaults=(None,))

# dataset name -> "module:function" building a DataSource
SOURCES = {
    "cifar10": "train.batches:array_source",
    "cifar100": "train.batches:array_source",
    "digits": "train.batches:array_source",
    "imagenet": "train.imagenet:record_source",
    "folder": "train.folder:folder_source",
}


def build_batches(dcfg, seed, local_batch, rank=0, num_workers=1):
    """The :class:`DataSource` for the ``data`` section of a config."""
    name = dcfg["dataset"]
    if name not in SOURCES:
        raise NSTError("unknown dataset %r; choose one of %s" % (name, ", ".join(SOURCES)))
    module, function = SOURCES[name].split(":")
    source = getattr(importlib.import_module(module), function)(
        dcfg, seed=seed, local_batch=local_batch, rank=rank, num_workers=num_workers)
    if len(source.train) < 1:
        raise NSTError("the training set gives no full batch of %d images; lower "
                       "data.batch_size" % local_batch)
    return source


def array_source(dcfg, seed, local_batch, rank=0, num_workers=1):
    """CIFAR-10/100 or digits as in-memory arrays with the paper's augmentation."""
    name = dcfg["dataset"]
    train_x, train_y = arrays.load_dataset(name, dcfg["root"], "train")
    test_x, test_y = arrays.load_dataset(name, dcfg["root"], "test")
    if dcfg.get("train_limit"):
        train_x, train_y = train_x[:dcfg["train_limit"]], train_y[:dcfg["train_limit"]]
    if dcfg.get("test_limit"):
        test_x, test_y = test_x[:dcfg["test_limit"]], test_y[:dcfg["test_limit"]]
    if num_workers > 1:
        train_x, train_y = train_x[rank::num_workers], train_y[rank::num_workers]
    if len(train_x) < local_batch:
        raise NSTError("the training set has %d images, fewer than one batch of %d; lower "
                       "data.batch_size" % (len(train_x), local_batch))
    info = arrays.dataset_info(name)
    train = arrays.ArrayBatches(train_x, train_y, local_batch, shuffle=True,
                                augment=dcfg["augment"], seed=seed + 1000 * rank,
                                mean=info["mean"], std=info["std"], last_batch="discard",
                                flip=dcfg.get("flip", True))
    test = arrays.ArrayBatches(test_x, test_y, dcfg["test_batch_size"], shuffle=False,
                               augment=False, seed=0, mean=info["mean"], std=info["std"],
                               last_batch="keep")
    height, width, channels = train_x.shape[1:]
    return DataSource(train, test, info["num_classes"], (channels, height, width))
