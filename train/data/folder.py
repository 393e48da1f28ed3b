"""Your own images: a folder with one sub-folder per class as training and validation batches.

``data.dataset: folder`` reads ``data.root`` in one of two layouts::

    root/<class>/<image>                         split into training and validation
                                                 (data.folder.val_fraction, per class,
                                                 drawn with data.folder.split_seed)
    root/train/<class>/<image>, root/val/<class>/<image>    the split as given

Images (``.jpg``, ``.jpeg``, ``.png``) are listed by Gluon's
``gluon.data.vision.ImageFolderDataset`` (class ``i`` is the ``i``-th
sub-folder in sorted order) and decoded one by one when a batch needs them,
in ``data.threads`` worker processes of a ``gluon.data.DataLoader`` (0: in
the training process); nothing is loaded into memory whole.  ``nst pack``
stays the way to large sets (RecordIO, ``data.dataset: imagenet``).

Transforms, ImageNet-style (fb.resnet.torch, as :mod:`train.data.recordio`):

- training: random-resized crop (area 8%-100% of the image, aspect ratio
  3/4-4/3, 10 attempts then a centre square) resized to ``data.image_size``;
  horizontal flip (``data.flip``); colour jitter (brightness, contrast and
  saturation factors ``1 + U(-0.4, 0.4)`` in a random order); AlexNet-style
  PCA lighting noise (standard deviation 0.1 on fb.resnet's eigenvalues);
  ``data.augment: false`` gives the validation transform instead;
- validation: shorter side resized to ``data.val_resize``, centre crop
  ``data.image_size``;
- both: ``gluon.data.vision.transforms.ToTensor`` and ``Normalize`` with
  fb.resnet's ImageNet mean and standard deviation (the inputs GluonCV models
  and the other pipelines use).

Determinism: every random choice for a sample (crop box, flip, jitter) is
drawn from ``np.random.default_rng([seed, epoch, 2, index])`` and the epoch's
order from ``default_rng([seed, epoch, 0])``, pure functions of the seed, the
epoch and the sample's index: the batches do not depend on which worker
decodes what, on the number of workers, or on any global random state, so two
runs with the same seed train identical parameters, and a run resumed
mid-epoch sees exactly the batches of an uninterrupted one.

Corrupt or unreadable images: with ``data.folder.corrupt: error`` (the
default) the first one a batch meets stops training with one
:class:`~nst.errors.NSTError` naming the file; with ``corrupt: skip`` every
image is decoded once before training (in the worker processes) and the
unreadable ones are left out, with a count.
"""

import logging
import os
import warnings

import numpy as np

from nst.errors import NSTError
from .recordio import ASPECT_RATIO, COLOR_JITTER, INTERPOLATION, MEAN_RGB, PCA_NOISE, \
    RANDOM_AREA, STD_RGB, _first_line, image_sizes

__all__ = ["OPTIONS", "folder_source", "list_folder", "split_items", "FolderSamples",
           "FolderBatches", "crop_box"]

#: data.folder options and their defaults
OPTIONS = {"val_fraction": 0.1, "split_seed": 0, "corrupt": "error"}
_CORRUPT = ("error", "skip")
# fb.resnet.torch's PCA lighting (eigenvalues in 0-255 pixel units), as mx.image.LightingAug
_EIGVAL = np.array([55.46, 4.794, 1.148], dtype=np.float32)
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                    [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]], dtype=np.float32)
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)

log = logging.getLogger("nst.data")


# ---------------------------------------------------------------------- files
def list_folder(root):
    """``(class names, [(path, label), ...])`` of one ``root/<class>/<image>`` tree."""
    from mxnet.gluon.data.vision import ImageFolderDataset

    if not os.path.isdir(root):
        raise NSTError("image folder %s does not exist or is not a folder; give data.root, a "
                       "folder with one sub-folder of images per class" % root)
    try:
        with warnings.catch_warnings():  # "Ignoring <file>": files that are not images
            warnings.simplefilter("ignore")
            listing = ImageFolderDataset(root, flag=1)
    except OSError as err:
        raise NSTError("cannot read the image folder %s (%s); check its permissions"
                       % (root, err.strerror or err)) from err
    if not listing.synsets:
        raise NSTError("image folder %s has no class sub-folders; put the images of each class "
                       "in a sub-folder of its own (%s/<class>/<image>.jpg)" % (root, root))
    if not listing.items:
        raise NSTError("image folder %s has no images (.jpg, .jpeg, .png) in its %d class "
                       "sub-folder(s) (%s)" % (root, len(listing.synsets),
                                               ", ".join(listing.synsets[:5])))
    return list(listing.synsets), list(listing.items)


