"""ImageNet (or any image-folder data set packed by ``nst pack``) as RecordIO batches.

The data folder (``data.root``) holds what :mod:`train.data.pack` writes::

    train.rec  train.idx     training images (JPEG records, shuffled order) + index
    val.rec    val.idx       validation images + index
    classes.txt              one class name per line; line i is label i

Both splits are read by MXNet's C++ ``mx.io.ImageRecordIter`` (multi-threaded
JPEG decoding, ``preprocess_threads = data.threads``; MXNet itself caps it at
half the cores minus one).  Augmentation follows fb.resnet.torch, as the paper
states (Section 5.2), with the iterator's own options:

- training: random-sized crop (``random_resized_crop``: area 8%-100% of the
  image, aspect ratio 3/4-4/3, 10 attempts then a centre crop) resized to
  ``data.image_size``; horizontal flip (``rand_mirror``); colour jitter
  (``brightness``, ``contrast``, ``saturation`` 0.4); AlexNet-style PCA
  lighting noise (``pca_noise`` 0.1, which uses fb.resnet's eigenvalues
  and eigenvectors scaled to 0-255 pixels);
- validation: shorter side resized to ``data.val_resize`` (256), centre crop
  ``data.image_size`` (224), a single crop;
- both: per-channel normalisation with fb.resnet's ImageNet mean and standard
  deviation (``MEAN_RGB``, ``STD_RGB``) in the iterator, so the networks'
  ``data_bn`` stage is not relied on.

Determinism and resume: each epoch builds a fresh iterator seeded with the
epoch (``seed`` shuffles the record order, ``seed_aug`` draws the
augmentation), so the same epoch always gives the same batches and a resumed
run skips the first ``start`` batches of that very sequence.  Under
``dist_sync`` each worker reads its own part (``part_index = rank``,
``num_parts = workers``) of the training set; every worker evaluates the whole
validation set.  The training iterator drops the last incomplete batch; the
validation iterator covers every image exactly once (the wrapped-around
padding of its last batch is trimmed).

Corrupt data: a truncated or garbled ``.rec`` can make MXNet's reader abort
the process, so :func:`check_recordio` validates the files up front (every
record header of files up to ``FULL_CHECK_RECORDS`` records, an even sample of
larger ones, and the images of a few records) and raises one clear
:class:`~nst.errors.NSTError`.  ``nst pack --verify DIR`` checks every record.
"""

import os
import struct

import numpy as np

from nst.errors import NSTError

# fb.resnet.torch's ImageNet statistics (0.485/0.456/0.406, 0.229/0.224/0.225) in 0-255 pixels
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

CLASSES_FILE = "classes.txt"
SPLITS = ("train", "val")

# fb.resnet.torch's training augmentation
RANDOM_AREA = (0.08, 1.0)
ASPECT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
COLOR_JITTER = 0.4
PCA_NOISE = 0.1
INTERPOLATION = 2  # bicubic, as the original NST implementation's iterators

FULL_CHECK_RECORDS = 20000   # check every record header of files up to this size
SAMPLED_RECORDS = 2048       # otherwise this many evenly spaced ones (+ first and last)
DECODED_RECORDS = 4          # records whose image is decoded by the check

_MAGIC = 0xCED7230A
_LENGTH_MASK = (1 << 29) - 1
_IR_FORMAT = "IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)


# ---------------------------------------------------------------------- files

def image_sizes(dcfg):
    """``(image_size, val_resize)`` of an image data config (defaults 224, 256),
    checked: training crops and validation centre crops are ``image_size``
    squares of images resized to ``val_resize``."""
    size, resize = dcfg.get("image_size", 224), dcfg.get("val_resize", 256)
    if size < 8:
        raise NSTError("data.image_size must be at least 8 pixels, got %d" % size)
    if resize < size:
        raise NSTError("data.val_resize (%d) is smaller than data.image_size (%d): the "
                       "validation images are resized to val_resize then centre-cropped to "
                       "image_size; use e.g. image_size 224 with val_resize 256" % (resize, size))
    return size, resize

def split_paths(root, split):
    """``(rec, idx)`` paths of ``split`` ('train' or 'val') in ``root``."""
    return os.path.join(root, split + ".rec"), os.path.join(root, split + ".idx")


def read_classes(root):
    """The class names of ``root/classes.txt`` (line i names label i)."""
    path = os.path.join(root, CLASSES_FILE)
    if not os.path.isfile(path):
        raise NSTError("%s is missing: the RecordIO data folder needs its class list (one name "
                       "per line, line i = label i); `nst pack IMAGE_DIR %s` writes it with the "
                       ".rec files" % (path, root))
    with open(path, "r", encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip()]
    if not names:
        raise NSTError("%s lists no classes; re-create the data folder with nst pack" % path)
    return names


