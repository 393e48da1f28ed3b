"""PASCAL VOC for the detector: GluonCV's ``VOCDetection``, checked, with safe XML.

:class:`VOCDataset` is GluonCV's :class:`~gluoncv.data.VOCDetection` (same
items, same label rows ``[xmin, ymin, xmax, ymax, class, difficult]`` in
0-based pixels, i.e. the XML's 1-based coordinates minus one, same handling
of invalid boxes) with three changes:

* every image-set file, annotation and image is checked when the dataset is
  built, and any missing or malformed file is one :class:`NSTError` naming it
  (instead of a traceback in the middle of an epoch);
* annotations are parsed with :func:`tools.voc_eval.parse_annotation`, which
  refuses DOCTYPE/entity declarations;
* the class list is a parameter (default: the 20 VOC classes).

The loaders follow GluonCV's ``train_faster_rcnn.py``: one image per device,
``FasterRCNNDefaultTrainTransform`` (resize, random flip, normalise, RPN
targets computed on the CPU workers) and ``FasterRCNNTrainBatchify`` for
training, ``FasterRCNNDefaultValTransform`` for testing.  In addition the
order of the training images and every random flip are a function of
``(seed, epoch, position)`` (:class:`EpochBatchSampler`,
:class:`SeededTransform`), so a resumed run sees exactly the images and flips
of an uninterrupted one.
"""

import logging
import os
import random

import mxnet as mx
import numpy as np
from mxnet.gluon.data import Dataset

from nst.errors import NSTError
from tools.voc_eval import VOC_CLASSES, parse_annotation

__all__ = ["VOCDataset", "SeededTransform", "IndexedTransform", "EpochBatchSampler",
           "train_loader", "test_loader"]


def _split_folder(root, subfolder):
    return os.path.join(root, ("VOC%d" % subfolder) if isinstance(subfolder, int)
                        else str(subfolder))


class VOCDataset(Dataset):
    """Images and labels of VOC image sets (GluonCV ``VOCDetection`` semantics).

    Parameters
    ----------
    root : str
        The VOC root holding ``VOC2007/``, ``VOC2012/`` (GluonCV's
        ``~/.mxnet/datasets/voc`` layout, or ``VOCdevkit/``).
    splits : list of (year or folder, image set)
        e.g. ``[(2007, 'trainval'), (2012, 'trainval')]``.
    classes : list of str, optional
        Foreground classes (default: the 20 VOC classes); objects of other
        classes are ignored.
    skip_empty : bool
        Drop images without any object of ``classes`` (for training).
    limit : int, optional
        Keep only the first ``limit`` images.
    """

    def __init__(self, root, splits, classes=None, skip_empty=False, limit=None):
        super(VOCDataset, self).__init__()
        self._root = os.path.expanduser(root)
        self.classes = list(classes or VOC_CLASSES)
        self.index_map = {c: i for i, c in enumerate(self.classes)}
        self._splits = [tuple(s) for s in splits]
        if not os.path.isdir(self._root):
            raise NSTError("VOC root %s does not exist; download PASCAL VOC 2007 + 2012 (e.g. "
                           "GluonCV's scripts/datasets/pascal_voc.py, which writes "
                           "~/.mxnet/datasets/voc) and pass --voc-root, or make the tiny "
                           "dataset with `nst detect make-tiny-voc`" % self._root)
        items = []
        for subfolder, name in self._splits:
            folder = _split_folder(self._root, subfolder)
            path = os.path.join(folder, "ImageSets", "Main", name + ".txt")
            if not os.path.isfile(path):
                raise NSTError("image-set file %s does not exist; is %s a VOC root with "
                               "VOC%s/ImageSets/Main/%s.txt?" % (path, self._root, subfolder,
                                                                  name))
            with open(path, "r", encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    fields = line.split()
                    if fields:
                        items.append((folder, fields[0], path, number))
        if limit:
            items = items[:limit]
        if not items:
            raise NSTError("the image sets %s of %s list no images"
                           % (", ".join("%s/%s" % s for s in self._splits), self._root))
        missing = [(os.path.join(f, "JPEGImages", i + ".jpg"), p, n) for f, i, p, n in items
                   if not os.path.isfile(os.path.join(f, "JPEGImages", i + ".jpg"))]
        if missing:
            path, listing, number = missing[0]
            raise NSTError("image %s is missing (listed on line %d of %s)%s; restore it from the "
                           "original dataset or remove it from the image set"
                           % (path, number, listing,
                              "" if len(missing) == 1 else ", and %d more" % (len(missing) - 1)))
        labels, shapes, kept = [], [], []
        for item in items:
            label, shape = self._load_label(item)
            if skip_empty and len(label) == 0:
                continue
            kept.append(item)
            labels.append(label)
            shapes.append(shape)
        if not kept:
            raise NSTError("no image of %s has an object of the classes %s"
                           % (", ".join("%s/%s" % s for s in self._splits),
                              ", ".join(self.classes)))
        self._items = [(folder, image_id) for folder, image_id, _, _ in kept]
        self._labels = labels
        self._shapes = shapes

    def __str__(self):
        return "VOCDataset(%s)" % ",".join("%s%s" % s for s in self._splits)

    @property
    def num_class(self):
        return len(self.classes)

    def _load_label(self, item):
        folder, image_id, listing, number = item
        path = os.path.join(folder, "Annotations", image_id + ".xml")
        if not os.path.isfile(path):
            raise NSTError("annotation file %s is missing for image %r (listed on line %d of "
                           "%s); restore it from the original dataset"
                           % (path, image_id, number, listing))
        ann = parse_annotation(path)
        if ann["width"] is None:
            raise NSTError("annotation file %s has no <size> with <width> and <height>; VOC "
                           "annotations always have one" % path)
        width, height = ann["width"], ann["height"]
        rows = []
        for obj in ann["objects"]:
            if obj["name"] not in self.index_map:
                continue
            xmin, ymin, xmax, ymax = (v - 1 for v in obj["bbox"])
            # GluonCV's VOCDetection._validate_label: invalid boxes are dropped with a warning
            if not (0 <= xmin < width and 0 <= ymin < height and xmin < xmax <= width
                    and ymin < ymax <= height):
                logging.warning("Invalid label at %s line %d: box %s outside the %gx%g image",
                                path, obj["line"], obj["bbox"], width, height)
                continue
            rows.append([xmin, ymin, xmax, ymax, self.index_map[obj["name"]],
                         float(obj["difficult"])])
        return np.array(rows, dtype=np.float64).reshape(-1, 6), (width, height)

    def __len__(self):
        return len(self._items)

    def image_id(self, idx):
        return self._items[idx][1]

    def image_path(self, idx):
        folder, image_id = self._items[idx]
        return os.path.join(folder, "JPEGImages", image_id + ".jpg")

    def label(self, idx):
        """Label rows ``[xmin, ymin, xmax, ymax, class, difficult]`` (0-based pixels)."""
        return self._labels[idx].copy()

    def get_im_aspect_ratio(self):
        return [w / h for w, h in self._shapes]

    def __getitem__(self, idx):
        path = self.image_path(idx)
        try:
            img = mx.image.imread(path, 1)
        except Exception as err:  # MXNetError: cannot decode
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise NSTError("cannot decode image %s (%s); restore it from the original dataset"
                           % (path, (lines[-1] if lines else "unreadable")[:200])) from err
        return img, self._labels[idx].copy()


def _sample_seed(seed, epoch, idx):
    return int(np.random.SeedSequence([int(seed), int(epoch), int(idx)]).generate_state(1)[0])


class SeededTransform(Dataset):
    """``dataset[idx]`` through ``transform`` with the RNGs seeded by (seed, epoch, idx).

    Keys are ``epoch * len(dataset) + idx`` (what :class:`EpochBatchSampler`
    yields), so the random flip of every image is reproducible.
    """

    def __init__(self, dataset, transform, seed):
        super(SeededTransform, self).__init__()
        self._dataset = dataset
        self._transform = transform
        self._seed = seed

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key):
        epoch, idx = divmod(int(key), len(self._dataset))
        seed = _sample_seed(self._seed, epoch, idx)
        np.random.seed(seed)
        random.seed(seed)
        img, label = self._dataset[idx]
        return self._transform(img, label)


