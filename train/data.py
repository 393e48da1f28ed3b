"""Datasets, the paper's CIFAR augmentation and a deterministic batch iterator.

Everything here works on plain NumPy arrays so that it is fast, testable and
independent of MXNet; the trainer wraps the batches with ``mx.nd.array``.

* :func:`load_cifar` / :func:`load_cifar_meta` read the official CIFAR-10 and
  CIFAR-100 *python* batches (any number of records per file) through a
  restricted unpickler that can only rebuild NumPy arrays, so a crafted
  pickle cannot run code.  Every structural problem becomes one
  :class:`~nst.errors.NSTError` naming the file.
* :func:`load_digits_32` turns scikit-learn's bundled 8x8 handwritten digits
  into 32x32 RGB images in the same format, for the CPU demo and tests.
* :class:`Augmenter` / :func:`augment_batch` implement the augmentation of
  He et al. (2016) used by the paper, as fb.resnet.torch implements it:
  per-channel normalisation, zero-pad 4 pixels to 40x40 (zero after
  normalisation is the mean colour), random 32x32 crop, random horizontal flip; fully
  vectorised over the batch and deterministic given a seed / Generator.
* :class:`ArrayBatches` yields ``(data float32 NCHW, label float32)`` batches
  whose order and augmentation are a pure function of ``(seed, epoch,
  batch index)``, so a resumed run sees exactly the batches of an
  uninterrupted one.

Images are always ``uint8`` arrays of shape ``(N, 32, 32, 3)`` (RGB, NHWC) and
labels ``int32`` arrays of shape ``(N,)``.  Normalisation constants are given
on the ``[0, 1]`` scale: ``x_float = (x_uint8 / 255 - mean) / std``.
"""

import io
import os
import pickle
import pickletools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nst.errors import NSTError

__all__ = [
    "CIFAR_FOLDERS", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
    "DATASETS", "ArrayBatches", "Augmenter", "augment_batch", "channel_stats",
    "crop_flip_params", "dataset_info", "load_cifar", "load_cifar_meta",
    "load_dataset", "load_digits_32", "normalize_batch",
]

# ---------------------------------------------------------------------------
# CIFAR files
# ---------------------------------------------------------------------------

#: name -> folder created by the official archive
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}

