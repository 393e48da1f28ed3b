r"""Neuron Selectivity Transfer (Huang & Wang 2017, Sec. 4): the MMD losses.

Notation (Sec. 3.1): a feature map is :math:`\mathbf{F} \in R^{C \times HW}`;
each row :math:`\mathbf{f}^{k\cdot}` (one channel's H*W map) is one *sample*
of the neuron-selectivity distribution, L2-normalised (Eq. 4).  Per image, the
loss is the squared MMD (Eq. 2 / Eq. 4) between the teacher's :math:`C_T`
samples and the student's :math:`C_S` samples,

.. math::
    L_{MMD^2} = \frac{1}{C_T^2}\sum_{i,i'} k(\hat f_T^i, \hat f_T^{i'})
              + \frac{1}{C_S^2}\sum_{j,j'} k(\hat f_S^j, \hat f_S^{j'})
              - \frac{2}{C_T C_S}\sum_{i,j} k(\hat f_T^i, \hat f_S^j),

averaged over the batch.  The value includes the teacher-teacher term (a true
MMD^2: >= 0, exactly 0 for equal sample sets), although that term has no
gradient.  :math:`\hat f = f / \sqrt{\|f\|^2 + \epsilon}` (``eps`` = 1e-10 as
in the original code), so all-zero maps give finite losses.  Maps of different
spatial sizes are first brought to the smaller size (:mod:`.utils`).

The trainer multiplies the returned MMD^2 by the config's weight.  The
defaults are the :math:`\lambda` of Sec. 5 applied directly, ``default_weight``
= 50, 50, 100 (linear, poly, Gaussian), as the authors' released code does
(``kt_weight = 50`` as ``MakeLoss(grad_scale=50)`` on MMD^2), and RepDistiller
(``-b 50``) and mdistiller (``FEAT_WEIGHT 50``) after it.  Eq. 3 writes the term
as :math:`\frac{\lambda}{2} L_{MMD^2}`; read literally that is half this
strength (weights 25, 25, 50), a documented difference, not the default.

How it is computed (fast, same value)
-------------------------------------
* **linear** (Eq. 5): :math:`\|\bar f_T - \bar f_S\|^2` with :math:`\bar f`
  the mean normalised map, :math:`O(C \cdot HW)`.
* **polynomial**, d = 2, c = 0 (Eq. 9): per image, either

  - the *channel* form (the original code's): :math:`C \times C` Grams
    :math:`\hat F_T \hat F_T^\top, \hat F_S \hat F_S^\top, \hat F_S \hat F_T^\top`,
    squared and averaged; or
  - the *spatial* form: :math:`\|G_S - G_T\|_F^2` with the
    :math:`HW \times HW` Grams :math:`G = \hat F^\top \hat F / C`.

  Both are the same number (:math:`\sum_{jj'}(\hat f_j^\top \hat f_{j'})^2 =
  \|\hat F^\top \hat F\|_F^2`, and likewise for the cross term).
  **Cost rule** (``form="auto"``), multiply-adds per image for the forward
  pass plus the student's backward pass (the teacher needs none)::

      channel = HW  * (C_T^2 + 2 C_S^2 + 2 C_T C_S)   # K_TT, K_SS, K_TS + grads of K_SS, K_TS
      spatial = HW^2 * (C_T + 2 C_S + 4)              # G_T, G_S + grad of G_S, + O(HW^2) rest

  i.e. forward alone compares ``C_T^2 + C_S^2 + C_T C_S`` with
  ``(C_T + C_S) HW`` (+ HW^2 terms).  The spatial form is used when
  ``spatial <= channel``: at the paper's in5b shapes it is 7.8x (CIFAR,
  336/256 channels, 8x8) and 52x (ImageNet, 1024/2048 channels, 7x7) fewer
  operations.  In float32 it is also the more accurate form: it squares the
  *differences* G_S - G_T, whereas the channel form subtracts three O(1)
  sums (relative error ~1e-8 vs ~2e-5 at the CIFAR shape).
* **polynomial**, general d or c != 0: the channel form.
* **Gaussian**: :math:`\sigma^2`, the mean of all :math:`(C_T + C_S)^2`
  pooled squared distances, in closed form,
  :math:`(2M\sum_i\|z_i\|^2 - 2\|\sum_i z_i\|^2)/M^2` over the
  :math:`M = C_T + C_S` pooled samples :math:`z` (a constant:
  ``stop_gradient``); then each block's exponent
  :math:`-\|x - y\|^2 / 2\sigma^2 = x'^\top y'` comes out of one GEMM of
  augmented samples :math:`x' = [x, -\|x\|^2/2, 1]/\sigma^2`,
  :math:`y' = [y, 1, -\|y\|^2/2]` (the Gram form :math:`\|x\|^2 + \|y\|^2 -
  2x^\top y` with the true norms, so an all-zero map is the origin as for the
  other kernels), clipped at 0 before ``exp``.  :math:`O((C_T + C_S)^2 HW)`.

Implementation notes: every Gram that needs a gradient is computed as
``x stop(x)^T`` with its gradient doubled (``contrib.gradientmultiplier`` on
the (N,) term it feeds): the same value and -- because the upstream gradient
of a symmetric Gram is symmetric -- the exact gradient with *one* matrix
product in the backward pass instead of two.  Scale factors ride on the GEMM
(``linalg.gemm2(alpha=...)``) or on (N,) results.  Sums use ``batch_dot``
(:mod:`.utils`: MXNet's reduction operators are 10-20x slower on CPU).
Everything is batched: one operator per batch, no loop over samples.

Differences from the original MXNet code
----------------------------------------
TuSimple/neuron-selectivity-transfer, ``symbol/transfer.py`` (``mmd_poly``,
the only kernel it ships) with ``config/cfgs.py``:

* It returns ``mean(K_SS) - 2 mean(K_TS)`` and **drops the constant
  teacher-teacher term** ``mean(K_TT)``: same gradient, but its value is
  MMD^2 minus a constant (usually negative).  Ours is the full MMD^2 of Eq. 4.
* It applies the weight as ``MakeLoss(grad_scale=kt_weight)`` with
  ``kt_weight = 50``, i.e. the gradient is :math:`\lambda \nabla MMD^2`,
  not the :math:`\lambda/2` of Eq. 3.  Our ``default_weight`` is the same
  :math:`\lambda` (50 for poly), so the gradients are the released code's;
  weight 25 is the literal-Eq.-3 reading.
* It always builds the :math:`C \times C` channel Grams (with an explicit
  transpose copy); we pick the cheaper form (above).  Same normalisation
  (``L2Normalization``, ``eps=1e-10``), same per-sample mean then batch
  average (its per-sample ``MakeLoss`` gradients are summed and rescaled by
  1/batch by the optimiser).
* It assumes equal spatial sizes; we resize the larger map.
"""

