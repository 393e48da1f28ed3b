"""Normalisation and the paper's CIFAR augmentation (pad 4, random crop, random flip).

:class:`Augmenter` / :func:`augment_batch` implement the augmentation of He et
al. (2016) used by the paper, as fb.resnet.torch implements it: per-channel
normalisation, zero-pad 4 pixels to 40x40 (zero after normalisation is the
mean colour), random 32x32 crop, random horizontal flip; fully vectorised over
the batch and deterministic given a seed / Generator.  :func:`normalize_batch`
is the test-time path; :func:`channel_stats` computes the constants.

Everything works on NumPy arrays (uint8 NHWC in, float32 NCHW out), so it is
fast, testable and independent of MXNet.  Constants are on the ``[0, 1]``
scale: ``x_float = (x_uint8 / 255 - mean) / std``.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nst.errors import NSTError

__all__ = ["Augmenter", "augment_batch", "channel_stats", "crop_flip_params", "normalize_batch"]

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
