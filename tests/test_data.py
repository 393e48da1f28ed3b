"""train/data/ (cifar, digits, datasets, augment, batches): CIFAR loading (real subset +
crafted files), augmentation, batch iteration and the digits dataset."""

import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nst.errors import NSTError
from train import data as D

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


# ---------------------------------------------------------------------------
# Real CIFAR-10 subset
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_train(cifar_root):
    return D.load_cifar(cifar_root, "cifar10", "train")


@pytest.fixture(scope="module")
def real_test(cifar_root):
    return D.load_cifar(cifar_root, "cifar10", "test")


def test_real_counts_shapes_and_labels(real_train, real_test):
    for (images, labels), count in ((real_train, 5170), (real_test, 1017)):
        assert images.shape == (count, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int32
        assert images.flags.c_contiguous
        assert labels.min() == 0 and labels.max() == 9
        counts = np.bincount(labels, minlength=10)
        assert len(counts) == 10 and np.all(counts > 50)   # every class, well represented


def test_real_layout_is_rgb_nhwc(cifar_root, real_test):
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    images, labels = real_test
    for i in (0, 17, 1016):
        record = raw[b"data"][i]
        assert np.array_equal(images[i, :, :, 0].ravel(), record[:1024])      # red plane
        assert np.array_equal(images[i, :, :, 2].ravel(), record[2048:])      # blue plane
        assert np.array_equal(images[i].transpose(2, 0, 1).ravel(), record)
    assert labels.tolist() == raw[b"labels"]


def test_real_class_names_and_dataset_dispatch(cifar_root, real_test):
    assert D.load_cifar_meta(cifar_root, "cifar10") == CLASSES
    images, labels = D.load_dataset("cifar10", cifar_root, "test")
    assert np.array_equal(images, real_test[0]) and np.array_equal(labels, real_test[1])
    # the dataset folder itself is accepted as root
    images2, _ = D.load_cifar(cifar_root / "cifar-10-batches-py", "cifar10", "test")
    assert np.array_equal(images2, real_test[0])


def test_real_channel_stats_close_to_constants(real_train):
    mean, std = D.channel_stats(real_train[0])
    assert np.allclose(mean, D.CIFAR10_MEAN, atol=0.01)
    assert np.allclose(std, D.CIFAR10_STD, atol=0.01)


# ---------------------------------------------------------------------------
# Crafted and damaged files
# ---------------------------------------------------------------------------

class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _cifar10_with_test_batch(tmp_path, make_cifar10, payload):
    root = make_cifar10(tmp_path / "root")
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(payload)
    return root, path


@pytest.mark.parametrize("where", ["top", "nested"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, make_cifar10, where):
    side_effect = tmp_path / "pwned"
    evil = _Evil("touch %s" % side_effect)
    if where == "top":
        obj = evil
    else:   # hidden inside an otherwise valid batch
        obj = {b"batch_label": evil, b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
    root, path = _cifar10_with_test_batch(tmp_path, make_cifar10, pickle.dumps(obj, protocol=2))
    with pytest.raises(NSTError, match="refusing to load") as info:
        D.load_cifar(root, "cifar10", "test")
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)
    assert str(path) in str(info.value)
    assert not side_effect.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "call"),
                                         ("numpy", "load"), ("numpy.core.multiarray", "array")])
def test_other_globals_are_refused(tmp_path, make_cifar10, module, name):
    payload = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nX\x01\x00\x00\x001\x85R."
    root, _ = _cifar10_with_test_batch(tmp_path, make_cifar10, payload)
    with pytest.raises(NSTError, match="refusing to load"):
        D.load_cifar(root, "cifar10", "test")