def split_items(items, classes, fraction, seed):
    """Per-class split of ``items`` into (train, val): ``round(n * fraction)`` images of each
    class (at least one of a class with two or more) go to validation."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction < 1:
        raise NSTError("data.folder.val_fraction must be a number between 0 and 1 (the share "
                       "of each class kept for validation), got %r" % (fraction,))
    rng = np.random.default_rng([int(seed), 7])
    labels = np.array([label for _, label in items])
    val = []
    for label in range(len(classes)):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        count = min(max(int(round(len(members) * fraction)), 1), len(members) - 1)
        val.extend(rng.permutation(members)[:count].tolist())
    chosen = set(val)
    return ([it for i, it in enumerate(items) if i not in chosen],
            [it for i, it in enumerate(items) if i in chosen])


def _limit(items, limit, seed):
    """A fixed subset of ``limit`` items, drawn over all classes, in file order."""
    if not limit or limit >= len(items):
        return items
    keep = np.sort(np.random.default_rng([int(seed), 8]).permutation(len(items))[:int(limit)])
    return [items[i] for i in keep]


def _options(dcfg):
    opts = dict(OPTIONS)
    given = dcfg.get("folder") or {}
    if not isinstance(given, dict):
        raise NSTError("data.folder must be a mapping of options (%s), got %r"
                       % (", ".join(OPTIONS), given))
    unknown = sorted(k for k in given if k not in OPTIONS)
    if unknown:
        raise NSTError("data.folder: unknown option(s) %s; the options are %s"
                       % (", ".join(unknown), ", ".join(OPTIONS)))
    opts.update({k: v for k, v in given.items() if v is not None})
    if opts["corrupt"] not in _CORRUPT:
        raise NSTError("data.folder.corrupt must be error (stop at the first unreadable image) "
                       "or skip (leave unreadable images out), got %r" % (opts["corrupt"],))
    if isinstance(opts["split_seed"], bool) or not isinstance(opts["split_seed"], int):
        raise NSTError("data.folder.split_seed must be an integer, got %r" % (opts["split_seed"],))
    return opts


# -------------------------------------------------------------------- samples
def decode(path):
    """The image at ``path`` as an RGB uint8 NDArray (H, W, 3); NSTError naming the file."""
    import mxnet as mx

    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if not raw:
            raise ValueError("the file is empty")
        return mx.image.imdecode(raw, flag=1)
    except Exception as err:  # OSError, MXNetError ("Decoding failed"), ValueError
        raise NSTError("cannot read image %s (%s); remove or replace it, or set "
                       "data.folder.corrupt: skip to leave unreadable images out"
                       % (path, _first_line(err, limit=200))) from None


def crop_box(height, width, rng, area=RANDOM_AREA, ratio=ASPECT_RATIO, attempts=10):
    """``(x0, y0, w, h)`` of a random-resized crop (Inception / fb.resnet): a box of
    ``U(area)`` of the image's area and log-uniform aspect ratio in ``ratio``; after
    ``attempts`` misses, the centre square."""
    for _ in range(attempts):
        target = rng.uniform(area[0], area[1]) * height * width
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def colour_jitter(image, rng, strength=COLOR_JITTER):
    """Brightness, contrast and saturation jitter in a random order, float32 HWC 0-255:
    each blends the image with black, its mean grey level or its grey image with weight
    ``alpha = 1 + U(-strength, strength)`` (``alpha * x + (1 - alpha) * other``)."""
    for op in rng.permutation(3):
        alpha = np.float32(1.0 + rng.uniform(-strength, strength))
        if op == 0:
            image = image * alpha
        else:
            gray = image @ _GRAY
            other = np.float32(gray.mean()) if op == 1 else gray[..., None]
            image = image * alpha + other * (1 - alpha)
    return image


def lighting(image, rng, std=PCA_NOISE):
    """AlexNet-style PCA lighting noise: add ``eigvec @ (alpha * eigval)``, alpha ~ N(0, std)."""
    alpha = rng.normal(0.0, std, size=3).astype(np.float32)
    return image + _EIGVEC @ (alpha * _EIGVAL)


_MAIN_PID = os.getpid()
_WORKER_READY = []


def _single_thread_in_worker():
    """In a forked DataLoader worker, run MXNet's operators on one OpenMP thread.

    A forked child inherits the parent's OpenMP thread-pool state but not its
    threads, so the first parallel operator waits forever (GNU OpenMP is not
    fork-safe) once the training process has used more than one thread.  The
    workers are the parallelism here; one thread each is also the right size."""
    if os.getpid() == _MAIN_PID or _WORKER_READY == [os.getpid()]:
        return
    import ctypes
    from mxnet.base import _LIB

    _LIB.MXSetNumOMPThreads(ctypes.c_int(1))
    _WORKER_READY[:] = [os.getpid()]


class FolderSamples:
    """The samples of a list of ``(path, label)`` images, transformed for training or validation.

    Keys are ``(epoch, index)`` pairs (the batch sampler makes them), so that the
    random choices of a sample depend on the epoch although the worker processes
    hold a copy of this object made once.  ``samples[(epoch, i)]`` is
    ``(data float32 (3, S, S), label float32, index float32)``.
    """

    def __init__(self, items, train, image_size, val_resize, seed=0, augment=True, flip=True):
        self.items = list(items)
        self.train = bool(train)
        self.augment = bool(augment) and self.train
        self.flip = bool(flip)
        self.size = int(image_size)
        self.val_resize = int(val_resize)
        self.seed = int(seed)
        self._finish = None
        self._centre = None

    def __len__(self):
        return len(self.items)

    def _to_tensor(self, image):
        if self._finish is None:  # built lazily: in each worker process of its own
            from mxnet.gluon.data.vision import transforms
            self._finish = transforms.Compose([
                transforms.ToTensor(),
                transforms.Normalize([m / 255.0 for m in MEAN_RGB], [s / 255.0 for s in STD_RGB])])
        return self._finish(image)

    def _centre_crop(self, image):
        """Validation: shorter side to ``val_resize``, centre ``size`` x ``size`` crop."""
        if self._centre is None:  # built once per process, as _to_tensor's
            from mxnet.gluon.data.vision import transforms
            self._centre = (transforms.Resize(self.val_resize, keep_ratio=True,
                                              interpolation=INTERPOLATION),
                            transforms.CenterCrop(self.size, interpolation=INTERPOLATION))
        resize, crop = self._centre
        return crop(resize(image))

    def transform(self, image, epoch, index):
        """``image`` (uint8 NDArray HWC) -> normalised float32 NDArray (3, S, S)."""
        import mxnet as mx

        if not self.augment:
            return self._to_tensor(self._centre_crop(image))
        rng = np.random.default_rng([self.seed, int(epoch), 2, int(index)])
        x0, y0, w, h = crop_box(image.shape[0], image.shape[1], rng)
        image = mx.image.fixed_crop(image, x0, y0, w, h, size=(self.size, self.size),
                                    interp=INTERPOLATION)
        pixels = image.asnumpy().astype(np.float32)
        if self.flip and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        pixels = lighting(colour_jitter(pixels, rng), rng)
        return self._to_tensor(mx.nd.array(np.clip(pixels, 0, 255)))

    def __getitem__(self, key):
        _single_thread_in_worker()
        epoch, index = key
        path, label = self.items[index]
        data = self.transform(decode(path), epoch, index)
        return data.asnumpy(), np.float32(label), np.float32(index)


class _Readable:
    """Decodes ``items[i]`` and says whether it worked (the ``corrupt: skip`` scan)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        _single_thread_in_worker()
        try:
            decode(self.items[index][0])
            return np.int32(1)
        except NSTError:
            return np.int32(0)


