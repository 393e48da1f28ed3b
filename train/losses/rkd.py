r"""Relational Knowledge Distillation (Park, Kim, Lu & Cho, CVPR 2019): ``rkd``.

This module also holds :class:`EmbeddingLoss`, the shared base of the
batch-relational losses on *embeddings* (RKD here, PKT in :mod:`.pkt`, CC in
:mod:`.cc`).

Embeddings
----------
An embedding loss takes one vector per image, ``(N, D)``: logits, or -- the
usual choice, and the one of the shipped configs -- the penultimate feature.
A 4-D input ``(N, C, H, W)`` is **globally average-pooled** to ``(N, C)``
first, so passing the last feature map (the student's ``in5b``, the teacher's
``relu1``) gives exactly the vector each network feeds to its classifier.
Student and teacher may have different dimensions (``D_S != D_T``): only
within-network relations (distances, angles, similarities between the images
of the batch) are compared.

Batch-relational losses
-----------------------
These losses compare relations *between the images of a batch*, so their
value depends on the whole batch, not on each image alone: the loss of a
batch is **not** the mean of per-image losses, and a batch of one image has no
pairs (the loss is 0).  The trainer splits every batch over its devices and
calls the loss once per device, so the relations are those **within each
device's part of the batch** (128 images in the paper's one-GPU CIFAR
setting; 64 per device on two devices).  ``batch_relational = True`` marks
these classes.
"""

import numbers

from nst.errors import NSTError

from .base import TransferLoss, check_number, register

__all__ = ["EmbeddingLoss", "RKDLoss", "embed", "offdiagonal_mask"]


def _embedding_shape(shape, key, owner):
    """Validate a per-sample embedding shape: (D,) or (C, H, W), or None."""
    if shape is None:
        return None
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) not in (1, 3) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1
            for d in shape):
        raise NSTError("%s: %s must be the per-sample shape of an embedding, (D,) or "
                       "(C, H, W) (pooled to (C,)), as a tuple of positive ints or None; "
                       "got %r" % (owner, key, shape))
    return tuple(int(d) for d in shape)


def embed(F, x, shape):
    """(N, D) stays; (N, C, H, W) -> (N, C) by global average pooling."""
    if len(shape) == 3:
        x = F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg")
        return F.reshape(x, shape=(0, -1))
    return x


def offdiagonal_mask(F, x):
    """(N, N) ones with a zero diagonal, built from the batch axis of ``x`` (no gradient)."""
    index = F.contrib.arange_like(F.stop_gradient(x), axis=0)
    same = F.broadcast_equal(F.reshape(index, shape=(-1, 1)), F.reshape(index, shape=(1, -1)))
    return 1 - same


class EmbeddingLoss(TransferLoss):
    """Base of the batch-relational losses on per-image embeddings (see the module doc).

    ``student_shape`` / ``teacher_shape`` are ``(D,)`` or ``(C, H, W)``; the
    inputs are ``(N, D)`` or ``(N, C, H, W)`` (pooled to ``(N, C)``).
    Subclasses implement :meth:`_relational` on the two ``(N, D)`` batches.
    """

    inputs = "embedding"
    batch_relational = True

    def __init__(self, student_shape=None, teacher_shape=None, **params):
        super().__init__(**params)
        owner = self.loss_name or type(self).__name__
        self.student_shape = _embedding_shape(student_shape, "student_shape", owner)
        self.teacher_shape = _embedding_shape(teacher_shape, "teacher_shape", owner)

    def _check_call(self, s_shape, t_shape):
        owner = self.loss_name
        for role, shape in (("student", s_shape), ("teacher", t_shape)):
            if len(shape) not in (2, 4):
                raise NSTError("%s expects (N, D) embeddings or (N, C, H, W) feature maps "
                               "(pooled to (N, C)); got a %s input of shape %s"
                               % (owner, role, shape))
        if s_shape[0] != t_shape[0]:
            raise NSTError("%s: student and teacher batch sizes differ (%d vs %d); feed both "
                           "networks the same images" % (owner, s_shape[0], t_shape[0]))

    def _loss(self, F, student, teacher, s_shape, t_shape):
        return self._relational(F, embed(F, student, s_shape), embed(F, teacher, t_shape))

    def _relational(self, F, student, teacher):
        """The batch loss from (N, D_S) and (N, D_T) embeddings (teacher: no gradient)."""
        raise NotImplementedError