_CIFAR_FILES = {
    "cifar10": {"train": ["data_batch_%d" % i for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta"},
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta"},
}
_RECORD = 32 * 32 * 3  # bytes per image in a batch's b'data'

# Per-channel mean / std of the full official training sets, on the [0, 1] scale
# (population std over all training pixels; recompute with channel_stats()).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# --- Restricted unpickling ---------------------------------------------------
#
# A CIFAR batch is a dict of bytes, lists of ints / bytes and one uint8 array.
# Rebuilding the array is the only thing that needs globals:
#   numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b') + BUILD(state)
#   numpy.dtype('u1', False, True)                                 + BUILD(state)
# (Python 3 pickles at protocol 2 also call _codecs.encode(text, 'latin1') for
# bytes.)  find_class admits exactly these names and binds them to guarded
# stand-ins defined here -- nothing is ever imported from a name in the file --
# and a pre-scan of the opcodes refuses what CIFAR batches never use.


class _NDArrayToken:
    """What the name numpy.ndarray resolves to: usable only as _reconstruct's
    first argument (calling numpy.ndarray directly could allocate any size)."""

    __slots__ = ()

    def __repr__(self):
        return "numpy.ndarray"


class _GuardedReconstruct:
    """``numpy.core.multiarray._reconstruct`` as ``ndarray.__reduce__`` uses it, only.

    The stand-ins are instances with no attributes, so a pickle's BUILD opcode
    cannot modify them (it could set attributes on a plain function)."""

    __slots__ = ()

    def __call__(self, subtype, shape, dtype):
        if subtype is not _NDARRAY or tuple(shape) != (0,):
            raise pickle.UnpicklingError("unexpected numpy _reconstruct call")
        return np.core.multiarray._reconstruct(np.ndarray, (0,), dtype)


class _GuardedEncode:
    """``_codecs.encode(text, 'latin1')``, which Python 3 pickles at protocol 2 use
    to store bytes; nothing else."""

    __slots__ = ()

    def __call__(self, text, encoding="latin1", errors="strict"):
        if (not isinstance(text, str) or encoding not in ("latin1", "latin-1")
                or errors != "strict"):
            raise pickle.UnpicklingError("unexpected _codecs.encode call")
        return text.encode("latin-1")


_NDARRAY = _NDArrayToken()
_guarded_reconstruct = _GuardedReconstruct()
_guarded_encode = _GuardedEncode()

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _guarded_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _guarded_reconstruct,   # NumPy 2 spelling
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _guarded_encode,
}

# Opcodes a CIFAR batch never contains: persistent ids, the extension registry,
# old-style instance creation, __new__ calls and protocol-5 out-of-band buffers.
_FORBIDDEN_OPCODES = {"PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ",
                      "NEWOBJ_EX", "BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _refuse(path, what, name):
    return NSTError(
        "refusing to load %s: it %s, which a CIFAR batch never does. The file is not a "
        "genuine CIFAR batch (it may be malicious): delete it and download the dataset "
        "again with `nst data %s --root DIR`" % (path, what, name))


def _prescan(raw, path, name):
    """Walk the opcodes without executing anything; refuse what CIFAR never uses.

    Besides the forbidden opcodes and globals this bounds memo indices (the C
    unpickler would allocate a memo table as large as the biggest index).
    """
    count = 0
    for opcode, arg, _ in pickletools.genops(raw):
        count += 1
        if opcode.name in _FORBIDDEN_OPCODES:
            raise _refuse(path, "uses the pickle opcode %s" % opcode.name, name)
        if opcode.name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            if (module, attr) not in _ALLOWED_GLOBALS:
                raise _refuse(path, "asks to import %s.%s" % (module, attr), name)
        elif opcode.name in _MEMO_PUTS and not 0 <= int(arg) <= count:
            raise pickle.UnpicklingError("memo index %s out of range" % arg)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays and plain containers only."""

    def __init__(self, data, path, name):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._path = path
        self._name = name

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _refuse(self._path, "asks to import %s.%s" % (module, name),
                          self._name) from None

    def persistent_load(self, pid):
        raise _refuse(self._path, "uses pickle persistent ids", self._name)


def _redownload_hint(name, root):
    return "download it again with `nst data %s --root %s`" % (name, root)


def _unpickle(path, name, root):
    """Read one batch file with the restricted unpickler; return the top-level dict."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise NSTError("missing CIFAR file %s: the folder %s is incomplete; %s"
                       % (path, os.path.dirname(path), _redownload_hint(name, root))) from None
    except OSError as err:
        raise NSTError("cannot read %s (%s): check the file permissions or %s"
                       % (path, err.strerror or err, _redownload_hint(name, root))) from err
    if not raw:
        raise NSTError("%s is empty (0 bytes): the download or extraction was interrupted; %s"
                       % (path, _redownload_hint(name, root)))
    try:
        _prescan(raw, path, name)
        obj = _ArrayOnlyUnpickler(raw, path, name).load()
    except NSTError:
        raise
    except RecursionError:
        raise NSTError("%s is not a CIFAR batch (nested too deeply); %s"
                       % (path, _redownload_hint(name, root))) from None
    except Exception as err:  # UnpicklingError, EOFError, ValueError, struct errors ...
        raise NSTError("cannot read %s: the file is truncated, corrupt or not a CIFAR batch "
                       "(%s: %s); %s" % (path, type(err).__name__, err,
                                         _redownload_hint(name, root))) from None
    if not isinstance(obj, dict):
        raise NSTError("%s is not a CIFAR batch: expected a pickled dict, found %s; %s"
                       % (path, type(obj).__name__, _redownload_hint(name, root)))
    out = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if isinstance(key, str):
            out[key] = value
    return out


def _resolve_folder(root, name):
    if name not in CIFAR_FOLDERS:
        raise NSTError("unknown CIFAR dataset %r: choose cifar10 or cifar100" % (name,))
    root = os.fspath(root)
    folder_name = CIFAR_FOLDERS[name]
    folder = os.path.join(root, folder_name)
    if os.path.isdir(folder):
        return folder
    # Also accept the dataset folder itself as root.
    if os.path.basename(os.path.normpath(root)) == folder_name and os.path.isdir(root):
        return root
    raise NSTError(
        "%s not found: expected the folder %s (from the official archive, holding %s). "
        "Download and verify it with `nst data %s --root %s`, or pass the folder that "
        "contains %s/ as the data root"
        % (name.upper().replace("CIFAR", "CIFAR-"), folder,
           ", ".join(_CIFAR_FILES[name]["train"] + _CIFAR_FILES[name]["test"]),
           name, root, folder_name))


def _label_key(name, label_mode):
    if name not in CIFAR_FOLDERS:
        raise NSTError("unknown CIFAR dataset %r: choose cifar10 or cifar100" % (name,))
    if name == "cifar10":
        if label_mode not in ("fine", None):
            raise NSTError("CIFAR-10 has a single label set; label_mode=%r is only for "
                           "cifar100 (use label_mode='fine')" % (label_mode,))
        return "labels", 10
    if label_mode == "fine":
        return "fine_labels", 100
    if label_mode == "coarse":
        return "coarse_labels", 20
    raise NSTError("label_mode must be 'fine' (100 classes) or 'coarse' (20 superclasses), "
                   "not %r" % (label_mode,))


def _read_batch(path, name, root, label_key, num_classes):
    """Return (images uint8 (N,32,32,3), labels int32 (N,)) of one validated batch file."""
    batch = _unpickle(path, name, root)
    fix = _redownload_hint(name, root)
    if "data" not in batch:
        raise NSTError("%s is not a CIFAR batch: it has no 'data' entry (keys: %s); %s"
                       % (path, ", ".join(sorted(batch)) or "none", fix))
    if label_key not in batch:
        other = [k for k in ("labels", "fine_labels", "coarse_labels") if k in batch]
        hint = ""
        if other:
            hint = " (it has %s: is this the other CIFAR dataset?)" % ", ".join(other)
        raise NSTError("%s has no '%s' entry%s; %s" % (path, label_key, hint, fix))
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise NSTError("%s: 'data' must be a uint8 NumPy array, found %s; %s"
                       % (path, ("array of %s" % data.dtype) if isinstance(data, np.ndarray)
                          else type(data).__name__, fix))
    if data.size == 0:
        raise NSTError("%s holds no images; %s" % (path, fix))
    if data.size % _RECORD:
        raise NSTError("%s: 'data' holds %d bytes, not a multiple of %d (one 32x32 RGB "
                       "image): the file is damaged; %s" % (path, data.size, _RECORD, fix))
    if not (data.ndim == 1 or (data.ndim == 2 and data.shape[1] == _RECORD)):
        raise NSTError("%s: 'data' has shape %s, expected (N, %d); %s"
                       % (path, data.shape, _RECORD, fix))
    count = data.size // _RECORD
    raw_labels = batch[label_key]
    if not isinstance(raw_labels, (list, tuple, np.ndarray)):
        raise NSTError("%s: '%s' must be a list of integers, found %s; %s"
                       % (path, label_key, type(raw_labels).__name__, fix))
    try:
        labels = np.asarray(raw_labels)
    except Exception:  # ragged / odd objects
        labels = np.asarray([None])
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise NSTError("%s: '%s' must be a flat list of integers; %s" % (path, label_key, fix))
    if len(labels) != count:
        raise NSTError("%s holds %d images but %d labels in '%s': the file is damaged; %s"
                       % (path, count, len(labels), label_key, fix))
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise NSTError("%s: labels in '%s' range over %d..%d, outside 0..%d; %s"
                       % (path, label_key, low, high, num_classes - 1, fix))
    images = np.ascontiguousarray(data.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int32)


def load_cifar(root, name, split, label_mode="fine"):
    """Load a CIFAR split as ``(images uint8 (N,32,32,3) RGB, labels int32 (N,))``.

    ``root`` is the folder holding ``cifar-10-batches-py/`` or
    ``cifar-100-python/`` (the dataset folder itself is accepted too);
    ``name`` is ``"cifar10"`` or ``"cifar100"``; ``split`` is ``"train"`` or
    ``"test"``.  For CIFAR-100, ``label_mode="fine"`` gives the 100 classes and
    ``"coarse"`` the 20 superclasses.  Any number of records per file is read.
    Raises :class:`NSTError` for a missing, truncated, corrupt or malicious file.
    """
    if split not in ("train", "test"):
        raise NSTError("unknown split %r: choose 'train' or 'test'" % (split,))
    label_key, num_classes = _label_key(name, label_mode)
    folder = _resolve_folder(root, name)
    parts = [_read_batch(os.path.join(folder, fname), name, root, label_key, num_classes)
             for fname in _CIFAR_FILES[name][split]]
    if len(parts) == 1:
        return parts[0]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def load_cifar_meta(root, name, label_mode="fine"):
    """Class names (list of str) from ``batches.meta`` (CIFAR-10) or ``meta`` (CIFAR-100).

    For CIFAR-100 ``label_mode`` picks ``fine_label_names`` (100) or
    ``coarse_label_names`` (20).
    """
    _, num_classes = _label_key(name, label_mode)
    folder = _resolve_folder(root, name)
    path = os.path.join(folder, _CIFAR_FILES[name]["meta"])
    meta = _unpickle(path, name, root)
    key = "label_names" if name == "cifar10" else "%s_label_names" % label_mode
    names = meta.get(key)
    if (not isinstance(names, (list, tuple)) or len(names) != num_classes
            or not all(isinstance(n, (bytes, str)) for n in names)):
        raise NSTError("%s: '%s' must be a list of %d class names; %s"
                       % (path, key, num_classes, _redownload_hint(name, root)))
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


# ---------------------------------------------------------------------------
# scikit-learn digits as 32x32 RGB
# ---------------------------------------------------------------------------

_DIGITS_CACHE = {}   # size -> (images, labels) of all 1,797 digits
_STATS_CACHE = {}    # dataset name -> computed (mean, std)


def _bilinear_matrix(src, dst):
    """(dst, src) matrix of 1-D bilinear resampling, half-pixel centres, edge clamp
    (the convention of cv2.INTER_LINEAR and PIL)."""
    pos = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0, src - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, src - 1)
    frac = pos - low
    mat = np.zeros((dst, src))
    mat[np.arange(dst), low] += 1 - frac
    mat[np.arange(dst), high] += frac
    return mat


