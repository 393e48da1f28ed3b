"""Knowledge Distillation (Hinton et al., 2014), the paper's "KD" baseline."""

from nst.errors import NSTError

from .base import TransferLoss, check_number, register

__all__ = ["KDLoss"]


@register
class KDLoss(TransferLoss):
    r"""Soft-target distillation on the logits: ``get_loss("kd", temperature=4)``.

    With soft targets :math:`p_T = \mathrm{softmax}(z_T/\tau)` and
    :math:`p_S = \mathrm{softmax}(z_S/\tau)` (Sec. 2 of Huang & Wang 2017,
    after Hinton et al.), the per-sample loss is the KL divergence

    .. math:: L_{KD} = \mathrm{KL}(p_T \,\|\, p_S)
              = \sum_k p_T^k \,(\log p_T^k - \log p_S^k),

    summed over classes and averaged over the batch.  It is 0 when the logits
    are equal.  Both log-probabilities come from ``log_softmax`` (stable for
    large logits).  There is **no** :math:`\tau^2` factor: the paper's
    :math:`\lambda = 16 = \tau^2` (Sec. 5, "For KD, we set the temperature ...
    to 4 and lambda = 16") plays that role, so ``default_weight = 16``.

    Parameters
    ----------
    temperature : float > 0, default 4
        The softmax temperature :math:`\tau`.

    Inputs: ``inputs = "logits"``, i.e. (N, classes) for both networks.
    """

    loss_name = "kd"
    inputs = "logits"
    default_weight = 16.0
    defaults = {"temperature": 4.0}

    def _configure(self, temperature):
        self.temperature = check_number("kd", "temperature", temperature, low=0, low_open=True)
        return {"temperature": self.temperature}

    def _check_call(self, s_shape, t_shape):
        super()._check_call(s_shape, t_shape)
        if s_shape[1] != t_shape[1]:
            raise NSTError("kd: student and teacher have different numbers of classes "
                           "(%d vs %d); KD needs logits over the same classes"
                           % (s_shape[1], t_shape[1]))

    def _loss(self, F, student, teacher, s_shape, t_shape):
        inv_t = 1.0 / self.temperature
        log_p_t = F.log_softmax(teacher * inv_t, axis=-1)
        log_p_s = F.log_softmax(student * inv_t, axis=-1)
        kl = F.sum(F.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
        return F.mean(kl)
