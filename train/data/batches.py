"""The batches the trainer reads: a config's ``data`` section -> train and test iterators.

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
  (:class:`ArrayBatches` below, the paper's pad-crop-flip augmentation of
  :mod:`train.data.augment`);
- ``imagenet``: MXNet RecordIO files read by ``mx.io.ImageRecordIter``
  (:mod:`train.data.recordio`);
- ``folder``: an image folder, one sub-folder per class, decoded by a
  multi-worker Gluon ``DataLoader`` (:mod:`train.data.folder`).

Under ``dist_sync`` each worker reads its own shard (``rank`` of
``num_workers``) of the training set; every worker evaluates on the whole test set.
"""

import importlib
from collections import namedtuple

import numpy as np

from nst.errors import NSTError

from .augment import Augmenter, _check_images, _norm_constants, _normalize_into
from .datasets import dataset_info, load_dataset

__all__ = ["ArrayBatches", "DataSource", "SOURCES", "array_source", "build_batches"]

# class_names: the label names when the source knows them (written to <run>/classes.txt)
DataSource = namedtuple("DataSource", "train test classes image_shape class_names",
                        defaults=(None,))

# dataset name -> "module:function" building a DataSource
SOURCES = {
    "cifar10": "train.data.batches:array_source",
    "cifar100": "train.data.batches:array_source",
    "digits": "train.data.batches:array_source",
    "imagenet": "train.data.recordio:record_source",
    "folder": "train.data.folder:folder_source",
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
    train_x, train_y = load_dataset(name, dcfg["root"], "train")
    test_x, test_y = load_dataset(name, dcfg["root"], "test")
    if dcfg.get("train_limit"):
        train_x, train_y = train_x[:dcfg["train_limit"]], train_y[:dcfg["train_limit"]]
    if dcfg.get("test_limit"):
        test_x, test_y = test_x[:dcfg["test_limit"]], test_y[:dcfg["test_limit"]]
    if num_workers > 1:
        train_x, train_y = train_x[rank::num_workers], train_y[rank::num_workers]
    if len(train_x) < local_batch:
        raise NSTError("the training set has %d images, fewer than one batch of %d; lower "
                       "data.batch_size" % (len(train_x), local_batch))
    info = dataset_info(name)
    train = ArrayBatches(train_x, train_y, local_batch, shuffle=True,
                         augment=dcfg["augment"], seed=seed + 1000 * rank,
                         mean=info["mean"], std=info["std"], last_batch="discard",
                         flip=dcfg.get("flip", True))
    test = ArrayBatches(test_x, test_y, dcfg["test_batch_size"], shuffle=False,
                        augment=False, seed=0, mean=info["mean"], std=info["std"],
                        last_batch="keep")
    height, width, channels = train_x.shape[1:]
    return DataSource(train, test, info["num_classes"], (channels, height, width))


class ArrayBatches:
    """Iterate ``(data float32 (B,C,H,W), label float32 (B,))`` NumPy batches.

    The sample order (when ``shuffle``) and the augmentation of every batch
    are a pure function of ``(seed, epoch, batch index)``: call
    :meth:`set_epoch` before each epoch (a full pass also advances the epoch
    by one), and a run resumed at epoch ``e`` sees exactly the batches of an
    uninterrupted run; :meth:`iter_epoch` can even start mid-epoch.

    ``last_batch="discard"`` drops the final incomplete batch (training);
    ``"keep"`` yields it smaller (evaluation).  Every sample appears exactly
    once per epoch with ``"keep"``.
    """

    def __init__(self, images, labels, batch_size, shuffle=True, augment=False, seed=0,
                 mean=None, std=None, last_batch="discard", pad=4, flip=True):
        self.images = _check_images(images)
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iuf":
            raise NSTError("labels must be a 1-D numeric array with one label per image "
                           "(%d images, got shape %s)" % (len(images), labels.shape))
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise NSTError("batch_size must be a positive integer, not %r" % (batch_size,))
        if last_batch not in ("discard", "keep"):
            raise NSTError("last_batch must be 'discard' or 'keep', not %r" % (last_batch,))
        batch_size = int(batch_size)
        if last_batch == "discard" and batch_size > len(images):
            raise NSTError("batch_size %d is larger than the %d samples, so every batch would be "
                           "discarded: lower batch_size or use last_batch='keep'"
                           % (batch_size, len(images)))
        self.labels = labels.astype(np.float32)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.last_batch = last_batch
        self.epoch = 0
        self._augmenter = Augmenter(mean, std, pad=pad, flip=flip) if self.augment else None
        self._scale, self._shift = _norm_constants(mean, std, images.shape[3])

    def __len__(self):
        n, b = len(self.images), self.batch_size
        return n // b if self.last_batch == "discard" else -(-n // b)

    @property
    def dataset_size(self):
        """Images in the underlying data set (indices run from 0 to this - 1)."""
        return len(self.images)

    @property
    def num_samples(self):
        """Samples yielded per epoch."""
        return min(len(self) * self.batch_size, len(self.images))

    def set_epoch(self, epoch):
        """Select the epoch whose order / augmentation the next iteration produces."""
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise NSTError("epoch must be a non-negative integer, not %r" % (epoch,))
        self.epoch = int(epoch)

    def order(self, epoch=None):
        """Sample indices of an epoch, in the order they are batched."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(len(self.images))
        return np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.images))

    def iter_epoch(self, epoch, start=0, with_index=False):
        """Yield the batches of ``epoch`` from batch index ``start`` on.

        ``with_index=True`` adds each sample's index into the data set (float32),
        ``(data, label, index)``, for losses that keep per-sample state (CRD's
        memory bank).
        """
        order = self.order(epoch)
        for k in range(start, len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            batch = self.images[idx]
            if self._augmenter is not None:
                data = self._augmenter(batch, np.random.default_rng([self.seed, epoch, 1, k]))
            else:
                data = np.empty((len(idx), batch.shape[3]) + batch.shape[1:3], np.float32)
                _normalize_into(batch.transpose(0, 3, 1, 2), self._scale, self._shift, data)
            if with_index:
                yield data, self.labels[idx], idx.astype(np.float32)
            else:
                yield data, self.labels[idx]

    def __iter__(self):
        epoch = self.epoch
        yield from self.iter_epoch(epoch)
        if self.epoch == epoch:
            self.epoch = epoch + 1