def _readable(items, workers):
    from mxnet import gluon

    if not items:
        return items, []
    loader = gluon.data.DataLoader(_Readable(items), batch_size=64, num_workers=workers,
                                   batchify_fn=lambda flags: np.array(flags, dtype=np.int32))
    flags = np.concatenate([np.asarray(f) for f in loader])
    return ([it for it, ok in zip(items, flags) if ok],
            [it[0] for it, ok in zip(items, flags) if not ok])


class _EpochSampler:
    """The batch sampler of a :class:`FolderBatches`: the ``(epoch, index)`` keys of the
    batches it is set to (it lives in the training process only)."""

    def __init__(self):
        self.batches = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class FolderBatches:
    """``(data, label)`` NDArray batches of a :class:`FolderSamples` through a ``DataLoader``.

    The interface of :class:`train.data.batches.ArrayBatches`: ``len``, ``iter_epoch(epoch,
    start, with_index)``, ``dataset_size``, ``num_samples``, ``set_epoch``.
    Training (``shuffle``) drops the last incomplete batch; validation keeps it.
    """

    def __init__(self, samples, batch_size, shuffle, seed=0, workers=0):
        from mxnet import gluon

        self.samples = samples
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0
        self._sampler = _EpochSampler()
        self.loader = gluon.data.DataLoader(samples, batch_sampler=self._sampler,
                                            num_workers=max(0, int(workers)))

    def __len__(self):
        n, b = len(self.samples), self.batch_size
        return n // b if self.shuffle else -(-n // b)

    @property
    def dataset_size(self):
        return len(self.samples)

    @property
    def num_samples(self):
        return min(len(self) * self.batch_size, len(self.samples))

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def order(self, epoch):
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, int(epoch), 0]).permutation(len(self.samples))

    def iter_epoch(self, epoch, start=0, with_index=False):
        order = self.order(epoch)
        b = self.batch_size
        self._sampler.batches = [[(int(epoch), int(i)) for i in order[k * b:(k + 1) * b]]
                                 for k in range(start, len(self))]
        for data, label, index in self.loader:
            yield (data, label, index) if with_index else (data, label)

    def __iter__(self):
        epoch = self.epoch
        yield from self.iter_epoch(epoch)
        if self.epoch == epoch:
            self.epoch = epoch + 1


