"""Attention Transfer (Zagoruyko & Komodakis, 2017), the paper's "AT" baseline."""

from .base import TransferLoss, check_number, register
from .utils import match_spatial, sum_rows, sum_squares

__all__ = ["ATLoss"]


@register
class ATLoss(TransferLoss):
    r"""Activation-based attention transfer: ``get_loss("at", p=2)``.

    The attention map of a feature :math:`\mathbf{F} \in R^{C \times HW}` is
    the L2-normalised, flattened channel mean of :math:`|\mathbf{f}^k|^p`,

    .. math:: Q(\mathbf{F}) = \frac{a}{\|a\|_2}, \qquad
              a = \frac{1}{C}\sum_{k=1}^{C} |\mathbf{f}^{k}|^{p},

    and the loss is the mean over the batch and the :math:`HW` positions of
    :math:`(Q(\mathbf{F}_S) - Q(\mathbf{F}_T))^2` (Eq. 6 of Huang & Wang 2017
    with the "square sum" mapping, p = 2, which "performs best in the
    experiments of [38]"; Eq. 7 is the p = 1 "abs sum" variant).  The
    normalisation is :math:`a / \sqrt{\|a\|^2 + \epsilon}`, so all-zero maps
    give a finite loss.  ``default_weight = 1000`` (Sec. 5: lambda = 10^3).
    Different spatial sizes: the larger feature map is resized first
    (:mod:`.utils`).

    Parameters
    ----------
    p : float >= 1, default 2
        The exponent of the attention mapping (``|f|^p``; for even p this is
        ``f^p``).
    eps : float > 0, default 1e-10
        Added to the squared norm of the attention map.

    Inputs: ``inputs = "feature"``, (N, C, H, W) maps.
    """

    loss_name = "at"
    inputs = "feature"
    default_weight = 1000.0
    defaults = {"p": 2.0, "eps": 1e-10}

    def _configure(self, p, eps):
        self.p = check_number("at", "p", p, low=1)
        self.eps = check_number("at", "eps", eps, low=0, low_open=True)
        return {"p": self.p, "eps": self.eps}

    def _attention(self, F, x, channels):
        if self.p == 2:
            powered = F.square(x)
        elif self.p == 1:
            powered = F.abs(x)
        else:
            powered = F.power(F.abs(x), self.p)
        flat = sum_rows(F, F.reshape(powered, shape=(0, 0, -1))) * (1.0 / channels)  # (N, H*W)
        return F.L2Normalization(flat, mode="instance", eps=self.eps)

    def _loss(self, F, student, teacher, s_shape, t_shape):
        student, teacher, (h, w) = match_spatial(F, student, teacher, s_shape, t_shape)
        diff = self._attention(F, student, s_shape[0]) - self._attention(F, teacher, t_shape[0])
        return F.mean(sum_squares(F, diff)) * (1.0 / (h * w))
