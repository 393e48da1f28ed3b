r"""Factor Transfer (Kim, Park & Kwak, NeurIPS 2018): ``get_loss("ft")``.

J. Kim, S. Park and N. Kwak, "Paraphrasing Complex Network: Network
Compression via Factor Transfer", NeurIPS 2018.
"""

import warnings

import mxnet as mx
from mxnet.gluon import nn

from nst.errors import NSTError

from .base import TransferLoss, check_number, register
from .utils import match_spatial, sum_squares

__all__ = ["FTLoss"]

_RECONSTRUCTION = ("l2", "l1")


def _conv_stack(channels, in_channels, slope, transpose=False, prefix=""):
    """3x3, stride 1, padding 1 (de)convolutions, each followed by a leaky ReLU."""
    stack = nn.HybridSequential(prefix=prefix)
    layer = nn.Conv2DTranspose if transpose else nn.Conv2D
    with stack.name_scope():
        for out in channels:
            stack.add(layer(out, kernel_size=3, strides=1, padding=1, use_bias=True,
                            in_channels=in_channels))
            stack.add(nn.LeakyReLU(slope))
            in_channels = out
    return stack


@register
class FTLoss(TransferLoss):
    r"""Factor transfer through a paraphraser and a translator: ``get_loss("ft")``.

    **Paraphraser** (teacher side): an encoder of three 3x3 convolutions
    :math:`C_T \to C_T \to kC_T \to kC_T` and a decoder of three 3x3
    transposed convolutions back to :math:`C_T`, each followed by a leaky ReLU
    (slope 0.1), stride 1, so the spatial size is kept.  It is trained first,
    alone, as an auto-encoder of the teacher's feature (the trainer's
    pre-training stage, ``pretrain_epochs`` in the config: :meth:`pretrain_loss`
    is the reconstruction error, :meth:`pretrain_params` its parameters), then
    frozen.  The encoder output is the *teacher factor* :math:`F_T`.

    **Translator** (student side): three 3x3 convolutions
    :math:`C_S \to C_S \to kC_T \to kC_T` with leaky ReLUs, trained with the
    student (a child of this block, not exported); its output is the
    *student factor* :math:`F_S`.  :math:`k` is the factor rate (``rate``,
    0.5 in the paper), :math:`kC_T` rounded to an integer.

    Loss (Kim et al., Eq. 3), per sample, with :math:`D = kC_T h w` the
    factor size:

    .. math:: L_{FT} = \frac{1}{D}\Big\| \frac{F_T}{\|F_T\|_2}
              - \frac{F_S}{\|F_S\|_2} \Big\|_p^p , \qquad p = 1,

    averaged over the batch.  The paper writes the plain p-norm; the official
    code (``nn.L1Loss``) averages the absolute differences over the factor's
    elements, which is what its :math:`\beta = 500` multiplies, hence the
    :math:`1/D` here and ``default_weight = 500`` (the paper's CIFAR value
    and the official code's default; RepDistiller uses 200).  ``p = 2`` gives
    the mean squared difference.  Factors of different spatial sizes are
    brought to the smaller one (average pooling / bilinear, :mod:`.utils`)
    before the normalisation; each factor is normalised as
    :math:`f / \sqrt{\|f\|^2 + \epsilon}`.

    Reconstruction loss of the pre-training stage: the mean over the
    elements of :math:`(P(x) - x)^2` (``reconstruction="l2"``, the paper's
    :math:`\|x - P(x)\|^2` as a mean, and RepDistiller's ``MSELoss``), or of
    :math:`|P(x) - x|` (``"l1"``, the official code's ``nn.L1Loss``).

    Freezing: the paraphraser's parameters have ``grad_req='null'`` except
    between :meth:`pretrain_params` (which turns them on) and the next call of
    the loss itself (which turns them off again), so the student's optimiser
    never updates or decays them.  A config without ``pretrain_epochs`` uses a
    random (Xavier) paraphraser -- always give FT a pre-training stage.

    Parameters
    ----------
    rate : float in (0, 4], default 0.5
        The factor rate :math:`k`.
    p : 1 or 2, default 1
    reconstruction : "l2" | "l1", default "l2"
    slope : float >= 0, default 0.1
        Leaky ReLU slope of both modules.
    eps : float > 0, default 1e-10
    student_shape, teacher_shape : required
        Their channel counts size the translator and the paraphraser.

    Inputs: ``inputs = "feature"``, (N, C, H, W) maps (the paper: the output
    of the last group of each network).
    """

    loss_name = "ft"
    inputs = "feature"
    default_weight = 500.0
    defaults = {"rate": 0.5, "p": 1, "reconstruction": "l2", "slope": 0.1, "eps": 1e-10}

    def __init__(self, student_shape=None, teacher_shape=None, **params):
        super().__init__(student_shape=student_shape, teacher_shape=teacher_shape, **params)
        if self.student_shape is None or self.teacher_shape is None:
            raise NSTError("ft needs student_shape and teacher_shape (per-sample (C, H, W) "
                           "shapes) to build its translator and paraphraser")
        c_s, c_t = self.student_shape[0], self.teacher_shape[0]
        self.factors = max(1, int(round(c_t * self.config["rate"])))
        slope = self.config["slope"]
        with self.name_scope():
            self.encoder = _conv_stack([c_t, self.factors, self.factors], c_t, slope,
                                       prefix="paraphraser_enc_")
            self.decoder = _conv_stack([self.factors, c_t, c_t], self.factors, slope,
                                       transpose=True, prefix="paraphraser_dec_")
            self.translator = _conv_stack([c_s, self.factors, self.factors], c_s, slope,
                                          prefix="translator_")
        for param in self._paraphraser_params().values():
            param.grad_req = "null"

    def _configure(self, rate, p, reconstruction, slope, eps):
        rate = check_number("ft", "rate", rate, low=0, low_open=True)
        if rate > 4:
            raise NSTError("ft: parameter rate (the factor rate k) must be in (0, 4], got %r"
                           % rate)
        if p not in (1, 2) or isinstance(p, bool):
            raise NSTError("ft: parameter p must be 1 or 2, got %r" % (p,))
        if reconstruction not in _RECONSTRUCTION:
            raise NSTError("ft: parameter reconstruction must be one of %s, got %r"
                           % (", ".join(_RECONSTRUCTION), reconstruction))
        slope = check_number("ft", "slope", slope, low=0)
        eps = check_number("ft", "eps", eps, low=0, low_open=True)
        return {"rate": rate, "p": int(p), "reconstruction": reconstruction, "slope": slope,
                "eps": eps}

    # ------------------------------------------------------- pre-training stage
    def _paraphraser_params(self):
        params = mx.gluon.ParameterDict()
        params.update(self.encoder.collect_params())
        params.update(self.decoder.collect_params())
        return params

    def pretrain_params(self):
        """The paraphraser's parameters, switched to trainable for the pre-training stage."""
        params = self._paraphraser_params()
        for param in params.values():
            param.grad_req = "write"
        self._clear_cached_op()
        return params

    def paraphrase(self, teacher):
        """The paraphraser's reconstruction :math:`P(x)` of a teacher feature (NDArray)."""
        return self.decoder(self.encoder(teacher))

    def pretrain_loss(self, teacher):
        """Reconstruction error of the paraphraser on a teacher feature, shape (1,)."""
        if not isinstance(teacher, mx.nd.NDArray) or teacher.ndim != 4 or \
                teacher.shape[1] != self.teacher_shape[0]:
            raise NSTError("ft: the pre-training stage expects the teacher's (N, %d, H, W) "
                           "feature, got %s" % (self.teacher_shape[0],
                                                getattr(teacher, "shape", type(teacher))))
        diff = self.paraphrase(teacher) - teacher
        size = 1.0 / (diff.size // diff.shape[0])
        if self.config["reconstruction"] == "l2":
            per_sample = sum_squares(mx.nd, diff) * size
        else:
            per_sample = mx.nd.sum(mx.nd.abs(diff), axis=(1, 2, 3)) * size
        return mx.nd.mean(per_sample).reshape((1,))

    def _freeze_paraphraser(self):
        params = self._paraphraser_params()
        if any(p.grad_req != "null" for p in params.values()):
            for param in params.values():
                param.grad_req = "null"
            self._clear_cached_op()

    # ------------------------------------------------------------------ loss
    def _check_call(self, s_shape, t_shape):
        super()._check_call(s_shape, t_shape)
        for role, shape, built in (("student", s_shape, self.student_shape),
                                   ("teacher", t_shape, self.teacher_shape)):
            if shape[1] != built[0]:
                raise NSTError("ft: its %s module was built for %d channels but the %s "
                               "feature has %d; pass the right %s_shape"
                               % ("translator" if role == "student" else "paraphraser",
                                  built[0], role, shape[1], role))

    def forward(self, student, teacher):
        self._freeze_paraphraser()
        with warnings.catch_warnings():   # the decoder is not part of this graph, by design
            warnings.filterwarnings("ignore", message=".*is not used by any computation.*")
            return super().forward(student, teacher)

    def factors_of(self, F, student, teacher):
        """(student factor, teacher factor), unnormalised, before any resize."""
        return self.translator(student), F.stop_gradient(self.encoder(teacher))

    def _loss(self, F, student, teacher, s_shape, t_shape):
        f_s, f_t = self.factors_of(F, student, teacher)
        fs_shape = (self.factors,) + tuple(s_shape[1:])
        ft_shape = (self.factors,) + tuple(t_shape[1:])
        f_s, f_t, (h, w) = match_spatial(F, f_s, f_t, fs_shape, ft_shape)
        eps = self.config["eps"]
        u_s = F.L2Normalization(F.flatten(f_s), mode="instance", eps=eps)
        u_t = F.L2Normalization(F.flatten(f_t), mode="instance", eps=eps)
        diff = u_s - u_t
        if self.config["p"] == 1:
            per_sample = F.sum(F.abs(diff), axis=1)
        else:
            per_sample = sum_squares(F, diff)
        return F.mean(per_sample) * (1.0 / (self.factors * h * w))
