"""CIFAR-10 / CIFAR-100 python batches, read through a restricted unpickler.

:func:`load_cifar` / :func:`load_cifar_meta` read the official CIFAR-10 and
CIFAR-100 *python* batches (any number of records per file) through a
restricted unpickler that can only rebuild NumPy arrays, so a crafted pickle
cannot run code.  Every structural problem becomes one
:class:`~nst.errors.NSTError` naming the file and the fix.

Images are ``uint8`` arrays of shape ``(N, 32, 32, 3)`` (RGB, NHWC) and
labels ``int32`` arrays of shape ``(N,)``.
"""

import io
import os
import pickle
import pickletools

import numpy as np

from nst.errors import NSTError

__all__ = ["CIFAR_FOLDERS", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
           "load_cifar", "load_cifar_meta"]

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