@register
class RKDLoss(EmbeddingLoss):
    r"""Relational KD, distance-wise + angle-wise: ``get_loss("rkd")``.

    For the batch's embeddings :math:`t_1..t_b` (teacher) and :math:`s_1..s_b`
    (student) -- see the module docstring for pooling and batch semantics:

    *Distance-wise* (RKD-D, Eq. 4-5 of Park et al.): with the distance
    normalised by its mean over the pairs of distinct images,

    .. math:: \psi_D(t_i, t_j) = \frac{\|t_i - t_j\|_2}{\mu_T}, \qquad
              \mu_T = \frac{1}{b(b-1)} \sum_{i \ne j} \|t_i - t_j\|_2 ,

    (likewise :math:`\psi_D(s_i, s_j)` with the student's own :math:`\mu_S`,
    which does carry a gradient; the teacher's has none),

    .. math:: L_D = \frac{1}{b^2} \sum_{i, j}
              l_\delta\big(\psi_D(t_i, t_j), \psi_D(s_i, s_j)\big).

    *Angle-wise* (RKD-A, Eq. 6-7): the cosine of the angle at vertex
    :math:`t_j` of every triplet,

    .. math:: \psi_A(t_i, t_j, t_k) = \langle e^{ij}, e^{kj} \rangle, \quad
              e^{ij} = \frac{t_i - t_j}{\|t_i - t_j\|_2}, \qquad
              L_A = \frac{1}{b^3} \sum_{i, j, k}
              l_\delta\big(\psi_A(t_i, t_j, t_k), \psi_A(s_i, s_j, s_k)\big),

    where :math:`e^{jj} = 0` (a degenerate triplet contributes 0).
    :math:`l_\delta` is the Huber loss with :math:`\delta = 1`
    (:math:`\frac12 x^2` for :math:`|x| \le 1`, :math:`|x| - \frac12` beyond).

    The loss is :math:`\lambda_D L_D + \lambda_A L_A` with
    :math:`\lambda_D = 25, \lambda_A = 50` (``distance_weight``,
    ``angle_weight``).  The means over all :math:`b^2` pairs and :math:`b^3`
    triplets (the paper writes sums over the pair / triplet sets) are the
    normalisation of the authors' code and of RepDistiller, for which these
    lambdas were chosen; the diagonal pairs and degenerate triplets add 0.
    ``default_weight = 1`` (RepDistiller: beta = 1 on this sum).

    Properties: invariant to translating, rotating or uniformly scaling
    either embedding; 0 when the student embedding is any such transform of
    the teacher's.  Cost :math:`O(b^3 D)` (one batched product of the
    :math:`b \times b \times D` difference vectors); memory
    :math:`O(b^2 D + b^3)`.

    Parameters
    ----------
    distance_weight : float >= 0, default 25
        :math:`\lambda_D`.
    angle_weight : float >= 0, default 50
        :math:`\lambda_A`.

    Inputs: ``inputs = "embedding"``: (N, D), or (N, C, H, W) globally
    average-pooled; computed within each device's part of the batch.
    """

    loss_name = "rkd"
    default_weight = 1.0
    defaults = {"distance_weight": 25.0, "angle_weight": 50.0}

    #: Floor of squared distances: keeps sqrt and 1/sqrt finite (and their
    #: gradients zero) on the diagonal, where a difference is exactly 0.
    min_squared_distance = 1e-12

    def _configure(self, distance_weight, angle_weight):
        self.distance_weight = check_number("rkd", "distance_weight", distance_weight, low=0)
        self.angle_weight = check_number("rkd", "angle_weight", angle_weight, low=0)
        return {"distance_weight": self.distance_weight, "angle_weight": self.angle_weight}

    def _relations(self, F, x, mask):
        """Normalised distances (N, N) and triplet cosines (N, N, N) of embeddings x."""
        # e[j, i] = x_i - x_j;  a[j, i, k] = <x_i - x_j, x_k - x_j>;  d2[j, i] = ||x_i - x_j||^2
        e = F.broadcast_sub(F.expand_dims(x, axis=0), F.expand_dims(x, axis=1))
        a = F.batch_dot(e, e, transpose_b=True)
        d2 = F.maximum(F.diag(a, axis1=1, axis2=2), self.min_squared_distance)
        root = F.sqrt(d2)
        dist = root * mask                                        # 0 on the diagonal
        mean = F.sum(dist) / F.maximum(F.sum(mask), 1.0)          # mu over pairs i != j
        psi_d = F.broadcast_div(dist, F.maximum(mean, 1e-12))
        inv = mask / root                                         # 1 / ||x_i - x_j||, 0 if i == j
        cos = F.broadcast_mul(F.broadcast_mul(a, F.expand_dims(inv, axis=2)),
                              F.expand_dims(inv, axis=1))
        return psi_d, cos

    def _relational(self, F, student, teacher):
        mask = offdiagonal_mask(F, teacher)
        psi_s, cos_s = self._relations(F, student, mask)
        psi_t, cos_t = self._relations(F, teacher, mask)
        loss = F.mean(F.smooth_l1(psi_s - psi_t, scalar=1.0)) * self.distance_weight
        return loss + F.mean(F.smooth_l1(cos_s - cos_t, scalar=1.0)) * self.angle_weight