@pytest.mark.parametrize("payload,reason", [
    # numpy.ndarray((2**30,)): the allowed name cannot be called to allocate memory
    (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85R.", "not callable"),
    # _reconstruct(ndarray, (2**30,), b'b'): only the (0,) shape ndarray.__reduce__ uses
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
     b"J\x00\x00\x00\x40\x85C\x01b\x87R.", "unexpected numpy _reconstruct call"),
    # BUILD with slot state on an allowed callable (setattr on a plain function works)
    (b"\x80\x02c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__K\x01s\x86b.",
     "has no attribute '__defaults__'"),
    # _codecs.encode with another codec
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
     "unexpected _codecs.encode call"),
    # a memo index that would make the C unpickler allocate gigabytes
    (b"\x80\x02]r\x00\x00\x00\x10.", "memo index 268435456 out of range"),
    # a protocol-5 out-of-band buffer
    (b"\x80\x05\x97.", "opcode NEXT_BUFFER"),
])
def test_allowed_names_cannot_be_abused(tmp_path, make_cifar10, payload, reason):
    root, path = _cifar10_with_test_batch(tmp_path, make_cifar10, payload)
    with pytest.raises(NSTError, match=reason) as info:
        D.load_cifar(root, "cifar10", "test")
    assert str(path) in str(info.value)
    D.load_cifar(make_cifar10(tmp_path / "fresh"), "cifar10", "test")   # nothing was altered