def _digits_all(size=32):
    if size not in _DIGITS_CACHE:
        from sklearn.datasets import load_digits
        digits = load_digits()
        small = digits.images.astype(np.float64) * (255.0 / 16.0)       # (N, 8, 8), 0..255
        rows = _bilinear_matrix(small.shape[1], size)
        cols = _bilinear_matrix(small.shape[2], size)
        big = np.einsum("ij,njk,lk->nil", rows, small, cols)             # (N, size, size)
        gray = np.clip(np.rint(big), 0, 255).astype(np.uint8)
        images = np.repeat(gray[..., None], 3, axis=3)
        _DIGITS_CACHE[size] = (images, digits.target.astype(np.int32))
    return _DIGITS_CACHE[size]


def load_digits_32(split, seed=0, test_fraction=0.3):
    """scikit-learn's 1,797 handwritten digits as ``(images uint8 (N,32,32,3), labels int32)``.

    The 8x8 images (values 0..16) are scaled to 0..255, resized bilinearly to
    32x32 and replicated to three RGB channels, the same format as
    :func:`load_cifar`.  The split is stratified and fixed by ``seed``: with
    the defaults, 1,257 training and 540 test images.  ``split`` may also be
    ``"all"``.
    """
    if split not in ("train", "test", "all"):
        raise NSTError("unknown split %r: choose 'train', 'test' or 'all'" % (split,))
    if not 0.0 < float(test_fraction) < 1.0:
        raise NSTError("test_fraction must be between 0 and 1 (exclusive), not %r"
                       % (test_fraction,))
    images, labels = _digits_all()
    if split == "all":
        return images.copy(), labels.copy()
    from sklearn.model_selection import train_test_split
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=float(test_fraction),
                                           random_state=int(seed), stratify=labels)
    idx = np.sort(train_idx if split == "train" else test_idx)
    return images[idx], labels[idx]


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

