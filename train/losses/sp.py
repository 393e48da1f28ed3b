r"""Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019): ``sp``."""

from .base import TransferLoss, check_number, register

__all__ = ["SPLoss"]


@register
class SPLoss(TransferLoss):
    r"""Preserve the batch's pairwise activation similarities: ``get_loss("sp")``.

    For a batch of :math:`b` images, :math:`Q \in R^{b \times CHW}` holds
    each image's feature map flattened (Eq. 1-2 of Tung & Mori); its Gram
    :math:`G = Q Q^\top` is row-L2-normalised,
    :math:`\tilde G_{[i,:]} = G_{[i,:]} / \|G_{[i,:]}\|_2`, for the teacher
    and for the student, and the loss is (Eq. 3-4)

    .. math:: L_{SP} = \frac{1}{b^2} \|\tilde G_T - \tilde G_S\|_F^2
              = \frac1b \sum_i \Big[\frac1b \sum_j
              (\tilde G_{T,ij} - \tilde G_{S,ij})^2\Big],

    i.e. the mean over the images of a per-image (row) term -- but a row
    depends on the whole batch (see below).  The normalisation is
    :math:`G_{[i,:]} / \sqrt{\|G_{[i,:]}\|^2 + \epsilon}` (an all-zero map
    gives a zero row, not NaN).  ``default_weight = 3000`` (the paper's
    :math:`\gamma` = 3000 for its CIFAR-10 experiments; RepDistiller uses
    the same on CIFAR-100).

    The maps may differ in channels *and* spatial size: only the
    :math:`b \times b` similarities are compared, so nothing is resized.

    Properties (what the row normalisation gives): invariant to one positive
    scale of *all* activations of the batch (G scales by a^2, every row
    is renormalised), and to any orthogonal transform of the flattened
    feature space applied to every image (e.g. a channel permutation), for
    either network; 0 when the student's features equal the teacher's (even
    with other channel counts, e.g. duplicated channels, whenever the row-
    normalised Grams agree).  It is **not** invariant to scaling the
    activations of a single image: that scales row and column :math:`i` of
    G differently (:math:`G_{ii}` by :math:`a^2`, :math:`G_{ij}` by
    :math:`a`), which changes every row's normalised direction.

    Batch-relational: the loss of a batch is not the mean of per-image
    losses, and the trainer computes it within each device's part of the
    batch (``batch_relational = True``; see :mod:`.rkd`).  Cost
    :math:`O(b^2 CHW)` per network.

    Parameters
    ----------
    eps : float > 0, default 1e-10
        Added to each row's squared norm before normalising.

    Inputs: ``inputs = "feature"``, (N, C, H, W) maps (the configs use NST's
    layer pair, the student's in5b_bn and the teacher's stage3).
    """

    loss_name = "sp"
    inputs = "feature"
    default_weight = 3000.0
    defaults = {"eps": 1e-10}
    batch_relational = True

    def _configure(self, eps):
        self.eps = check_number("sp", "eps", eps, low=0, low_open=True)
        return {"eps": self.eps}

    def _similarity(self, F, x):
        flat = F.reshape(x, shape=(0, -1))                     # Q, (b, C*H*W)
        gram = F.dot(flat, flat, transpose_b=True)             # G = Q Q^T, (b, b)
        return F.L2Normalization(gram, mode="instance", eps=self.eps)

    def _loss(self, F, student, teacher, s_shape, t_shape):
        diff = self._similarity(F, teacher) - self._similarity(F, student)
        return F.mean(F.square(diff))