def test_truncated_garbage_and_empty_files(tmp_path, make_cifar10):
    root = make_cifar10(tmp_path / "root")
    path = root / "cifar-10-batches-py" / "test_batch"
    good = path.read_bytes()
    for payload, expected in ((good[: len(good) // 2], "truncated|corrupt"),
                              (good[:3], "truncated|corrupt"),
                              (good[:-1], "truncated|corrupt"),
                              (b"this is not a pickle at all\n" * 10, "corrupt"),
                              (b"", "empty")):
        path.write_bytes(payload)
        with pytest.raises(NSTError, match=expected) as info:
            D.load_cifar(root, "cifar10", "test")
        assert str(path) in str(info.value)
        assert "nst data cifar10 --root" in str(info.value)


def _rewrite(path, batch, protocol=2):
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=protocol)


@pytest.mark.parametrize("change,message", [
    (lambda b: b.pop(b"data"), "no 'data' entry"),
    (lambda b: b.pop(b"labels"), "no 'labels' entry"),
    (lambda b: b.update({b"data": b"\x00" * 3072}), "uint8 NumPy array"),
    (lambda b: b.update({b"data": b[b"data"].astype(np.int64)}), "uint8 NumPy array"),
    (lambda b: b.update({b"data": b[b"data"].ravel()[:-5]}), "not a multiple of 3072"),
    (lambda b: b.update({b"data": b[b"data"].reshape(-1, 1024, 3)}), "expected \\(N, 3072\\)"),
    (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "5 images but 4 labels"),
    (lambda b: b.update({b"labels": b[b"labels"] + [3]}), "5 images but 6 labels"),
    (lambda b: b.update({b"labels": [0, 1, 2, 3, 10]}), "outside 0..9"),
    (lambda b: b.update({b"labels": [0, 1, -1, 3, 4]}), "outside 0..9"),
    (lambda b: b.update({b"labels": ["a", "b", "c", "d", "e"]}), "flat list of integers"),
    (lambda b: b.update({b"labels": 7}), "list of integers"),
    (lambda b: b.update({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}), "no images"),
])
def test_structural_problems_name_the_file(tmp_path, make_cifar10, change, message):
    root = make_cifar10(tmp_path / "root", test=5)
    path = root / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    change(batch)
    # Python 3 writes empty bytes at protocol 2 as a call to bytes(), which the
    # restricted unpickler refuses; the originals never hold empty arrays.
    _rewrite(path, batch, protocol=4 if message == "no images" else 2)
    with pytest.raises(NSTError, match=message) as info:
        D.load_cifar(root, "cifar10", "test")
    assert str(path) in str(info.value)


def test_not_a_dict(tmp_path, make_cifar10):
    root, path = _cifar10_with_test_batch(tmp_path, make_cifar10,
                                          pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(NSTError, match="expected a pickled dict"):
        D.load_cifar(root, "cifar10", "test")


def test_missing_folder_and_missing_file(tmp_path, make_cifar10):
    with pytest.raises(NSTError) as info:
        D.load_cifar(tmp_path / "nowhere", "cifar10", "train")
    text = str(info.value)
    assert "cifar-10-batches-py" in text and "nst data cifar10 --root" in text
    root = make_cifar10(tmp_path / "root")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(NSTError, match="missing CIFAR file .*data_batch_3"):
        D.load_cifar(root, "cifar10", "train")
    D.load_cifar(root, "cifar10", "test")   # the other split is still fine


def test_bad_arguments(tmp_path, make_cifar10):
    root = make_cifar10(tmp_path / "root")
    with pytest.raises(NSTError, match="split"):
        D.load_cifar(root, "cifar10", "validation")
    with pytest.raises(NSTError, match="cifar10 or cifar100"):
        D.load_cifar(root, "svhn", "train")
    with pytest.raises(NSTError, match="label_mode"):
        D.load_cifar(root, "cifar10", "train", label_mode="coarse")
    with pytest.raises(NSTError, match="unknown dataset"):
        D.load_dataset("mnist", root)
    with pytest.raises(NSTError, match="needs a data root"):
        D.load_dataset("cifar10")


def test_synthetic_cifar10_any_record_count(tmp_path, make_cifar10):
    root = make_cifar10(tmp_path / "root", per_file=3, test=2)
    images, labels = D.load_cifar(root, "cifar10", "train")
    assert images.shape == (15, 32, 32, 3) and labels.shape == (15,)
    # python-3 pickles with str keys are read as well
    path = root / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    _rewrite(path, {k.decode(): v for k, v in batch.items()})
    assert D.load_cifar(root, "cifar10", "test")[0].shape == (2, 32, 32, 3)
    # ... and so are newer pickle protocols (protocol 4 arrays use _reconstruct too)
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=4)
    assert D.load_cifar(root, "cifar10", "test")[0].shape == (2, 32, 32, 3)


def test_cifar100_fine_and_coarse(tmp_path, make_cifar100):
    root = make_cifar100(tmp_path / "root", train=12, test=6)
    fine_x, fine_y = D.load_cifar(root, "cifar100", "train")
    coarse_x, coarse_y = D.load_cifar(root, "cifar100", "train", label_mode="coarse")
    assert fine_x.shape == (12, 32, 32, 3) and fine_y.dtype == np.int32
    assert np.array_equal(fine_x, coarse_x)
    assert np.array_equal(coarse_y, fine_y // 5)
    assert D.load_cifar(root, "cifar100", "test")[0].shape == (6, 32, 32, 3)
    assert D.load_cifar_meta(root, "cifar100") == ["fine%02d" % i for i in range(100)]
    assert D.load_cifar_meta(root, "cifar100", "coarse") == ["coarse%02d" % i for i in range(20)]
    with pytest.raises(NSTError, match="label_mode"):
        D.load_cifar(root, "cifar100", "train", label_mode="medium")
    assert D.dataset_info("cifar100", "coarse")["num_classes"] == 20
    # a CIFAR-10 file where CIFAR-100 is expected: the message says so
    path = root / "cifar-100-python" / "test"
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    batch[b"labels"] = batch.pop(b"fine_labels")
    _rewrite(path, batch)
    with pytest.raises(NSTError, match="no 'fine_labels' entry.*other CIFAR dataset"):
        D.load_cifar(root, "cifar100", "test")
    # coarse labels out of their 0..19 range
    batch[b"fine_labels"] = batch.pop(b"labels")
    batch[b"coarse_labels"] = [25] * len(batch[b"fine_labels"])
    _rewrite(path, batch)
    with pytest.raises(NSTError, match="outside 0..19"):
        D.load_cifar(root, "cifar100", "test", label_mode="coarse")


# ---------------------------------------------------------------------------
# Hypothesis fuzz: damaged real batch files only ever load or raise NSTError
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_setup(cifar_root, tmp_path_factory):
    original = (cifar_root / "cifar-10-batches-py" / "test_batch").read_bytes()
    root = tmp_path_factory.mktemp("fuzz")
    (root / "cifar-10-batches-py").mkdir()
    return original, root


@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["truncate", "random", "mutate"]),
       cut=st.integers(min_value=0, max_value=10**9),
       noise=st.binary(min_size=0, max_size=400),
       flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1,
                      max_size=8))
