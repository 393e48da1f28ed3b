"""Data: where images come from and how they become the batches the trainer reads.

One module per source or concern:

- :mod:`~train.data.cifar`: CIFAR-10 / CIFAR-100 python batches (restricted unpickler);
- :mod:`~train.data.digits`: scikit-learn's digits as 32x32 RGB (the demo's data);
- :mod:`~train.data.datasets`: the in-memory data sets by name (classes, normalisation, loader);
- :mod:`~train.data.augment`: normalisation and the paper's pad-crop-flip augmentation;
- :mod:`~train.data.batches`: :func:`build_batches`, a config's ``data`` section -> the
  train and test iterators (in-memory arrays, RecordIO or an image folder);
- :mod:`~train.data.recordio`: ImageNet RecordIO files through ``mx.io.ImageRecordIter``;
- :mod:`~train.data.folder`: your own image folder through a Gluon ``DataLoader``;
- :mod:`~train.data.pack`: ``nst pack``, an image folder -> RecordIO;
- :mod:`~train.data.download`: ``nst data``, download, verify and extract CIFAR.

The trainer imports :func:`build_batches` from here and nothing else of the data;
the names below are the package's public interface, and a tool that needs one
source's details (RecordIO checks, packing) imports that source's module.
"""

from .augment import Augmenter, augment_batch, channel_stats, crop_flip_params, normalize_batch
from .batches import ArrayBatches, DataSource, build_batches
from .cifar import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, CIFAR_FOLDERS,
                    load_cifar, load_cifar_meta)
from .datasets import DATASETS, dataset_info, load_dataset
from .digits import load_digits_32

__all__ = [
    "CIFAR_FOLDERS", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
    "DATASETS", "ArrayBatches", "Augmenter", "DataSource", "augment_batch", "build_batches",
    "channel_stats", "crop_flip_params", "dataset_info", "load_cifar", "load_cifar_meta",
    "load_dataset", "load_digits_32", "normalize_batch",
]
