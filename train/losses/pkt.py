r"""Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018): ``pkt``."""

from .base import check_number, register
from .rkd import EmbeddingLoss, offdiagonal_mask

__all__ = ["PKTLoss"]


@register
class PKTLoss(EmbeddingLoss):
    r"""Match the conditional probabilities of the cosine kernel: ``get_loss("pkt")``.

    Each network's embeddings :math:`x_1..x_b` of the batch define, through
    the cosine-similarity kernel scaled to [0, 1],

    .. math:: K(x_i, x_j) = \frac12 \Big( \frac{x_i^\top x_j}{\|x_i\|_2 \|x_j\|_2} + 1 \Big),
              \qquad
              p_{j|i} = \frac{K(x_i, x_j)}{\sum_{k \ne i} K(x_i, x_k)} \quad (j \ne i),

    a distribution over the other images of the batch for every image
    :math:`i` (:math:`p_{j|i}` from the teacher, :math:`q_{j|i}` from the
    student).  The paper's loss is :math:`\sum_i \sum_{j \ne i} p_{j|i}
    \log(p_{j|i} / q_{j|i})`, the KL divergences KL(P_T || P_S) of the rows
    summed over the batch; here it is their **mean over the images**
    (the interface's "mean over samples"),

    .. math:: L_{PKT} = \frac1b \sum_i \sum_{j \ne i}
              p_{j|i} \big(\log(p_{j|i} + \epsilon) - \log(q_{j|i} + \epsilon)\big),

    with :math:`\epsilon` = 1e-7 guarding :math:`\log 0` (the authors'
    code's value).  Embeddings are L2-normalised as
    :math:`x / \sqrt{\|x\|^2 + 10^{-12}}` (an all-zero embedding has
    similarity 1/2 to every other one).

    Default weight.  The paper trains with this loss alone (no weight);
    RepDistiller uses beta = 3e4 on the authors' code, which averages the
    :math:`b^2` entries :math:`p \log(p/q)` (self-pairs included) at batch
    64, i.e. :math:`L_{PKT} / b`.  Its weight on :math:`L_{PKT}` is
    3e4 / 64, so ``default_weight = 468.75``.  (At the paper's CIFAR batch
    of 128, the RepDistiller code's *effective* weight would be 3e4/128 =
    234.375.)  Also unlike the authors' code, self-pairs :math:`j = i` are
    excluded, as in the paper's definition.

    Properties: >= 0; 0 when the student's embeddings are the teacher's up
    to a positive scale per image and a rotation (same cosines); invariant
    to such transforms of either embedding.  Cost :math:`O(b^2 D)`.

    Parameters
    ----------
    eps : float > 0, default 1e-7
        Added to both probabilities inside the logarithm.

    Inputs: ``inputs = "embedding"``: (N, D), or (N, C, H, W) globally
    average-pooled; computed within each device's part of the batch
    (see :mod:`.rkd`).
    """

    loss_name = "pkt"
    default_weight = 468.75
    defaults = {"eps": 1e-7}

    def _configure(self, eps):
        self.eps = check_number("pkt", "eps", eps, low=0, low_open=True)
        return {"eps": self.eps}

    @staticmethod
    def _conditionals(F, x, mask):
        """(N, N) row-stochastic p_{j|i} (zero diagonal) of the cosine kernel."""
        unit = F.L2Normalization(x, mode="instance", eps=1e-12)
        kernel = (F.dot(unit, unit, transpose_b=True) + 1.0) * 0.5 * mask
        return F.broadcast_div(kernel, F.sum(kernel, axis=1, keepdims=True) + 1e-12)

    def _relational(self, F, student, teacher):
        mask = offdiagonal_mask(F, teacher)
        p = self._conditionals(F, teacher, mask)
        q = self._conditionals(F, student, mask)
        kl = p * (F.log(p + self.eps) - F.log(q + self.eps))
        return F.mean(F.sum(kl, axis=1))
