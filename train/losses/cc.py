r"""Correlation Congruence (Peng et al., ICCV 2019): ``cc``."""

import math

from .base import check_number, register
from .rkd import EmbeddingLoss

__all__ = ["CCLoss"]


@register
class CCLoss(EmbeddingLoss):
    r"""Match the batch's correlation matrices: ``get_loss("cc", gamma=0.4, order=2)``.

    Each network's L2-normalised embeddings :math:`\hat x_1..\hat x_b` of the
    batch give a correlation matrix :math:`C \in R^{b \times b}` through the
    Gaussian RBF kernel :math:`k(x, y) = \exp(-\gamma\|x - y\|^2)`, which for
    unit vectors is :math:`e^{-2\gamma} e^{2\gamma\, x^\top y}`, approximated
    by its Taylor series of order :math:`P` (the paper's "generalized kernel"):

    .. math:: C_{ij} = \sum_{p=0}^{P} e^{-2\gamma} \frac{(2\gamma)^p}{p!}
              (\hat x_i^\top \hat x_j)^p ,

    and the loss is (the paper's :math:`L_{CC}`)

    .. math:: L_{CC} = \frac{1}{b^2} \|C_T - C_S\|_F^2
              = \frac1b \sum_i \Big[\frac1b \sum_j (C_{T,ij} - C_{S,ij})^2\Big].

    :math:`\gamma` = 0.4, :math:`P` = 2 by default.  Normalisation:
    :math:`\hat x = x / \sqrt{\|x\|^2 + 10^{-12}}`.

    Embeddings: the paper applies CC to the networks' penultimate features;
    the configs pass the last feature maps (pooled here, :mod:`.rkd`), i.e.
    exactly those features, with no learned embedding (RepDistiller adds a
    trainable linear embedding on both sides; the correlation matrices are
    b x b whatever the dimensions, so none is needed).  Only the
    correlation term is implemented (the paper also keeps the instance-level
    KD term: combine with ``kd`` for that, ``configs/*/kd_cc.yaml``).

    Default weight.  RepDistiller's beta = 0.02 belongs to a different loss
    (its "CC" averages products of feature differences of neighbouring
    samples on learned 128-d embeddings) and would make this term
    negligible (|C_T - C_S| ~ 0.1, so 0.02 L_CC ~ 1e-4); the paper's own
    value could not be consulted offline.  ``default_weight = 100``, the
    weight Knowledge-Distillation-Zoo (AberHu) uses for this exact form
    (gamma = 0.4, P = 2, mean squared difference), which puts the term on
    the scale of the cross-entropy.  Override it in the config if the
    paper's beta is known.

    Properties: >= 0; 0 when the student's embeddings are the teacher's up
    to a positive scale per image and a rotation; invariant to those.
    Cost :math:`O(b^2 D)`.

    Parameters
    ----------
    gamma : float > 0, default 0.4
        The RBF kernel's :math:`\gamma`.
    order : int >= 1, default 2
        The Taylor order :math:`P` (order 0 would make C a constant).

    Inputs: ``inputs = "embedding"``: (N, D), or (N, C, H, W) globally
    average-pooled; computed within each device's part of the batch.
    """

    loss_name = "cc"
    default_weight = 100.0
    defaults = {"gamma": 0.4, "order": 2}

    def _configure(self, gamma, order):
        self.gamma = check_number("cc", "gamma", gamma, low=0, low_open=True)
        self.order = check_number("cc", "order", order, low=1, integer=True)
        return {"gamma": self.gamma, "order": self.order}

    def coefficients(self):
        """Taylor coefficients ``exp(-2 gamma) (2 gamma)^p / p!``, p = 0..P."""
        two_g = 2.0 * self.gamma
        return [math.exp(-two_g) * two_g ** p / math.factorial(p) for p in range(self.order + 1)]

    def _correlation(self, F, x):
        unit = F.L2Normalization(x, mode="instance", eps=1e-12)
        sim = F.dot(unit, unit, transpose_b=True)
        coef = self.coefficients()
        corr = sim * coef[-1] + coef[-2]                       # Horner's scheme
        for c in reversed(coef[:-2]):
            corr = corr * sim + c
        return corr

    def _relational(self, F, student, teacher):
        diff = self._correlation(F, teacher) - self._correlation(F, student)
        return F.mean(F.square(diff))