from nst.errors import NSTError

from .base import TransferLoss, check_number, register
from .utils import channel_samples, match_spatial, sum_all, sum_cols, sum_rows, sum_squares

__all__ = ["NSTLinear", "NSTPoly", "NSTGaussian", "poly_form_costs", "poly_form"]

_FORMS = ("auto", "channel", "spatial")


def poly_form_costs(c_t, c_s, hw):
    """(channel, spatial) multiply-adds per image of the two poly forms (see module doc)."""
    channel = hw * (c_t * c_t + 2 * c_s * c_s + 2 * c_t * c_s)
    spatial = hw * hw * (c_t + 2 * c_s + 4)
    return channel, spatial


def poly_form(c_t, c_s, hw):
    """``"spatial"`` (HW x HW Grams, Eq. 9) or ``"channel"`` (C x C Grams), the cheaper."""
    channel, spatial = poly_form_costs(c_t, c_s, hw)
    return "spatial" if spatial <= channel else "channel"


def _teacher_gram(F, t, alpha, c_t, hw):
    """``alpha * t^T t`` (N, HW, HW) for the teacher (no gradient).

    ``linalg.syrk`` does half the multiply-adds of a GEMM but, in the OpenBLAS
    bundled with MXNet 1.9, only pays off for long contractions: measured on
    2 cores, syrk is ~25% faster at 2048 channels x 7x7 and ~15% slower at
    256 channels x 8x8.  Hence syrk when C_T >= 16 HW.
    """
    if c_t >= 16 * hw:
        return F.linalg.syrk(t, transpose=True, alpha=alpha)
    return F.linalg.gemm2(t, t, transpose_a=True, alpha=alpha)


