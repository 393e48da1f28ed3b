r"""Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020).

Y. Tian, D. Krishnan and P. Isola, "Contrastive Representation Distillation",
ICLR 2020; official code: HobbitLong/RepDistiller (``crd/``).
"""

import math

import mxnet as mx
from mxnet import autograd
from mxnet.gluon import HybridBlock, nn

from nst.errors import NSTError

from .base import TransferLoss, check_number, register

__all__ = ["CRDLoss", "nce_loss"]

#: the official code's constant inside the NCE logarithms
NCE_EPS = 1e-7


def nce_loss(F, p, num_negatives, num_samples):
    r"""Per-sample NCE loss of normalised scores ``p`` (N, 1 + K), positive first.

    With the noise distribution :math:`P_n = 1/M` (uniform over the
    :math:`M` = ``num_samples`` training samples) and :math:`c = K P_n`:

    .. math:: -\log\frac{p_0}{p_0 + c + \epsilon}
              - \sum_{k=1}^{K} \log\frac{c}{p_k + c + \epsilon}.

    Returns an (N,) array.
    """
    c = num_negatives / float(num_samples)
    positive = F.slice_axis(p, axis=1, begin=0, end=1)
    negative = F.slice_axis(p, axis=1, begin=1, end=None)
    log_d1 = F.log(positive / (positive + (c + NCE_EPS)))
    log_d0 = F.log(c / (negative + (c + NCE_EPS)))
    return -(F.reshape(log_d1, shape=(-1,)) + F.sum(log_d0, axis=1))


