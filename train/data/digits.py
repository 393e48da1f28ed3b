"""scikit-learn's bundled 8x8 handwritten digits as 32x32 RGB images (the demo's data).

:func:`load_digits_32` returns them in the format of
:func:`train.data.cifar.load_cifar`: ``uint8 (N, 32, 32, 3)`` images and
``int32`` labels, with a fixed stratified train/test split.
"""

import numpy as np

from nst.errors import NSTError

__all__ = ["load_digits_32"]

_DIGITS_CACHE = {}   # size -> (images, labels) of all 1,797 digits


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