def _double_grad(F, x):
    """Identity in the forward pass, gradient x2 in the backward pass."""
    return F.contrib.gradientmultiplier(x, scalar=2.0, is_int=False)


def _half_gram(F, x, y=None, transpose=False):
    """``x stop(y)^T`` (or ``x^T stop(y)``) per sample; ``y`` defaults to ``x``.

    For ``y = x`` this has the value of the symmetric Gram ``x x^T`` but, for a
    symmetric upstream gradient U, only half its gradient (``U x`` instead of
    ``(U + U^T) x``): the caller doubles the gradient of the (N,) term it
    feeds (:func:`_double_grad`), which gives the exact gradient with one GEMM
    in the backward pass instead of two.  Valid for every use here: kernels
    applied elementwise to a symmetric matrix, then summed, give a symmetric U.
    """
    y = x if y is None else y
    if transpose:
        return F.batch_dot(x, F.stop_gradient(y), transpose_a=True)
    return F.batch_dot(x, F.stop_gradient(y), transpose_b=True)


class _NST(TransferLoss):
    """Shared part of the three NST kernels: resize, normalise, batch mean."""

    inputs = "feature"
    defaults = {"eps": 1e-10}

    def _configure(self, eps, **rest):
        self.eps = check_number(self.loss_name, "eps", eps, low=0, low_open=True)
        return dict(eps=self.eps, **rest)

    def _samples(self, F, student, teacher, s_shape, t_shape):
        """Normalised (N, C, HW) samples of both maps, and HW."""
        student, teacher, (h, w) = match_spatial(F, student, teacher, s_shape, t_shape)
        return channel_samples(F, student, self.eps), channel_samples(F, teacher, self.eps), h * w

    def _loss(self, F, student, teacher, s_shape, t_shape):
        s, t, hw = self._samples(F, student, teacher, s_shape, t_shape)
        return F.mean(self._mmd2(F, s, t, s_shape[0], t_shape[0], hw))

    def _mmd2(self, F, s, t, c_s, c_t, hw):
        """Per-sample MMD^2, shape (N,), from normalised samples s (N, C_S, HW), t (N, C_T, HW)."""
        raise NotImplementedError


@register
class NSTLinear(_NST):
    r"""NST with the linear kernel :math:`k(x, y) = x^\top y`: ``get_loss("nst_linear")``.

    Eq. 4 with the linear kernel, computed as Eq. 5 of Huang & Wang 2017:

    .. math:: L_{MMD_L^2} = \Big\| \frac{1}{C_T}\sum_i \hat f_T^i
              - \frac{1}{C_S}\sum_j \hat f_S^j \Big\|_2^2

    per image, averaged over the batch; :math:`O(C \cdot HW)`.
    ``default_weight = 50`` (:math:`\lambda = 50`, Sec. 5, applied directly as
    the released code applies its ``kt_weight``).

    Parameters
    ----------
    eps : float > 0, default 1e-10
        Added to each map's squared norm before normalising.
    """

    loss_name = "nst_linear"
    default_weight = 50.0

    def _mmd2(self, F, s, t, c_s, c_t, hw):
        diff = sum_rows(F, s) * (1.0 / c_s) - sum_rows(F, t) * (1.0 / c_t)   # (N, HW)
        return sum_squares(F, diff)