# --------------------------------------------------------------------- source
def folder_source(dcfg, seed, local_batch, rank=0, num_workers=1):
    """The :class:`~train.data.batches.DataSource` of an image folder (``data.dataset: folder``)."""
    from .batches import DataSource

    opts = _options(dcfg)
    root = dcfg["root"]
    size, resize = image_sizes(dcfg)
    split_dirs = [os.path.join(root, s) for s in ("train", "val")]
    if all(os.path.isdir(d) for d in split_dirs):
        classes, train_items = list_folder(split_dirs[0])
        val_classes, val_items = list_folder(split_dirs[1])
        if val_classes != classes:
            missing = sorted(set(classes) ^ set(val_classes))
            raise NSTError("%s and %s must have the same class sub-folders; they differ in %s"
                           % (split_dirs[0], split_dirs[1], ", ".join(missing[:5])))
    else:
        classes, items = list_folder(root)
        train_items, val_items = split_items(items, classes, opts["val_fraction"],
                                             opts["split_seed"])
    workers = max(0, int(dcfg.get("threads", 4) or 0))
    train_items = _limit(train_items, dcfg.get("train_limit"), opts["split_seed"])
    val_items = _limit(val_items, dcfg.get("test_limit"), opts["split_seed"])
    if opts["corrupt"] == "skip":
        skipped = []
        train_items, bad = _readable(train_items, workers)
        skipped += bad
        val_items, bad = _readable(val_items, workers)
        skipped += bad
        if skipped:
            log.warning("data: skipped %d unreadable image(s) of %s (data.folder.corrupt: skip): "
                        "%s%s", len(skipped), root, ", ".join(skipped[:5]),
                        " ..." if len(skipped) > 5 else "")
    if not val_items:
        raise NSTError("image folder %s gives no validation images; add a val/ tree or raise "
                       "data.folder.val_fraction (classes need two or more images to be split)"
                       % root)
    if num_workers > 1:
        train_items = train_items[rank::num_workers]
    if len(train_items) < local_batch:
        raise NSTError("image folder %s has %d training images for this worker, fewer than one "
                       "batch of %d; lower data.batch_size" % (root, len(train_items), local_batch))
    train = FolderBatches(FolderSamples(train_items, True, size, resize, seed=seed + 1000 * rank,
                                        augment=dcfg.get("augment", True),
                                        flip=dcfg.get("flip", True)),
                          local_batch, shuffle=True, seed=seed + 1000 * rank, workers=workers)
    test = FolderBatches(FolderSamples(val_items, False, size, resize),
                         dcfg["test_batch_size"], shuffle=False, workers=workers)
    return DataSource(train, test, len(classes), (3, size, size), class_names=tuple(classes))