def test_fuzz_only_data_or_nsterror(fuzz_setup, kind, cut, noise, flips):
    original, root = fuzz_setup
    if kind == "truncate":
        payload = original[:cut % len(original)]
    elif kind == "random":
        payload = original[:2] + noise if noise[:1] == b"x" else noise
    else:
        payload = bytearray(original)
        header = 400   # most mutations hit the pickle structure, some the pixel data
        for position, value in flips:
            index = position % header if position % 3 else position % len(payload)
            payload[index] = value
        payload = bytes(payload)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    try:
        images, labels = D.load_cifar(root, "cifar10", "test")
    except NSTError as err:
        assert "test_batch" in str(err)
    else:
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
        assert labels.shape == (len(images),) and labels.min() >= 0 and labels.max() <= 9


# ---------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------

def _reference_augment(images, dy, dx, flips, mean, std, pad=4):
    """The slow obvious version, in fb.resnet.torch's order: one image at a time,
    normalise, zero-pad (the mean colour), crop, mirror."""
    out = []
    h, w = images.shape[1:3]
    for img, y, x, f in zip(images, dy, dx, flips):
        value = (img.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)
        padded = np.pad(value, ((pad, pad), (pad, pad), (0, 0)))
        crop = padded[y:y + h, x:x + w]
        if f:
            crop = crop[:, ::-1]
        out.append(crop.transpose(2, 0, 1))
    return np.stack(out)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(123)
    return rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)


def test_augment_shape_dtype(images):
    out = D.augment_batch(images, rng=0, mean=D.CIFAR10_MEAN, std=D.CIFAR10_STD)
    assert out.shape == (64, 3, 32, 32) and out.dtype == np.float32 and out.flags.c_contiguous


def test_augment_matches_reference_loop(images):
    rng = np.random.default_rng(7)
    aug = D.Augmenter(D.CIFAR10_MEAN, D.CIFAR10_STD, pad=4)
    dy, dx, flips = aug.params(len(images), rng)
    out = aug(images, params=(dy, dx, flips))
    ref = _reference_augment(images, dy, dx, flips, D.CIFAR10_MEAN, D.CIFAR10_STD)
    assert np.allclose(out, ref, atol=1e-5)
    # exhaustive over every offset and flip on one image
    grid = [(y, x, f) for y in range(9) for x in range(9) for f in (False, True)]
    dy, dx, flips = (np.array(v) for v in zip(*grid))
    batch = np.repeat(images[:1], len(grid), axis=0)
    out = aug(batch, params=(dy, dx, flips))
    assert np.allclose(out, _reference_augment(batch, dy, dx, flips, D.CIFAR10_MEAN,
                                               D.CIFAR10_STD), atol=1e-5)


def test_augment_random_path_equals_reference(images):
    aug = D.Augmenter(D.CIFAR10_MEAN, D.CIFAR10_STD)
    out = aug(images, np.random.default_rng(99))
    dy, dx, flips = D.crop_flip_params(len(images), np.random.default_rng(99))
    assert np.allclose(out, _reference_augment(images, dy, dx, flips, D.CIFAR10_MEAN,
                                               D.CIFAR10_STD), atol=1e-5)
    # the reused buffer does not leak between calls of different sizes
    out_small = aug(images[:5], np.random.default_rng(3))
    dy, dx, flips = D.crop_flip_params(5, np.random.default_rng(3))
    assert np.allclose(out_small, _reference_augment(images[:5], dy, dx, flips, D.CIFAR10_MEAN,
                                                     D.CIFAR10_STD), atol=1e-5)