@register
class NSTPoly(_NST):
    r"""NST with the polynomial kernel :math:`(x^\top y + c)^d`: ``get_loss("nst_poly")``.

    Eq. 4 of Huang & Wang 2017 with :math:`k(x, y) = (x^\top y + c)^d`,
    :math:`d = 2, c = 0` by default (Sec. 4.2), where it equals Eq. 9,

    .. math:: L_{MMD_P^2} = \|G_S - G_T\|_F^2, \qquad
              G = \hat{\mathbf F}^\top \hat{\mathbf F} / C \in R^{HW \times HW},

    per image, averaged over the batch.  ``default_weight = 50``
    (:math:`\lambda = 50`, Sec. 5 and 5.2, applied directly as the released
    code's ``kt_weight = 50``).  See the module
    docstring for the two equivalent forms, the cost rule that picks one, and
    the differences from the original code.

    Parameters
    ----------
    degree : int >= 1, default 2
        :math:`d`.
    c : float >= 0, default 0
        :math:`c` (>= 0 keeps the kernel positive definite, so MMD^2 >= 0).
    form : "auto" | "channel" | "spatial", default "auto"
        Which Gram form to compute; "auto" applies the cost rule.  "spatial"
        exists only for d = 2, c = 0.
    eps : float > 0, default 1e-10
        Added to each map's squared norm before normalising.
    """

    loss_name = "nst_poly"
    default_weight = 50.0
    defaults = {"degree": 2, "c": 0.0, "form": "auto", "eps": 1e-10}

    def _configure(self, degree, c, form, eps):
        self.degree = check_number("nst_poly", "degree", degree, low=1, integer=True)
        self.c = check_number("nst_poly", "c", c, low=0)
        if form not in _FORMS:
            raise NSTError("nst_poly: form must be one of %s, got %r" % (", ".join(_FORMS), form))
        if form == "spatial" and (self.degree, self.c) != (2, 0.0):
            raise NSTError("nst_poly: form='spatial' (the HW x HW Gram of Eq. 9) exists only "
                           "for degree=2, c=0; use form='auto' or 'channel'")
        self.form = form
        return super()._configure(eps, degree=self.degree, c=self.c, form=form)

    def form_for(self, c_s, c_t, hw):
        """The form used for these channel counts and (common) H*W."""
        if (self.degree, self.c) != (2, 0.0):
            return "channel"
        if self.form != "auto":
            return self.form
        return poly_form(c_t, c_s, hw)

    def _kernel_sum(self, F, gram):
        """(N,) sums of k = (gram + c)^d over each sample's Gram."""
        x = gram + self.c if self.c else gram
        if self.degree == 2:
            return sum_squares(F, x)
        return sum_all(F, x if self.degree == 1 else F.power(x, self.degree))

    def _mmd2(self, F, s, t, c_s, c_t, hw):
        if self.form_for(c_s, c_t, hw) == "spatial":
            # C_S (G_S - G_T), (N, HW, HW); the 1/C_S^2 is applied to the (N,) result.
            diff = _half_gram(F, s, transpose=True) - _teacher_gram(F, t, float(c_s) / c_t, c_t, hw)
            return _double_grad(F, sum_squares(F, diff)) * (1.0 / c_s ** 2)
        k_tt = self._kernel_sum(F, F.linalg.gemm2(t, t, transpose_b=True))     # C_T x C_T
        k_ss = _double_grad(F, self._kernel_sum(F, _half_gram(F, s)))          # C_S x C_S
        k_ts = self._kernel_sum(F, F.batch_dot(s, t, transpose_b=True))        # C_S x C_T
        return (k_tt * (1.0 / c_t ** 2) + k_ss * (1.0 / c_s ** 2)
                - k_ts * (2.0 / (c_s * c_t)))