def read_index(idx_path, rec_path):
    """``(keys, offsets)`` of a RecordIO index (``key<TAB>offset`` lines), sorted by offset."""
    try:
        with open(idx_path, "r", encoding="ascii") as handle:
            tokens = handle.read().split()
    except (OSError, UnicodeDecodeError) as err:
        raise NSTError("cannot read the RecordIO index %s (%s); re-create %s and its index with "
                       "nst pack" % (idx_path, err, rec_path)) from err
    try:
        pairs = np.array(tokens, dtype=np.int64).reshape(-1, 2) if tokens else None
    except ValueError:
        pairs = None
    if pairs is None or len(tokens) % 2:
        raise NSTError("the RecordIO index %s is empty or corrupt (expected lines of 'key<TAB>"
                       "offset'); re-create %s and its index with nst pack" % (idx_path, rec_path))
    order = np.argsort(pairs[:, 1], kind="stable")
    return pairs[order, 0], pairs[order, 1]


def _corrupt(rec_path, detail):
    return NSTError("%s is corrupt: %s; re-create it with `nst pack IMAGE_DIR %s`"
                    % (rec_path, detail, os.path.dirname(rec_path) or "."))


def _check_record(handle, rec_path, offset, end, size, classes):
    """Check one record's framing and label; returns the record's payload length."""
    handle.seek(offset)
    head = handle.read(8 + _IR_SIZE)
    if len(head) < 8:
        raise _corrupt(rec_path, "the record at byte %d is cut off (file size %d)" % (offset, size))
    magic, lrec = struct.unpack("<II", head[:8])
    if magic != _MAGIC:
        raise _corrupt(rec_path, "no RecordIO record starts at byte %d (the index points there)"
                       % offset)
    length, cflag = lrec & _LENGTH_MASK, lrec >> 29
    if cflag == 0 and offset + 8 + length > end:
        raise _corrupt(rec_path, "the record at byte %d (%d bytes) runs past %s"
                       % (offset, length, "the end of the file" if end == size
                          else "the next record at byte %d" % end))
    if cflag == 0 and len(head) == 8 + _IR_SIZE and length >= _IR_SIZE:
        flag, label = struct.unpack("<" + _IR_FORMAT, head[8:])[:2]
        if flag > 0:  # several labels follow the header: the first is the class
            extra = handle.read(4)
            label = struct.unpack("<f", extra)[0] if len(extra) == 4 else float("nan")
        integral = bool(np.isfinite(label)) and label == int(label)
        if classes is not None and not (integral and 0 <= label < classes):
            raise _corrupt(rec_path, "the record at byte %d has label %g, not a class index "
                           "0..%d of classes.txt" % (offset, label, classes - 1))
    return length


def _decode_record(rec_path, idx_path, key):
    import cv2
    import mxnet as mx

    reader = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "r")
    try:
        header, payload = mx.recordio.unpack(reader.read_idx(int(key)))
    except mx.base.MXNetError as err:
        raise _corrupt(rec_path, "record %d cannot be read (%s)" % (key, _first_line(err)))
    finally:
        reader.close()
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise _corrupt(rec_path, "record %d holds no decodable image" % key)
    return header, image


