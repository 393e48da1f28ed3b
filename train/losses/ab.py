r"""Activation Boundaries (Heo, Lee, Yun & Choi, AAAI 2019): ``ab``.

The method has two stages: the student is first *initialised* by the
activation-transfer loss alone, then trained for classification with the
cross-entropy alone (AB's connector is discarded).  Here the stages are
trainer settings, not code: an ``ab`` transfer entry with ``end_epoch: E``
together with ``train.ce_start_epoch: E`` trains the first E epochs with the
AB loss only and the rest with the cross-entropy only (see
``configs/cifar10/ab.yaml``; ``kd_ab.yaml`` adds KD from epoch E).
"""

import math

import mxnet as mx
from mxnet.gluon import nn

from nst.errors import NSTError

from .base import TransferLoss, check_number, register
from .utils import match_spatial, sum_squares

__all__ = ["ABLoss"]


@register
class ABLoss(TransferLoss):
    r"""Activation-boundary transfer with the hinge surrogate: ``get_loss("ab", margin=1)``.

    Inputs are *pre-ReLU* features: a neuron of the teacher is active where
    :math:`T > 0`, :math:`\rho(T) = 1[T > 0]`.  A connector :math:`r` (1x1
    convolution without bias, student channels -> teacher channels, then
    BatchNorm, as the paper and the authors' code) maps the student feature
    onto the teacher's neurons, and the piecewise-differentiable surrogate of
    the activation-transfer loss :math:`\|\rho(T) - \rho(r(S))\|_1` is (Eq. 5
    with the margin :math:`\mu`, extended to conv maps by summing over the
    positions)

    .. math:: L_{AB} = \big\| \rho(T) \odot \sigma(\mu 1 - r(S))
              + (1 - \rho(T)) \odot \sigma(\mu 1 + r(S)) \big\|_2^2 ,
              \qquad \sigma = \mathrm{ReLU},

    the squared norm over all :math:`C_T H W` elements of an image, averaged
    over the batch: it is 0 exactly when every neuron of :math:`r(S)` is on
    the teacher's side of its activation boundary by at least the margin.

    Normalisation and weight: this per-image *sum* (not a per-element mean)
    is the authors' code (``criterion_alternative_L2(...).sum() /
    batch_size``), which then multiplies the last transfer layer's term by
    3/1000 (and earlier layers by a further 1/2, 1/4); RepDistiller keeps
    that.  Hence ``default_weight = 0.003``.  Since only this loss acts
    during the initialisation stage, the weight there is effectively a
    learning-rate factor.

    Spatial sizes: the larger map is resized to the smaller one before the
    connector (:mod:`.utils`; the authors' code assumes equal sizes).  The
    connector's BatchNorm normalises with the statistics of the batch (the
    loss is only evaluated in training), so, like the relational losses,
    the batch loss is not exactly the mean of per-image losses
    (``batch_statistics = True``).

    The connector's parameters are children of this block
    (``loss.collect_params()``): trained with the student, not exported.
    Its convolution is initialised as in the authors' code, normal with
    std :math:`\sqrt{2 / C_T}` (He, fan-out), BatchNorm gamma 1, beta 0.

    Parameters
    ----------
    margin : float >= 0, default 1.0
        :math:`\mu` (the paper's value).
    teacher_shape : required
        Its channel count sets the connector's output channels.

    Inputs: ``inputs = "feature"``, (N, C, H, W) **pre-ReLU** maps (the
    configs: the student's in5b_bn and the teacher's bn1, the BatchNorm
    output whose ReLU is the teacher's last activation -- the authors' code
    also takes ``bn1(block3(x))`` for its last layer).
    """

    loss_name = "ab"
    inputs = "feature"
    default_weight = 0.003
    defaults = {"margin": 1.0}
    #: the connector's BatchNorm uses the batch's statistics: a batch's loss is not
    #: the mean of its images' losses
    batch_statistics = True

    def __init__(self, student_shape=None, teacher_shape=None, **params):
        super().__init__(student_shape=student_shape, teacher_shape=teacher_shape, **params)
        if self.teacher_shape is None:
            raise NSTError("ab needs teacher_shape (the teacher feature's per-sample shape, "
                           "e.g. (256, 8, 8)) to build its connector")
        c_t = self.teacher_shape[0]
        in_channels = self.student_shape[0] if self.student_shape is not None else 0
        with self.name_scope():
            self.connector = nn.HybridSequential(prefix="connector_")
            with self.connector.name_scope():
                self.connector.add(
                    nn.Conv2D(c_t, kernel_size=1, use_bias=False, in_channels=in_channels,
                              weight_initializer=mx.init.Normal(math.sqrt(2.0 / c_t))),
                    nn.BatchNorm(in_channels=c_t))

    def _configure(self, margin):
        self.margin = check_number("ab", "margin", margin, low=0)
        return {"margin": self.margin}

    def _check_call(self, s_shape, t_shape):
        super()._check_call(s_shape, t_shape)
        if t_shape[1] != self.teacher_shape[0]:
            raise NSTError("ab: its connector was built for %d teacher channels but the "
                           "teacher feature has %d; pass the right teacher_shape"
                           % (self.teacher_shape[0], t_shape[1]))
        if self.student_shape is not None and s_shape[1] != self.student_shape[0]:
            raise NSTError("ab: its connector was built for %d student channels but the "
                           "student feature has %d; pass the right student_shape"
                           % (self.student_shape[0], s_shape[1]))

    def _loss(self, F, student, teacher, s_shape, t_shape):
        student, teacher, _ = match_spatial(F, student, teacher, s_shape, t_shape)
        mapped = self.connector(student)
        active = teacher > 0                                   # rho(T), no gradient
        hinge = active * F.relu(self.margin - mapped) + (1 - active) * F.relu(self.margin + mapped)
        return F.mean(sum_squares(F, hinge))