@register
class NSTGaussian(_NST):
    r"""NST with the Gaussian kernel: ``get_loss("nst_gaussian")``.

    Eq. 4 of Huang & Wang 2017 with
    :math:`k(x, y) = \exp(-\|x - y\|_2^2 / 2\sigma^2)`, where
    :math:`\sigma^2` is "the mean of squared distance of the pairs" (Sec. 4.2):
    here the mean of all :math:`(C_T + C_S)^2` entries of the squared-distance
    matrix of the pooled teacher + student samples of each image, treated as
    a constant (no gradient flows through it) and floored at ``min_sigma2``
    = 1e-3 (only reached when all maps of an image nearly coincide).  Distances come from the Grams,
    :math:`\|x\|^2 + \|y\|^2 - 2x^\top y`, clipped at 0.  Per image, averaged
    over the batch.  ``default_weight = 100`` (:math:`\lambda = 100`, Sec. 5,
    applied directly as the released code applies its ``kt_weight``).  Cost :math:`O((C_T + C_S)^2 HW)`.

    Parameters
    ----------
    eps : float > 0, default 1e-10
        Added to each map's squared norm before normalising.
    """

    loss_name = "nst_gaussian"
    default_weight = 100.0

    #: Floor of sigma^2.  Distances between unit-norm maps are O(1) (typically
    #: sigma^2 ~ 0.5-1); sigma^2 < 1e-3 means all maps of an image coincide to
    #: a few percent (e.g. all-zero or 1x1 maps), where Gram-based distances
    #: are float rounding noise that exp(-D / 2 sigma^2) would amplify.
    min_sigma2 = 1e-3

    def _mmd2(self, F, s, t, c_s, c_t, hw):
        # sigma^2, a constant: the mean over the pooled samples z (M = C_T + C_S of them)
        # of ||z_i - z_j||^2 = (2 M sum_i ||z_i||^2 - 2 ||sum_i z_i||^2) / M^2, in O(M HW).
        # (Gradients are stopped at the inputs of this branch: MXNet 1.9 segfaults in
        # backward when only the output of a batch_dot-then-reduce branch is stopped.)
        m = c_t + c_s
        s0, t0 = F.stop_gradient(s), F.stop_gradient(t)
        norms = sum_squares(F, s0) + sum_squares(F, t0)
        total = sum_squares(F, sum_rows(F, s0) + sum_rows(F, t0))
        sigma2 = F.maximum((norms * (2.0 * m) - total * 2.0) * (1.0 / m ** 2), self.min_sigma2)
        gamma = F.reshape(1.0 / F.stop_gradient(sigma2), shape=(-1, 1, 1))  # 1 / sigma^2

        # -||x - y||^2 / (2 sigma^2) = x'^T y' with x' = [x, -||x||^2/2, 1] / sigma^2 and
        # y' = [y, 1, -||y||^2/2]: one GEMM per block gives the kernel's exponent.
        def augment(x):
            half_norm = sum_cols(F, F.square(x)) * -0.5                        # (N, C, 1)
            ones = F.ones_like(half_norm)
            left = F.broadcast_mul(F.concat(x, half_norm, ones, dim=2), gamma)
            return left, F.concat(x, ones, half_norm, dim=2)

        def kernel_sum(exponent):          # clipped at 0: a distance is never negative
            return sum_all(F, F.exp(F.minimum(exponent, 0.0)))

        s_left, s_right = augment(s)
        t_left, t_right = augment(t)
        k_tt = kernel_sum(F.batch_dot(t_left, t_right, transpose_b=True))    # C_T x C_T
        k_ss = _double_grad(F, kernel_sum(_half_gram(F, s_left, s_right)))  # C_S x C_S
        k_st = kernel_sum(F.batch_dot(s_left, t_right, transpose_b=True))    # C_S x C_T
        return k_tt * (1.0 / c_t ** 2) + k_ss * (1.0 / c_s ** 2) - k_st * (2.0 / (c_s * c_t))
