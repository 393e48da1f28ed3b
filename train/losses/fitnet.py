"""FitNet hints (Romero et al., 2015), the paper's "FitNet" baseline."""

from mxnet.gluon import nn

from nst.errors import NSTError

from .base import TransferLoss, register
from .utils import match_spatial, sum_squares

__all__ = ["FitNetLoss"]


@register
class FitNetLoss(TransferLoss):
    r"""Feature-map regression through a learned 1x1 regressor: ``get_loss("fitnet")``.

    A 1x1 convolution :math:`r` (student channels -> teacher channels, with
    bias) maps the student feature onto the teacher's, and the loss is the
    mean squared difference over all elements (batch, channels, positions):

    .. math:: L_{FitNet} = \frac{1}{N C_T H W} \sum
              \big(r(\mathbf{F}_S) - \mathbf{F}_T\big)^2 .

    This is Romero et al.'s hint loss as re-implemented in the paper's
    comparison (Sec. 5, "For FitNet and AT, the value of lambda is set to
    10^2 and 10^3"), so ``default_weight = 100``.  Different spatial sizes:
    the larger map is resized to the smaller one first (:mod:`.utils`; the
    1x1 regressor commutes with that resize).

    The regressor's weight and bias are parameters of this block
    (``loss.collect_params()``): the trainer initialises them and trains them
    with the student; they are not part of the exported student.

    Parameters
    ----------
    (no method parameters)
    teacher_shape : required
        Its channel count sets the regressor's output channels; the student
        channel count comes from ``student_shape`` when given (otherwise it
        is inferred on the first call).

    Inputs: ``inputs = "feature"``, (N, C, H, W) maps.
    """

    loss_name = "fitnet"
    inputs = "feature"
    default_weight = 100.0
    defaults = {}

    def __init__(self, student_shape=None, teacher_shape=None, **params):
        super().__init__(student_shape=student_shape, teacher_shape=teacher_shape, **params)
        if self.teacher_shape is None:
            raise NSTError("fitnet needs teacher_shape (the teacher feature's per-sample shape, "
                           "e.g. (256, 8, 8)) to build its 1x1 regressor")
        in_channels = self.student_shape[0] if self.student_shape is not None else 0
        with self.name_scope():
            self.regressor = nn.Conv2D(self.teacher_shape[0], kernel_size=1, use_bias=True,
                                       in_channels=in_channels)

    def _check_call(self, s_shape, t_shape):
        super()._check_call(s_shape, t_shape)
        if t_shape[1] != self.teacher_shape[0]:
            raise NSTError("fitnet: its regressor was built for %d teacher channels but the "
                           "teacher feature has %d; pass the right teacher_shape"
                           % (self.teacher_shape[0], t_shape[1]))
        if self.student_shape is not None and s_shape[1] != self.student_shape[0]:
            raise NSTError("fitnet: its regressor was built for %d student channels but the "
                           "student feature has %d; pass the right student_shape"
                           % (self.student_shape[0], s_shape[1]))

    def _loss(self, F, student, teacher, s_shape, t_shape):
        student, teacher, (h, w) = match_spatial(F, student, teacher, s_shape, t_shape)
        per_sample = sum_squares(F, self.regressor(student) - teacher)
        return F.mean(per_sample) * (1.0 / (t_shape[0] * h * w))