def check_recordio(rec_path, idx_path, classes=None, full=None):
    """Validate a RecordIO file and its index before MXNet reads them; returns the record count.

    Checks that both files exist, that the index parses and every offset lies
    in the file, the record framing (magic number, length) and the label
    (an integer < ``classes``) of every record (``full=True``, or by default
    when there are at most ``FULL_CHECK_RECORDS``) or of an even sample, and
    decodes the image of a few records.  Raises one :class:`NSTError` naming
    the file, the problem and the fix.
    """
    folder = os.path.dirname(rec_path) or "."
    if not os.path.isfile(rec_path):
        raise NSTError("%s does not exist; pack the image folders into RecordIO files with "
                       "`nst pack IMAGE_DIR %s` (or fix data.root)" % (rec_path, folder))
    if not os.path.isfile(idx_path):
        raise NSTError("%s is a RecordIO file without its index %s; re-create both with "
                       "`nst pack IMAGE_DIR %s` (MXNet's im2rec writes the .idx too)"
                       % (rec_path, idx_path, folder))
    size = os.path.getsize(rec_path)
    if size < 8 or size % 4:
        raise _corrupt(rec_path, "its size (%d bytes) is not a whole number of RecordIO records"
                       % size)
    keys, offsets = read_index(idx_path, rec_path)
    count = len(offsets)
    if offsets[0] < 0 or offsets[-1] > size - 8:
        bad = int(offsets[-1]) if offsets[-1] > size - 8 else int(offsets[0])
        raise _corrupt(rec_path, "its index %s points at byte %d but the file has %d bytes "
                       "(truncated, or the index belongs to another file)" % (idx_path, bad, size))
    if (np.diff(offsets) <= 0).any():
        twice = int(offsets[1:][np.diff(offsets) <= 0][0])
        raise _corrupt(rec_path, "its index %s lists the record at byte %d twice"
                       % (idx_path, twice))
    if full is None:
        full = count <= FULL_CHECK_RECORDS
    if full:
        picks = np.arange(count)
    else:
        picks = np.unique(np.linspace(0, count - 1, min(count, SAMPLED_RECORDS)).astype(np.int64))
    ends = np.append(offsets[1:], size)
    with open(rec_path, "rb") as handle:
        for i in picks:
            _check_record(handle, rec_path, int(offsets[i]), int(ends[i]), size, classes)
    decode = np.unique(np.linspace(0, count - 1, min(count, DECODED_RECORDS)).astype(np.int64))
    for i in decode:
        _decode_record(rec_path, idx_path, int(keys[i]))
    return count


def part_range(count, part_index, num_parts):
    """Records ``[begin, end)`` of part ``part_index`` of ``num_parts``, as MXNet's indexed
    RecordIO splitter partitions them (contiguous parts of ``ceil(count / num_parts)``)."""
    step = (count + num_parts - 1) // num_parts
    begin = min(part_index * step, count)
    return begin, min(begin + step, count)