#: name -> number of classes and normalisation constants (None: compute with
#: channel_stats on the training split, see dataset_info).
DATASETS = {
    "cifar10": {"num_classes": 10, "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "needs_root": True},
    "cifar100": {"num_classes": 100, "mean": CIFAR100_MEAN, "std": CIFAR100_STD,
                 "needs_root": True},
    "digits": {"num_classes": 10, "mean": None, "std": None, "needs_root": False},
}


def _check_dataset(name):
    if name not in DATASETS:
        raise NSTError("unknown dataset %r: choose one of %s" % (name, ", ".join(DATASETS)))


def load_dataset(name, root=None, split="train", **kwargs):
    """Dispatch to :func:`load_cifar` (``cifar10``, ``cifar100``) or
    :func:`load_digits_32` (``digits``, which ignores ``root``).

    Extra keyword arguments go to the loader (``label_mode`` for CIFAR-100,
    ``seed`` / ``test_fraction`` for digits).
    """
    _check_dataset(name)
    if name == "digits":
        return load_digits_32(split, **kwargs)
    if root is None:
        raise NSTError("dataset %s needs a data root: pass the folder that holds %s/ "
                       "(create it with `nst data %s --root DIR`)"
                       % (name, CIFAR_FOLDERS[name], name))
    return load_cifar(root, name, split, **kwargs)


def dataset_info(name, label_mode="fine"):
    """``{"num_classes", "mean", "std"}`` for a dataset name (digits' constants are
    computed once from its training split)."""
    _check_dataset(name)
    info = dict(DATASETS[name])
    if name == "cifar100" and label_mode == "coarse":
        info["num_classes"] = 20
    if info["mean"] is None:
        if name not in _STATS_CACHE:
            _STATS_CACHE[name] = channel_stats(load_dataset(name, split="train")[0])
        info["mean"], info["std"] = _STATS_CACHE[name]
    info.pop("needs_root")
    info["mean"] = tuple(float(v) for v in info["mean"])
    info["std"] = tuple(float(v) for v in info["std"])
    return info


# ---------------------------------------------------------------------------
# Normalisation and augmentation
# ---------------------------------------------------------------------------

def channel_stats(images, chunk=8192):
    """Per-channel ``(mean, std)`` of uint8 NHWC images on the [0, 1] scale.

    Accumulates in float64 over chunks, so it is exact and memory-light for
    the full 50,000-image training sets.
    """
    images = _check_images(images)
    channels = images.shape[3]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].reshape(-1, channels).astype(np.float64)
        total += part.sum(axis=0)
        total_sq += np.square(part).sum(axis=0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return tuple(float(v) for v in mean / 255.0), tuple(float(v) for v in np.sqrt(var) / 255.0)


def _check_images(images):
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise NSTError("images must be a uint8 array of shape (N, H, W, C) as returned by "
                       "load_cifar / load_digits_32, not %s"
                       % (("%s array of shape %s" % (images.dtype, images.shape))
                          if isinstance(images, np.ndarray) else type(images).__name__))
    if images.shape[0] == 0:
        raise NSTError("images is empty: there is nothing to load or augment")
    return images


def _as_generator(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    if isinstance(rng, (tuple, list)):
        return np.random.default_rng(list(rng))
    raise NSTError("rng must be a numpy.random.Generator, an integer seed or None, not %s"
                   % type(rng).__name__)


def _norm_constants(mean, std, channels):
    """float32 (C,) scale and shift so that x_uint8 * scale + shift == (x/255 - mean)/std."""
    mean = np.zeros(channels) if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.ones(channels) if std is None else np.asarray(std, dtype=np.float64).reshape(-1)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise NSTError("mean and std need one value per channel (%d), got %d and %d values"
                       % (channels, mean.size, std.size))
    if not (np.all(np.isfinite(std)) and np.all(std > 0) and np.all(np.isfinite(mean))):
        raise NSTError("std must be positive and finite and mean finite, got mean=%s std=%s"
                       % (mean.tolist(), std.tolist()))
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    return scale, shift


def _normalize_into(src_nchw_uint8, scale, shift, out):
    """out[...] = src * scale[c] + shift[c] in float32 (two in-place passes, no temporaries)."""
    shape = (1, -1) + (1,) * (src_nchw_uint8.ndim - 2)
    np.multiply(src_nchw_uint8, scale.reshape(shape), out=out)
    np.add(out, shift.reshape(shape), out=out)
    return out


def normalize_batch(images, mean=None, std=None, out=None):
    """uint8 NHWC -> float32 NCHW ``(x/255 - mean)/std`` without augmentation (test time).

    With ``mean``/``std`` None the output is simply scaled to [0, 1].
    """
    images = _check_images(images)
    scale, shift = _norm_constants(mean, std, images.shape[3])
    out = _output_buffer(out, (images.shape[0], images.shape[3]) + images.shape[1:3])
    return _normalize_into(images.transpose(0, 3, 1, 2), scale, shift, out)


def _output_buffer(out, shape):
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape
            or not out.flags.c_contiguous):
        raise NSTError("out must be a C-contiguous float32 array of shape %s" % (shape,))
    return out


def crop_flip_params(n, rng, pad=4, flip=True):
    """Draw the random parameters of :class:`Augmenter` for ``n`` images.

    Returns ``(dy, dx, flips)``: crop offsets in ``0..2*pad`` into the padded
    image (``pad`` means no shift) and a boolean array, True where the crop
    is mirrored left-right.  Drawn in this order from ``rng``.
    """
    rng = _as_generator(rng)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    return dy, dx, flips


class Augmenter:
    """Normalise, zero-pad, random crop, random horizontal flip, over a batch.

    ``Augmenter(mean, std, pad=4, flip=True)(images, rng)`` maps uint8 NHWC
    images ``(B, H, W, C)`` to float32 NCHW ``(B, C, H, W)``: each image is
    normalised as ``(x/255 - mean)/std``, padded with 0 (the mean colour) by
    ``pad`` pixels on every side, an ``H x W`` window at a uniformly random
    offset is cut out and mirrored left-right with probability 1/2 (the
    paper's CIFAR recipe, He et al. 2016, with ``pad=4``, in the order of
    fb.resnet.torch's ``cifar10.lua``: normalise, then pad with zeros).

    Implementation: the batch is written once into a reused zero-bordered
    buffer of padded images; two fancy-index gathers over
    ``sliding_window_view`` of that buffer -- one for the unmirrored crops,
    one over a left-right reversed *view* of it for the mirrored ones (the
    mirror of the crop at ``dx`` is the crop of the mirrored padding at
    ``2 * pad - dx``) -- pick every crop, already mirrored and already
    channel-first, a fused multiply-add writes the float32 result and one
    multiply by a per-crop border mask sets the padding to 0 (normalising and
    cropping commute pixel-wise, so this equals normalise-then-pad).  No
    Python loop per image and no mirrored copy of the batch.
    """

    def __init__(self, mean=None, std=None, pad=4, flip=True):
        if int(pad) != pad or pad < 0:
            raise NSTError("pad must be a non-negative integer, not %r" % (pad,))
        self.pad = int(pad)
        self.flip = bool(flip)
        self.mean, self.std = mean, std
        self._consts = {}
        self._buffer = None

    def _constants(self, channels):
        if channels not in self._consts:
            self._consts[channels] = _norm_constants(self.mean, self.std, channels)
        return self._consts[channels]

    def _padded(self, images):
        n, h, w, c = images.shape
        p = self.pad
        shape = (n, h + 2 * p, w + 2 * p, c)
        buf = self._buffer
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < n:
            buf = self._buffer = np.zeros(shape, dtype=np.uint8)  # borders stay zero
        buf = buf[:n]
        buf[:, p:p + h, p:p + w] = images
        return buf

    def params(self, n, rng):
        """``(dy, dx, flips)`` for ``n`` images, see :func:`crop_flip_params`."""
        return crop_flip_params(n, rng, self.pad, self.flip)

    def __call__(self, images, rng=None, *, params=None, out=None):
        """Augment a batch; ``params=(dy, dx, flips)`` fixes the random choices."""
        images = _check_images(images)
        n, h, w, c = images.shape
        scale, shift = self._constants(c)
        dy, dx, flips = self.params(n, rng) if params is None else params
        dy = np.asarray(dy, dtype=np.intp)
        dx = np.asarray(dx, dtype=np.intp)
        flips = np.asarray(flips, dtype=bool)
        span = 2 * self.pad
        if (dy.shape != (n,) or dx.shape != (n,) or flips.shape != (n,)
                or dy.min() < 0 or dx.min() < 0 or dy.max() > span or dx.max() > span):
            raise NSTError("augmentation params must be three length-%d arrays with offsets in "
                           "0..%d" % (n, span))
        if flips.any() and not self.flip:
            raise NSTError("flips requested from an Augmenter built with flip=False")
        padded = self._padded(images)
        # windows[b, y, x] is the (C, H, W) crop at (y, x) of padded image b.
        windows = sliding_window_view(padded, (h, w), axis=(1, 2))
        if not flips.any():
            crops = windows[np.arange(n), dy, dx]                         # (n, C, H, W) uint8
        else:
            # Mirroring the crop at dx equals cropping the mirrored padding at span - dx;
            # the mirrored padding is a reversed view (no copy).
            mirrored = sliding_window_view(padded[:, :, ::-1], (h, w), axis=(1, 2))
            crops = np.empty((n, c, h, w), dtype=np.uint8)
            keep, flip = np.flatnonzero(~flips), np.flatnonzero(flips)
            crops[keep] = windows[keep, dy[keep], dx[keep]]
            crops[flip] = mirrored[flip, dy[flip], span - dx[flip]]
        out = _output_buffer(out, (n, c, h, w))
        _normalize_into(crops, scale, shift, out)
        if self.pad:
            # The padding is 0 *after* normalisation, i.e. the mean colour
            # (fb.resnet.torch normalises first and then zero-pads).  The crop
            # at offset (y0, x0) of the padded image covers image rows
            # y0 - pad .. y0 - pad + h - 1; a mirrored crop at dx is the crop
            # of the mirrored padding at span - dx, so its offset is span - dx.
            x0 = np.where(flips, span - dx, dx)
            rows = np.arange(h) + dy[:, None] - self.pad          # (n, h) image row
            cols = np.arange(w) + x0[:, None] - self.pad          # (n, w) image column
            inside = np.multiply(((rows >= 0) & (rows < h))[:, None, :, None],
                                 ((cols >= 0) & (cols < w))[:, None, None, :],
                                 dtype=np.float32)                # (n, 1, h, w) 0/1 mask
            np.multiply(out, inside, out=out)
        return out


def augment_batch(images, rng=None, mean=None, std=None, pad=4, flip=True, params=None, out=None):
    """Functional form of :class:`Augmenter` (allocates its buffer on every call;
    use an :class:`Augmenter` in a loop)."""
    return Augmenter(mean, std, pad=pad, flip=flip)(images, rng, params=params, out=out)


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------

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
