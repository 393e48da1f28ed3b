r"""Variational Information Distillation (Ahn, Hu, Damianou, Lawrence & Dai, CVPR 2019): ``vid``."""

import math

import mxnet as mx
from mxnet.gluon import nn

from nst.errors import NSTError

from .base import TransferLoss, check_number, register
from .utils import match_spatial, sum_squares

__all__ = ["VIDLoss"]


@register
class VIDLoss(TransferLoss):
    r"""Gaussian variational bound on the teacher-student mutual information: ``get_loss("vid")``.

    The teacher feature :math:`t` is modelled given the student feature
    :math:`s` by a Gaussian with a learned mean :math:`\mu(s)` and a learned
    variance per teacher channel (homoscedastic over positions and images,
    Eq. 4-5 of Ahn et al.),

    .. math:: \sigma_c^2 = \log(1 + e^{\alpha_c}) + \epsilon ,

    and the loss is its negative log-likelihood without the constant
    :math:`\frac12 \log 2\pi`, averaged over the channels and positions of
    each image, then over the batch:

    .. math:: L_{VID} = \frac1N \sum_n \frac{1}{C_T HW} \sum_{c=1}^{C_T} \sum_{h,w}
              \Big[ \log \sigma_c + \frac{(t_{c,h,w} - \mu_{c,h,w}(s))^2}{2\sigma_c^2} \Big].

    This is the mean over all elements that the authors' code and
    RepDistiller (``torch.mean(neg_log_prob)``) and mdistiller compute, so
    weight 1 here is their beta = 1 per layer.  (The paper's Eq. 5 sums over
    channels and positions; that is this value times :math:`C_T HW`.)  It
    can be negative (small variances) and is never 0 at equality; the optimum
    of :math:`\sigma_c^2` for a fixed regressor is the mean squared residual
    of channel c.

    :math:`\mu(\cdot)` is the paper's regressor: three 1x1 convolutions with
    ReLUs in between (conv-ReLU-conv-ReLU-conv), without biases, hidden
    width = the teacher's channels by default (as the authors' code via
    RepDistiller); :math:`\alpha_c` starts where :math:`\sigma_c^2` =
    ``init_var`` = 5 (the authors' value).  All of them are parameters of
    this block (``loss.collect_params()``), trained with the student (and,
    like the student, weight-decayed by the trainer), not exported.
    ``default_weight = 1`` (one layer; beta = 1 per layer, RepDistiller's
    CIFAR setting, on the same element mean).

    Different spatial sizes: the larger map is resized to the smaller one
    first (:mod:`.utils`).

    Parameters
    ----------
    hidden_channels : int >= 1 or None, default None
        Width of the regressor's two hidden layers (None: the teacher's channels).
    init_var : float > eps, default 5.0
        Initial :math:`\sigma_c^2`.
    eps : float > 0, default 1e-5
        The variance floor :math:`\epsilon`.
    teacher_shape : required
        Its channel count sets the regressor's output and the variances.

    Inputs: ``inputs = "feature"``, (N, C, H, W) maps (the configs: NST's
    layer pair, the student's in5b_bn and the teacher's bn1).
    """

    loss_name = "vid"
    inputs = "feature"
    default_weight = 1.0
    defaults = {"hidden_channels": None, "init_var": 5.0, "eps": 1e-5}

    def __init__(self, student_shape=None, teacher_shape=None, **params):
        super().__init__(student_shape=student_shape, teacher_shape=teacher_shape, **params)
        if self.teacher_shape is None:
            raise NSTError("vid needs teacher_shape (the teacher feature's per-sample shape, "
                           "e.g. (256, 8, 8)) to build its regressor and variances")
        c_t = self.teacher_shape[0]
        hidden = self.hidden_channels or c_t
        in_channels = self.student_shape[0] if self.student_shape is not None else 0
        # softplus(alpha) + eps = init_var  <=>  alpha = log(exp(init_var - eps) - 1)
        alpha0 = math.log(math.expm1(self.init_var - self.eps))
        with self.name_scope():
            self.regressor = nn.HybridSequential(prefix="regressor_")
            with self.regressor.name_scope():
                self.regressor.add(
                    nn.Conv2D(hidden, 1, use_bias=False, in_channels=in_channels),
                    nn.Activation("relu"),
                    nn.Conv2D(hidden, 1, use_bias=False, in_channels=hidden),
                    nn.Activation("relu"),
                    nn.Conv2D(c_t, 1, use_bias=False, in_channels=hidden))
            self.alpha = self.params.get("alpha", shape=(c_t,), init=mx.init.Constant(alpha0))

    def _configure(self, hidden_channels, init_var, eps):
        if hidden_channels is not None:
            hidden_channels = check_number("vid", "hidden_channels", hidden_channels, low=1,
                                           integer=True)
        self.hidden_channels = hidden_channels
        self.eps = check_number("vid", "eps", eps, low=0, low_open=True)
        self.init_var = check_number("vid", "init_var", init_var, low=self.eps, low_open=True)
        return {"hidden_channels": hidden_channels, "init_var": self.init_var, "eps": self.eps}

    def _check_call(self, s_shape, t_shape):
        super()._check_call(s_shape, t_shape)
        if t_shape[1] != self.teacher_shape[0]:
            raise NSTError("vid: its regressor was built for %d teacher channels but the "
                           "teacher feature has %d; pass the right teacher_shape"
                           % (self.teacher_shape[0], t_shape[1]))
        if self.student_shape is not None and s_shape[1] != self.student_shape[0]:
            raise NSTError("vid: its regressor was built for %d student channels but the "
                           "student feature has %d; pass the right student_shape"
                           % (self.student_shape[0], s_shape[1]))

    def variance(self, ctx=None):
        """The current per-channel variances sigma_c^2 as an NDArray (C_T,)."""
        alpha = self.alpha.data(ctx)
        return mx.nd.Activation(alpha, act_type="softrelu") + self.eps

    # ``alpha`` is this block's own parameter, so Gluon passes it to hybrid_forward.
    def hybrid_forward(self, F, student, teacher, alpha):
        s_shape, t_shape = self._shapes or (self.student_shape, self.teacher_shape)
        if s_shape is None:
            raise NSTError("vid called on symbols without student_shape: pass the per-sample "
                           "shapes to get_loss()")
        return self._nll(F, student, F.stop_gradient(teacher), alpha, s_shape, t_shape)

    def _nll(self, F, student, teacher, alpha, s_shape, t_shape):
        student, teacher, (h, w) = match_spatial(F, student, teacher, s_shape, t_shape)
        var = F.Activation(alpha, act_type="softrelu") + self.eps            # sigma_c^2, (C_T,)
        scale = F.reshape(F.rsqrt(var * 2.0), shape=(1, -1, 1, 1))           # 1 / sqrt(2 sigma^2)
        residual = F.broadcast_mul(teacher - self.regressor(student), scale)
        c_t = t_shape[0]
        fit = F.mean(sum_squares(F, residual)) * (1.0 / (c_t * h * w))
        return fit + F.mean(F.log(var)) * 0.5                                # mean_c log sigma_c