def test_flip_and_padding(images):
    n = len(images)
    centre = np.full(n, 4)
    plain = D.augment_batch(images, params=(centre, centre, np.zeros(n, bool)))
    flipped = D.augment_batch(images, params=(centre, centre, np.ones(n, bool)))
    assert np.allclose(plain, images.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    assert np.array_equal(flipped, plain[..., ::-1])
    # offset (0, 0): the top-left 4 rows/columns are zero padding
    corner = D.augment_batch(images, params=(np.zeros(n, int), np.zeros(n, int),
                                             np.zeros(n, bool)))
    assert np.all(corner[:, :, :4, :] == 0) and np.all(corner[:, :, :, :4] == 0)
    assert np.array_equal(corner[:, :, 4:, 4:], plain[:, :, :28, :28])
    # the padding is 0 after normalisation (the mean colour, fb.resnet.torch's
    # order), not the normalised black -mean/std
    corner = D.augment_batch(images, params=(np.zeros(n, int), np.zeros(n, int),
                                             np.zeros(n, bool)),
                             mean=D.CIFAR10_MEAN, std=D.CIFAR10_STD)
    assert np.all(corner[:, :, :4, :] == 0) and np.all(corner[:, :, :, :4] == 0)


def test_augment_determinism_and_distribution(images):
    big = np.repeat(images, 8, axis=0)
    a = D.augment_batch(big, rng=np.random.default_rng(5))
    b = D.augment_batch(big, rng=5)
    c = D.augment_batch(big, rng=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    dy, dx, flips = D.crop_flip_params(20000, 0)
    assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9))
    assert abs(flips.mean() - 0.5) < 0.02
    _, _, none = D.crop_flip_params(100, 0, flip=False)
    assert not none.any()


def test_augment_bad_input(images):
    with pytest.raises(NSTError, match="uint8"):
        D.augment_batch(images.astype(np.float32))
    with pytest.raises(NSTError, match="offsets"):
        D.augment_batch(images, params=(np.full(64, 9), np.zeros(64, int), np.zeros(64, bool)))
    with pytest.raises(NSTError, match="one value per channel"):
        D.augment_batch(images, rng=0, mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(NSTError, match="positive"):
        D.augment_batch(images, rng=0, mean=(0.5,) * 3, std=(0.2, 0.0, 0.2))


def test_normalisation_stats(real_train):
    images = real_train[0][:2000]
    mean, std = D.channel_stats(images)
    out = D.normalize_batch(images, mean, std)
    assert out.shape == (2000, 3, 32, 32) and out.dtype == np.float32
    assert np.allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    assert np.allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)
    reference = (images.astype(np.float64) / 255 - mean) / std
    assert np.allclose(out, reference.transpose(0, 3, 1, 2), atol=1e-5)


def test_channel_stats_exact_small():
    images = np.zeros((2, 2, 2, 3), np.uint8)
    images[0, ..., 0] = 255
    mean, std = D.channel_stats(images, chunk=1)
    assert np.allclose(mean, (0.5, 0, 0)) and np.allclose(std, (0.5, 0, 0))


# ---------------------------------------------------------------------------
# Batch iterator
# ---------------------------------------------------------------------------