class IndexedTransform(Dataset):
    """``transform(*dataset[idx]) + (idx,)``: test samples that know their image."""

    def __init__(self, dataset, transform):
        super(IndexedTransform, self).__init__()
        self._dataset = dataset
        self._transform = transform

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, idx):
        img, label = self._dataset[idx]
        out = self._transform(img, label)
        return tuple(out) + (np.array([idx], dtype=np.float32),)


class EpochBatchSampler:
    """Batches of keys ``epoch * n + idx``: a seeded permutation per epoch, full batches only.

    Call :meth:`set_epoch` before iterating; ``start_step`` skips the batches
    a resumed run has already trained on.
    """

    def __init__(self, num_items, batch_size, seed, shuffle=True):
        if num_items < batch_size:
            raise NSTError("the training set has %d images, fewer than one step of %d (one per "
                           "device); use fewer devices or more images" % (num_items, batch_size))
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self):
        return self.num_items // self.batch_size

    def set_epoch(self, epoch, start_step=0):
        self.epoch = int(epoch)
        self.start_step = int(start_step)

    def __iter__(self):
        order = np.arange(self.num_items)
        if self.shuffle:
            order = np.random.RandomState((self.seed * 7919 + self.epoch) % (2 ** 32)) \
                .permutation(self.num_items)
        offset = self.epoch * self.num_items
        for step in range(self.start_step, self.steps_per_epoch):
            chunk = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield [int(offset + i) for i in chunk]

    def __len__(self):
        return max(0, self.steps_per_epoch - self.start_step)


def train_loader(net, dataset, cfg, num_devices):
    """(DataLoader, sampler) of the training set, GluonCV's Faster R-CNN recipe."""
    from gluoncv.data.batchify import FasterRCNNTrainBatchify
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform

    d = cfg["data"]
    transform = FasterRCNNDefaultTrainTransform(
        d["short"], d["max_size"], net, mean=tuple(d["mean"]), std=tuple(d["std"]),
        flip_p=d["flip"], ashape=net.ashape, multi_stage=False)
    per_step = cfg["train"]["images_per_device"] * num_devices
    sampler = EpochBatchSampler(len(dataset), per_step, cfg["seed"])
    loader = mx.gluon.data.DataLoader(
        SeededTransform(dataset, transform, cfg["seed"]), batch_sampler=sampler,
        batchify_fn=FasterRCNNTrainBatchify(net, num_devices),
        num_workers=d["num_workers"])
    return loader, sampler


def test_loader(dataset, cfg, num_devices):
    """DataLoader of (image, label, scale, index), one image per device, in dataset order."""
    from gluoncv.data.batchify import Append, Tuple
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultValTransform

    d = cfg["data"]
    transform = FasterRCNNDefaultValTransform(d["short"], d["max_size"], mean=tuple(d["mean"]),
                                              std=tuple(d["std"]))
    return mx.gluon.data.DataLoader(
        IndexedTransform(dataset, transform), num_devices, shuffle=False,
        batchify_fn=Tuple(*[Append() for _ in range(4)]), last_batch="keep",
        num_workers=d["num_workers"])
