"""The in-memory data sets by name (cifar10, cifar100, digits): classes, constants, loader.

:data:`DATASETS` holds each one's class count and normalisation constants,
:func:`load_dataset` loads a split, :func:`dataset_info` resolves the constants.

Normalisation constants are on the ``[0, 1]`` scale:
``x_float = (x_uint8 / 255 - mean) / std``; the digits' are computed once from
their training split (:func:`train.data.augment.channel_stats`).
"""

from nst.errors import NSTError

from .augment import channel_stats
from .cifar import CIFAR_FOLDERS, CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, \
    load_cifar
from .digits import load_digits_32

__all__ = ["DATASETS", "dataset_info", "load_dataset"]

_STATS_CACHE = {}    # dataset name -> computed (mean, std)

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