def _indexed(n=103, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    return images, np.arange(n)  # label = sample index


def test_iterator_covers_each_sample_once():
    images, ids = _indexed()
    keep = D.ArrayBatches(images, ids, 16, shuffle=True, seed=1, last_batch="keep")
    batches = list(keep)
    assert len(keep) == len(batches) == 7
    assert [len(b[1]) for b in batches] == [16] * 6 + [7]
    seen = np.concatenate([b[1] for b in batches]).astype(int)
    assert sorted(seen.tolist()) == list(range(103))
    for data, label in batches:
        assert data.dtype == np.float32 and label.dtype == np.float32
        assert np.allclose(data, images[label.astype(int)].transpose(0, 3, 1, 2) / 255.0,
                           atol=1e-6)
    drop = D.ArrayBatches(images, ids, 16, shuffle=True, seed=1)
    batches = list(drop)
    assert len(drop) == len(batches) == 6 and all(len(b[1]) == 16 for b in batches)
    assert len(set(np.concatenate([b[1] for b in batches]).tolist())) == 96 == drop.num_samples


def test_iterator_reshuffles_per_epoch_deterministically():
    images, ids = _indexed()
    it = D.ArrayBatches(images, ids, 10, shuffle=True, augment=True, seed=3,
                        mean=D.CIFAR10_MEAN, std=D.CIFAR10_STD)
    epochs = [[(d.copy(), l.copy()) for d, l in it] for _ in range(3)]   # auto-advances
    assert it.epoch == 3
    orders = [np.concatenate([l for _, l in e]) for e in epochs]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    # resumed run: a fresh iterator set to epoch 2 sees exactly epoch 2's batches
    resumed = D.ArrayBatches(images, ids, 10, shuffle=True, augment=True, seed=3,
                             mean=D.CIFAR10_MEAN, std=D.CIFAR10_STD)
    resumed.set_epoch(2)
    for (d1, l1), (d2, l2) in zip(epochs[2], resumed):
        assert np.array_equal(d1, d2) and np.array_equal(l1, l2)
    # ... even from the middle of the epoch
    tail = list(resumed.iter_epoch(1, start=4))
    assert len(tail) == len(epochs[1]) - 4
    for (d1, l1), (d2, l2) in zip(epochs[1][4:], tail):
        assert np.array_equal(d1, d2) and np.array_equal(l1, l2)
    # another seed gives another order
    other = D.ArrayBatches(images, ids, 10, shuffle=True, seed=4)
    assert not np.array_equal(np.concatenate([l for _, l in other]), orders[0])


def test_iterator_augmented_batches_are_crops_of_their_images():
    images, ids = _indexed(40)
    it = D.ArrayBatches(images, ids, 8, shuffle=True, augment=True, seed=0)
    for data, label in it:
        padded = np.pad(images[label.astype(int)], ((0, 0), (4, 4), (4, 4), (0, 0)))
        for img, source in zip(data, padded):
            hwc = np.rint(img.transpose(1, 2, 0) * 255).astype(np.uint8)
            candidates = [source[y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
            assert any(np.array_equal(hwc, c) or np.array_equal(hwc, c[:, ::-1])
                       for c in candidates)


def test_iterator_no_shuffle_and_validation():
    images, ids = _indexed(20)
    it = D.ArrayBatches(images, ids, 8, shuffle=False, last_batch="keep")
    assert np.concatenate([l for _, l in it]).tolist() == list(range(20))
    with pytest.raises(NSTError, match="batch_size"):
        D.ArrayBatches(images, ids, 0)
    with pytest.raises(NSTError, match="larger than"):
        D.ArrayBatches(images, ids, 21)
    assert len(D.ArrayBatches(images, ids, 21, last_batch="keep")) == 1
    with pytest.raises(NSTError, match="last_batch"):
        D.ArrayBatches(images, ids, 4, last_batch="rollover")
    with pytest.raises(NSTError, match="one label per image"):
        D.ArrayBatches(images, ids[:-1], 4)
    with pytest.raises(NSTError, match="epoch"):
        it.set_epoch(-1)


# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------

def test_digits_shapes_split_and_stratification():
    train_x, train_y = D.load_digits_32("train")
    test_x, test_y = D.load_digits_32("test")
    assert train_x.shape == (1257, 32, 32, 3) and test_x.shape == (540, 32, 32, 3)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int32
    assert np.array_equal(train_x[..., 0], train_x[..., 2])
    assert train_x.max() == 255 and train_x.min() == 0
    all_y = np.concatenate([train_y, test_y])
    assert np.array_equal(np.bincount(all_y), np.bincount(D.load_digits_32("all")[1]))
    expected = np.bincount(all_y) * 0.3
    assert np.all(np.abs(np.bincount(test_y) - expected) <= 1)
    again_x, again_y = D.load_digits_32("test")
    assert np.array_equal(again_x, test_x) and np.array_equal(again_y, test_y)
    other_y = D.load_digits_32("test", seed=1)[1]
    assert len(other_y) == 540
    images, labels = D.load_dataset("digits", "/ignored", "train")
    assert np.array_equal(labels, train_y)
    info = D.dataset_info("digits")
    assert info["num_classes"] == 10 and len(info["mean"]) == 3 and min(info["std"]) > 0
    with pytest.raises(NSTError, match="test_fraction"):
        D.load_digits_32("train", test_fraction=1.5)


def test_digits_resize_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    from sklearn.datasets import load_digits
    small = load_digits().images[:20].astype(np.float32) * (255.0 / 16.0)
    ours = D.load_digits_32("all")[0][:20, :, :, 0].astype(int)
    theirs = np.stack([cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR)
                       for img in small])
    assert np.abs(ours - np.rint(theirs)).max() <= 1


# ---------------------------------------------------------------------------
# Without ../shared: the record layout and the flip switch, against NumPy
# ---------------------------------------------------------------------------

def test_synthetic_records_are_read_as_rgb_planes(tmp_path, write_cifar_batch, make_cifar10):
    """A record is 1024 red, 1024 green, 1024 blue bytes, each plane row-major:
    pixel (y, x) of channel c is byte c * 1024 + 32 * y + x.  Every byte differs
    in position from its interleaved reading, so a wrong layout cannot pass."""
    root = make_cifar10(tmp_path / "root", per_file=2, test=3)
    rng = np.random.default_rng(7)
    records = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    records[0] = np.arange(3072) % 251                     # positions made visible
    write_cifar_batch(root / "cifar-10-batches-py" / "test_batch", records, [1, 2, 3])
    images, labels = D.load_cifar(root, "cifar10", "test")
    assert labels.tolist() == [1, 2, 3]
    for n in range(3):
        for c in range(3):
            for y, x in ((0, 0), (0, 31), (5, 7), (31, 0), (31, 31)):
                assert images[n, y, x, c] == records[n, c * 1024 + 32 * y + x], (n, c, y, x)
    expected = np.stack([records[:, c * 1024:(c + 1) * 1024].reshape(3, 32, 32)
                         for c in range(3)], axis=-1)
    np.testing.assert_array_equal(images, expected)


def _matching_crops(data, images, mean, std):
    """For each augmented image, ``(unflipped match, flipped match)`` over all 81 offsets."""
    found = []
    for out, img in zip(data, images):
        plain = flipped = False
        for y in range(9):
            for x in range(9):
                for f in (0, 1):
                    ref = _reference_augment(img[None], [y], [x], [f], mean, std)[0]
                    if np.allclose(out, ref, atol=1e-5):
                        plain, flipped = plain or not f, flipped or bool(f)
        found.append((plain, flipped))
    return found


@pytest.mark.parametrize("flip", [False, True])
def test_flip_setting_of_a_config_reaches_the_batches(tmp_path, make_cifar10, flip):
    """``data.flip: false`` (augment on): every training image is an unflipped pad-crop."""
    from train.data import build_batches
    from train.config import validate_config
    root = make_cifar10(tmp_path / "root", per_file=8, test=2, seed=5)
    cfg = validate_config({"name": "f", "epochs": 1, "student": {"network": "x"},
                           "data": {"dataset": "cifar10", "root": str(root), "batch_size": 20,
                                    "flip": flip}})
    source = build_batches(cfg["data"], 0, 20)
    images, _ = D.load_cifar(root, "cifar10", "train")
    data, _, index = next(iter(source.train.iter_epoch(0, with_index=True)))
    found = _matching_crops(data, images[index.astype(int)], D.CIFAR10_MEAN, D.CIFAR10_STD)
    assert all(plain or flipped for plain, flipped in found)   # each is a crop of its image
    only_flipped = sum(flipped and not plain for plain, flipped in found)
    if flip:
        assert only_flipped > 0
    else:
        assert only_flipped == 0