def _first_line(err, limit=300):
    """The telling line of an MXNet error (its first "Check failed" or error line; the
    message starts with a traceback of C++ frames), else its last line, cut to ``limit``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Check failed" in line or "error" in line.lower() and "Traceback" not in line:
            return line[:limit]
    return (lines[-1] if lines else type(err).__name__)[:limit]


# ------------------------------------------------------------------ iterators
class RecordBatches:
    """Batches of one RecordIO split through ``mx.io.ImageRecordIter``.

    ``len(batches)`` is the number of batches per epoch; ``iter_epoch(epoch,
    start)`` yields ``(data, label)`` NDArrays (float32 NCHW normalised, float32
    labels), the same ones for the same epoch.  A batch's arrays belong to the
    iterator's prefetch buffer: use them (or copy them) before advancing a
    few batches further.

    Parameters
    ----------
    rec_path, idx_path : str
    count : int
        Records in the file (:func:`check_recordio`).
    batch_size : int
    iter_args : dict
        ``mx.io.ImageRecordIter`` augmentation / normalisation options.
    train : bool
        True: shuffled, augmented, this worker's part, full batches only;
        False: file order, every record exactly once.
    seed : int
    part_index, num_parts : int
        This worker's part of the records (training only).
    limit : int or None
        Training: at most ``limit // batch_size`` batches per epoch; validation:
        the first ``limit`` records only.
    """

    def __init__(self, rec_path, idx_path, count, batch_size, iter_args, train, seed=0,
                 part_index=0, num_parts=1, limit=None):
        self.rec_path, self.idx_path = rec_path, idx_path
        self.train = train
        self.seed = int(seed)
        self.part_index, self.num_parts = (part_index, num_parts) if train else (0, 1)
        self.iter_args = dict(iter_args)
        self.epoch = 0
        if train:
            begin, end = part_range(count, self.part_index, self.num_parts)
            self.count = end - begin
            if limit:
                self.count = min(self.count, int(limit))
            self.batch_size = batch_size
            self.batches = self.count // batch_size
        else:
            self.count = min(count, int(limit)) if limit else count
            self.batch_size = max(1, min(batch_size, self.count))
            self.batches = -(-self.count // self.batch_size)

    def __len__(self):
        return self.batches

    @property
    def num_samples(self):
        return self.batches * self.batch_size if self.train else self.count

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def make_iterator(self, epoch):
        """A fresh ``mx.io.ImageRecordIter`` for ``epoch`` (its shuffle and augmentation seeds)."""
        import mxnet as mx

        # distinct augmentation streams per epoch and per worker
        seed_aug = (self.seed * 1000003 + epoch * 1009 + self.part_index) % (2 ** 31 - 1)
        args = dict(self.iter_args, path_imgrec=self.rec_path, path_imgidx=self.idx_path,
                    batch_size=self.batch_size, shuffle=self.train,
                    seed=(self.seed * 7919 + epoch) % (2 ** 31 - 1), seed_aug=seed_aug,
                    round_batch=not self.train, part_index=self.part_index,
                    num_parts=self.num_parts, verbose=False)
        try:
            return mx.io.ImageRecordIter(**args)
        except mx.base.MXNetError as err:
            # the iterator decodes its first batches at once: corrupt images show up here
            raise NSTError("reading %s failed (%s); the file is corrupt or the data options "
                           "(data.image_size, data.val_resize) do not fit it: re-create it with "
                           "nst pack (nst pack --verify DIR checks every record)"
                           % (self.rec_path, _first_line(err))) from err

    def iter_epoch(self, epoch, start=0):
        import mxnet as mx

        iterator = self.make_iterator(epoch)
        try:
            for index in range(self.batches):
                try:
                    batch = iterator.next()
                except StopIteration:
                    raise NSTError("%s ended after %d of the %d batches its index promises; the "
                                   "file is truncated or the index is stale: re-create both "
                                   "with nst pack" % (self.rec_path, index, self.batches)) from None
                except mx.base.MXNetError as err:
                    raise NSTError("reading %s failed at batch %d (%s); the file is corrupt: "
                                   "re-create it with nst pack (nst pack --verify DIR checks "
                                   "every record)" % (self.rec_path, index + 1,
                                                      _first_line(err))) from err
                if index < start:
                    continue
                data, label = batch.data[0], batch.label[0]
                if not self.train:
                    valid = min(self.batch_size, self.count - index * self.batch_size)
                    if valid < self.batch_size:
                        data, label = data[:valid], label[:valid]
                yield data, label
        finally:
            del iterator

    def __iter__(self):
        return self.iter_epoch(self.epoch)


def iterator_args(dcfg, train):
    """The ``mx.io.ImageRecordIter`` options of the training or validation split."""
    size = dcfg.get("image_size", 224)
    args = {"data_shape": (3, size, size), "preprocess_threads": max(1, dcfg.get("threads", 4)),
            "inter_method": INTERPOLATION,
            "mean_r": MEAN_RGB[0], "mean_g": MEAN_RGB[1], "mean_b": MEAN_RGB[2],
            "std_r": STD_RGB[0], "std_g": STD_RGB[1], "std_b": STD_RGB[2]}
    if train and dcfg.get("augment", True):
        args.update(random_resized_crop=True,
                    min_random_area=RANDOM_AREA[0], max_random_area=RANDOM_AREA[1],
                    min_aspect_ratio=ASPECT_RATIO[0], max_aspect_ratio=ASPECT_RATIO[1],
                    brightness=COLOR_JITTER, contrast=COLOR_JITTER, saturation=COLOR_JITTER,
                    pca_noise=PCA_NOISE, rand_mirror=bool(dcfg.get("flip", True)))
    else:
        # no augmentation: the validation transform (resize, centre crop)
        args["resize"] = dcfg.get("val_resize", 256)
    return args


def record_source(dcfg, seed, local_batch, rank=0, num_workers=1):
    """The :class:`~train.data.batches.DataSource` of a RecordIO data folder
    (``data.dataset: imagenet``)."""
    from .batches import DataSource

    root = dcfg["root"]
    if not os.path.isdir(root):
        raise NSTError("data.root %s is not a folder; pack ImageNet (one sub-folder per class) "
                       "with `nst pack IMAGE_DIR %s --val-dir VAL_DIR`" % (root, root))
    size, resize = image_sizes(dcfg)
    classes = read_classes(root)
    counts = {}
    for split in SPLITS:
        rec, idx = split_paths(root, split)
        counts[split] = check_recordio(rec, idx, classes=len(classes))
    train = RecordBatches(*split_paths(root, "train"), counts["train"], local_batch,
                          iterator_args(dcfg, train=True), train=True, seed=seed,
                          part_index=rank, num_parts=num_workers, limit=dcfg.get("train_limit"))
    if len(train) < 1:
        raise NSTError("%s has %d training images for this worker (%d of %d), fewer than one "
                       "batch of %d; lower data.batch_size"
                       % (root, train.count, rank, num_workers, local_batch))
    test = RecordBatches(*split_paths(root, "val"), counts["val"], dcfg["test_batch_size"],
                         iterator_args(dcfg, train=False), train=False,
                         limit=dcfg.get("test_limit"))
    return DataSource(train, test, len(classes), (3, size, size))


# ----------------------------------------------------------- Table 3 printing
