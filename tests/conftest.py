"""Shared fixtures.

``cifar_root``: the folder holding the real CIFAR-10 subset
(``cifar-10-batches-py/``, 6,187 genuine images).  It is looked up as
``<repo>/../shared/data`` (the CI clone has ``shared/`` beside it) or at
``$NST_SHARED_DATA``; tests that need it are skipped when it is absent.

``make_cifar10`` / ``make_cifar100``: factories writing small synthetic
dataset folders in the official pickle layout (bytes keys, protocol 2).
"""

import os
import pickle

# The runtime the `nst` command sets up (nst.cli.configure_environment): the
# bitwise-reproducible NaiveEngine and one OpenMP thread per usable core, before
# anything imports mxnet -- the same function, so the tests run what users run
# (tests/test_long_runs.py checks the command's own default in a clean subprocess).
import nst.compat  # noqa: E402,F401  -- NumPy aliases MXNet needs, before any mxnet import
from nst.cli import configure_environment  # noqa: E402

configure_environment([])
from pathlib import Path

import numpy as np
import pytest

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def shared_data_dir():
    """Path of the shared real-data folder (may not exist)."""
    env = os.environ.get("NST_SHARED_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def cifar_root():
    root = shared_data_dir()
    if not (root / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.skip("real CIFAR-10 subset not found at %s (set NST_SHARED_DATA to the folder "
                    "holding cifar-10-batches-py/)" % root)
    return root


def write_batch(path, data, labels=None, label_key=b"labels", extra=None, protocol=2):
    """Pickle one CIFAR batch dict the way the originals are stored."""
    batch = {b"batch_label": b"synthetic batch", b"data": data,
             b"filenames": [b"img_%d.png" % i for i in range(len(data))]}
    if labels is not None:
        batch[label_key] = list(labels)
    if extra:
        batch.update(extra)
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=protocol)


def _records(rng, n):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


@pytest.fixture
def make_cifar10():
    """``make_cifar10(root, per_file=7, test=5, seed=0) -> root``: a synthetic
    cifar-10-batches-py/ folder (5 train files, test_batch, batches.meta)."""

    def make(root, per_file=7, test=5, seed=0):
        rng = np.random.default_rng(seed)
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, 6):
            write_batch(folder / ("data_batch_%d" % i), _records(rng, per_file),
                        rng.integers(0, 10, per_file).tolist())
        write_batch(folder / "test_batch", _records(rng, test), rng.integers(0, 10, test).tolist())
        with open(folder / "batches.meta", "wb") as handle:
            pickle.dump({b"num_cases_per_batch": per_file, b"num_vis": 3072,
                         b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, handle, protocol=2)
        return Path(root)

    return make


@pytest.fixture
def make_cifar100():
    """``make_cifar100(root, train=12, test=6, seed=0) -> root``: a synthetic
    cifar-100-python/ folder (train, test, meta) with fine and coarse labels
    (fine label f belongs to coarse label f // 5)."""

    def make(root, train=12, test=6, seed=0):
        rng = np.random.default_rng(seed)
        folder = Path(root) / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, n in (("train", train), ("test", test)):
            fine = rng.integers(0, 100, n)
            write_batch(folder / name, _records(rng, n), fine.tolist(), label_key=b"fine_labels",
                        extra={b"coarse_labels": (fine // 5).tolist()})
        with open(folder / "meta", "wb") as handle:
            pickle.dump({b"fine_label_names": [b"fine%02d" % i for i in range(100)],
                         b"coarse_label_names": [b"coarse%02d" % i for i in range(20)]},
                        handle, protocol=2)
        return Path(root)

    return make


@pytest.fixture
def write_cifar_batch():
    """The :func:`write_batch` helper: ``write_cifar_batch(path, data, labels, label_key=b"labels",
    extra=None)`` pickles one batch dict in the original layout."""
    return write_batch