class _Embed(HybridBlock):
    """Global average pooling, a linear layer and L2 normalisation."""

    def __init__(self, in_channels, dim, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.linear = nn.Dense(dim, in_units=in_channels, flatten=True)

    def hybrid_forward(self, F, x):
        pooled = F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg")
        return F.L2Normalization(self.linear(pooled), mode="instance", eps=1e-12)


@register
class CRDLoss(TransferLoss):
    r"""Contrastive representation distillation with memory banks: ``get_loss("crd")``.

    Embeddings: each network's feature map is globally average-pooled (the
    penultimate representation of the CIFAR networks when the feature is the
    last stage: ``in5b`` / ``relu1``), mapped by a linear layer to
    ``feat_dim`` = 128 and L2-normalised, :math:`v_S = g_S(f_S)`,
    :math:`v_T = g_T(f_T)`; both heads are learned with the student (children
    of this block; the teacher feature itself gets no gradient).

    Memory banks: two ``(num_samples, feat_dim)`` tables, :math:`m_S` and
    :math:`m_T`, one row per training sample, initialised uniformly in
    :math:`\pm 1/\sqrt{d/3}`.  Each call scores every anchor against its own
    row (the positive) and :math:`K` rows drawn uniformly from the whole
    training set (the negatives; shared by both directions), over the *other*
    network's bank:

    .. math:: h_S(i, j) = \exp(v_S^i \cdot m_T^j / \tau) / Z_S, \qquad
              h_T(i, j) = \exp(v_T^i \cdot m_S^j / \tau) / Z_T,

    with the normalisation constants :math:`Z` set once, from the first batch,
    to :math:`M` times the mean of the unnormalised scores (the official
    code's Monte-Carlo estimate; :math:`M` = ``num_samples``), then kept.
    The per-sample loss is the sum of the two NCE losses (:func:`nce_loss`,
    the paper's Eq. 18 as in the official code), averaged over the batch.

    After the scores are computed (outside autograd: state, not gradients)
    the batch's rows are updated with momentum :math:`m` = 0.5 and
    re-normalised, :math:`m_S^i \leftarrow \mathrm{normalise}(m\, m_S^i +
    (1 - m) v_S^i)`, likewise :math:`m_T`.  The banks and the two :math:`Z`
    are ``grad_req='null'`` parameters of this block, so checkpoints
    (``save_parameters``) hold them and ``--resume`` restores them.

    Defaults are the paper's and the official code's: ``feat_dim`` 128,
    ``nce_k`` 16384 negatives, temperature ``nce_t`` 0.07, momentum
    ``nce_m`` 0.5, and ``default_weight = 0.8`` (:math:`\beta` in the paper,
    with or without KD).  ``nce_k`` is capped at ``num_samples - 1`` (a data
    set smaller than 16385 images, e.g. a subset, uses ``num_samples - 1``
    negatives).  Negatives are drawn uniformly with replacement, as the
    official ``ContrastMemory`` (it does not exclude the positive); the
    official CIFAR scripts instead draw them from other classes
    (``mode='exact'``), which needs the labels -- not available to a loss here.

    Several devices: each device scores its part of the batch; its rows are
    then written to *every* device's copy of the banks (and :math:`Z`, set
    by the first device, to every copy), so the copies stay identical and a
    checkpoint saved from any of them is exact.  A later device in the same
    step may therefore draw, among its negatives, rows already refreshed by
    an earlier device (a bank fresher by part of one step).  Under
    ``dist_sync`` every worker keeps its own banks, refreshed only by the
    samples it processes.

    Parameters
    ----------
    feat_dim : int >= 1, default 128
    nce_k : int >= 1, default 16384
    nce_t : float > 0, default 0.07
    nce_m : float in [0, 1), default 0.5
    num_samples : int >= 2, required
        The training-set size (indices run from 0 to num_samples - 1); the
        trainer passes it because ``needs_index = True``.
    student_shape, teacher_shape : required
        Their channel counts size the embedding heads.

    Call: ``loss(student, teacher, index)`` or ``loss(student, teacher,
    index, negatives)``: ``index`` the (N,) sample indices of the batch
    (float), ``negatives`` optional (N, K) indices to use instead of random
    ones (tests).  The negatives can also
    be drawn by a custom ``loss.sampler(batch, k, num_samples, ctx)``.
    """

    loss_name = "crd"
    inputs = "feature"
    default_weight = 0.8
    needs_index = True
    defaults = {"feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5}

    def __init__(self, student_shape=None, teacher_shape=None, num_samples=None, **params):
        super().__init__(student_shape=student_shape, teacher_shape=teacher_shape, **params)
        if self.student_shape is None or self.teacher_shape is None:
            raise NSTError("crd needs student_shape and teacher_shape (per-sample (C, H, W) "
                           "shapes) to build its embedding heads")
        if num_samples is None:
            raise NSTError("crd needs num_samples, the training-set size, for its memory banks "
                           "(the trainer passes it)")
        self.num_samples = check_number("crd", "num_samples", num_samples, low=2, integer=True)
        self.nce_k = min(self.config["nce_k"], self.num_samples - 1)
        dim = self.config["feat_dim"]
        stdv = 1.0 / math.sqrt(dim / 3.0)
        self.sampler = None
        self._z_known = False
        with self.name_scope():
            self.embed_s = _Embed(self.student_shape[0], dim, prefix="embed_s_")
            self.embed_t = _Embed(self.teacher_shape[0], dim, prefix="embed_t_")
            self.memory_s = self.params.get("memory_s", shape=(self.num_samples, dim),
                                            init=mx.init.Uniform(stdv), grad_req="null")
            self.memory_t = self.params.get("memory_t", shape=(self.num_samples, dim),
                                            init=mx.init.Uniform(stdv), grad_req="null")
            # Z_S, Z_T; negative: not set yet
            self.z = self.params.get("z", shape=(2,), init=mx.init.Constant(-1.0),
                                     grad_req="null")

    def _configure(self, feat_dim, nce_k, nce_t, nce_m):
        feat_dim = check_number("crd", "feat_dim", feat_dim, low=1, integer=True)
        nce_k = check_number("crd", "nce_k", nce_k, low=1, integer=True)
        nce_t = check_number("crd", "nce_t", nce_t, low=0, low_open=True)
        nce_m = check_number("crd", "nce_m", nce_m, low=0)
        if nce_m >= 1:
            raise NSTError("crd: parameter nce_m (the memory momentum) must be in [0, 1), got %r"
                           % nce_m)
        return {"feat_dim": feat_dim, "nce_k": nce_k, "nce_t": nce_t, "nce_m": nce_m}

    # ------------------------------------------------------------------ state
    def load_parameters(self, *args, **kwargs):
        super().load_parameters(*args, **kwargs)
        self._z_known = False

    def cast(self, dtype):
        super().cast(dtype)
        self._z_known = False

    def sample_negatives(self, batch, ctx, dtype="float32"):
        """(batch, K) negative indices: ``self.sampler`` if set, else uniform (MXNet's RNG)."""
        if self.sampler is not None:
            neg = self.sampler(batch, self.nce_k, self.num_samples, ctx)
            neg = neg if isinstance(neg, mx.nd.NDArray) else mx.nd.array(neg, ctx=ctx)
        else:
            neg = mx.nd.random.randint(0, self.num_samples, shape=(batch, self.nce_k), ctx=ctx)
        return neg.astype(dtype, copy=False)

    def update_memory(self, index, v_s, v_t):
        """The momentum update of the batch's rows in both banks, on every device's copy."""
        m = self.config["nce_m"]
        for param, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            copies = param.list_data()
            rows = mx.nd.take(copies[0], index.as_in_context(copies[0].context))
            new = rows * m + v.as_in_context(rows.context) * (1.0 - m)
            new = mx.nd.L2Normalization(new, mode="instance", eps=1e-12)
            for copy in copies:
                copy[index.as_in_context(copy.context)] = new.as_in_context(copy.context)

    def _set_z(self, z_used, ctx):
        if self._z_known:
            return
        current = self.z.data(ctx).asnumpy()
        if (current <= 0).any():
            value = z_used.asnumpy()
            for copy in self.z.list_data():
                copy[:] = mx.nd.array(value, ctx=copy.context, dtype=copy.dtype)
        self._z_known = True

    # ------------------------------------------------------------------ calls
    def _check_call(self, s_shape, t_shape):
        super()._check_call(s_shape, t_shape)
        for role, shape, built in (("student", s_shape, self.student_shape),
                                   ("teacher", t_shape, self.teacher_shape)):
            if shape[1] != built[0]:
                raise NSTError("crd: its %s embedding was built for %d channels but the %s "
                               "feature has %d; pass the right %s_shape"
                               % (role, built[0], role, shape[1], role))

    def forward(self, student, teacher, index=None, negatives=None):
        if not isinstance(student, mx.nd.NDArray):
            raise NSTError("crd keeps per-sample state and runs on NDArrays only")
        if index is None:
            raise NSTError("crd needs the batch's sample indices: loss(student, teacher, index)")
        self._check_call(tuple(student.shape), tuple(teacher.shape))
        n = student.shape[0]
        index = index.reshape((-1,))
        if index.shape[0] != n:
            raise NSTError("crd: %d sample indices for a batch of %d" % (index.shape[0], n))
        ctx = student.context
        dtype = student.dtype
        index = index.astype(dtype, copy=False)
        if negatives is None:
            negatives = self.sample_negatives(n, ctx, dtype)
        elif not isinstance(negatives, mx.nd.NDArray):
            negatives = mx.nd.array(negatives, ctx=ctx, dtype=dtype)
        negatives = negatives.astype(dtype, copy=False)
        if negatives.shape != (n, self.nce_k):
            raise NSTError("crd: negatives must have shape (%d, %d), got %s"
                           % (n, self.nce_k, negatives.shape))
        shapes = (tuple(student.shape[1:]), tuple(teacher.shape[1:]))
        if self._active and self._graph_shapes is not None and shapes != self._graph_shapes:
            self._clear_cached_op()
        self._graph_shapes = shapes
        self._shapes = shapes
        loss, v_s, v_t, z_used = HybridBlock.forward(self, student, teacher, index, negatives)
        with autograd.pause():
            self._set_z(z_used, ctx)
            self.update_memory(index, v_s.detach(), v_t.detach())
        return loss

    def hybrid_forward(self, F, student, teacher, index, negatives, memory_s, memory_t, z):
        v_s = self.embed_s(student)
        v_t = self.embed_t(F.stop_gradient(teacher))
        rows = F.concat(F.reshape(index, shape=(-1, 1)), negatives, dim=1)   # (N, 1 + K)
        w_t = F.stop_gradient(F.take(memory_t, rows))                        # (N, 1 + K, d)
        w_s = F.stop_gradient(F.take(memory_s, rows))
        inv_t = 1.0 / self.config["nce_t"]
        out_s = F.exp(F.reshape(F.batch_dot(w_t, F.expand_dims(v_s, axis=2)),
                                shape=(0, -1)) * inv_t)                      # student anchors
        out_t = F.exp(F.reshape(F.batch_dot(w_s, F.expand_dims(v_t, axis=2)),
                                shape=(0, -1)) * inv_t)                      # teacher anchors
        # Z: the stored constant, or (first batch) num_samples * mean score
        estimate = F.stop_gradient(F.concat(F.mean(out_s), F.mean(out_t), dim=0)) \
            * float(self.num_samples)
        known = z > 0
        z_used = F.where(known, z, estimate)
        z_s = F.slice_axis(z_used, axis=0, begin=0, end=1)
        z_t = F.slice_axis(z_used, axis=0, begin=1, end=2)
        p_s = F.broadcast_div(out_s, F.reshape(z_s, shape=(1, 1)))
        p_t = F.broadcast_div(out_t, F.reshape(z_t, shape=(1, 1)))
        per_sample = nce_loss(F, p_s, self.nce_k, self.num_samples) + \
            nce_loss(F, p_t, self.nce_k, self.num_samples)
        return F.mean(per_sample), v_s, v_t, z_used

    def __repr__(self):
        opts = ", ".join("%s=%r" % kv for kv in self.config.items())
        return "CRDLoss(%s, num_samples=%d, negatives=%d)" % (opts, self.num_samples, self.nce_k)
