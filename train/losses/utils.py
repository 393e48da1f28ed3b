"""Helpers shared by the spatial transfer losses (FitNet, AT, NST).

Different spatial sizes
-----------------------
The paper assumes equal spatial sizes and notes that "the feature maps can be
interpolated if their dimensions do not match" (Sec. 3.1).  Here, for every
spatial method, each map larger than the common size ``(min(H_S, H_T),
min(W_S, W_T))`` is resized down to it *before* anything else:

* along every axis whose ratio is an integer, by **average pooling** (kernel
  = stride = the ratio) -- the usual case, e.g. 16x16 -> 8x8 or 14x14 -> 7x7;
  this is the exact area average, so no activation is dropped;
* along the remaining axes, by **bilinear** interpolation
  (``align_corners=False``, half-pixel centres).

Only the larger map is touched; equal sizes are left as they are.  (Bilinear
is never asked for an output size of 1 -- that ratio is always an integer --
where MXNet's ``BilinearResize2D`` would return the first row instead of an
interpolation.)

Reductions
----------
MXNet 1.9's generic CPU reductions (``sum``/``mean`` over an axis) run at
~5 ns per element, 10-20x slower than a BLAS matrix-vector product (a mean
over the channels of a 128x336x8x8 map: 33 ms with ``mean``, 1.8 ms with
``batch_dot`` against a ones vector).  The helpers below therefore sum with
``batch_dot``; they are exact sums (same value up to float rounding order).
"""

__all__ = ["common_size", "resize_to", "match_spatial", "channel_samples", "sum_rows",
           "sum_cols", "sum_all", "sum_squares"]


def common_size(s_shape, t_shape):
    """The (H, W) both feature maps are brought to: the smaller size per axis."""
    return min(s_shape[1], t_shape[1]), min(s_shape[2], t_shape[2])


def resize_to(F, x, shape, size):
    """Resize ``x`` (N, C, H, W) with per-sample ``shape`` (C, H, W) down to ``size``."""
    (_, h, w), (th, tw) = shape, size
    kernel = (h // th if h % th == 0 else 1, w // tw if w % tw == 0 else 1)
    if kernel != (1, 1):
        x = F.Pooling(x, kernel=kernel, stride=kernel, pool_type="avg",
                      pooling_convention="valid")
        h, w = h // kernel[0], w // kernel[1]
    if (h, w) != (th, tw):
        x = F.contrib.BilinearResize2D(x, height=th, width=tw, align_corners=False)
    return x


def match_spatial(F, student, teacher, s_shape, t_shape):
    """Bring both maps to :func:`common_size`; returns (student, teacher, (H, W))."""
    size = common_size(s_shape, t_shape)
    return resize_to(F, student, s_shape, size), resize_to(F, teacher, t_shape, size), size


def channel_samples(F, x, eps):
    """(N, C, H, W) -> (N, C, H*W) with every channel's map L2-normalised.

    Row ``k`` of sample ``n`` is ``f^k / sqrt(||f^k||^2 + eps)`` (Eq. 4's
    samples); an all-zero map stays zero instead of becoming NaN.  One fused
    ``L2Normalization`` over the (N*C, H*W) rows.
    """
    rows = F.L2Normalization(F.reshape(x, shape=(-3, -1)), mode="instance", eps=eps)
    return F.reshape_like(rows, F.reshape(x, shape=(0, 0, -1)))


def _ones_column(F, x, axis):
    """Ones of shape (N, x.shape[axis], 1) for a 3-D ``x``, built from a slice of ``x``."""
    other = 2 if axis == 1 else 1
    return F.reshape(F.ones_like(F.stop_gradient(F.slice_axis(x, axis=other, begin=0, end=1))),
                     shape=(0, -1, 1))


def sum_rows(F, x):
    """(N, A, B) -> (N, B): the sum over axis 1 (e.g. over the channels)."""
    return F.reshape(F.batch_dot(x, _ones_column(F, x, 1), transpose_a=True), shape=(0, -1))


def sum_cols(F, x):
    """(N, A, B) -> (N, A, 1): the sum over the last axis."""
    return F.batch_dot(x, _ones_column(F, x, 2))


def sum_all(F, x):
    """(N, A, B) -> (N,): the sum of each sample's entries."""
    per_row = sum_cols(F, x)                                              # (N, A, 1)
    return F.reshape(F.batch_dot(per_row, _ones_column(F, per_row, 1), transpose_a=True),
                     shape=(-1,))


def sum_squares(F, x):
    """(N, ...) -> (N,): the squared Frobenius norm of each sample (one fused GEMV)."""
    flat = F.reshape(x, shape=(0, 1, -1))
    return F.reshape(F.batch_dot(flat, flat, transpose_b=True), shape=(-1,))
