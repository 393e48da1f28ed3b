"""Transfer losses of Huang & Wang 2017 (NST) and the methods it is compared with.

``get_loss(name, **params)`` returns a Gluon ``HybridBlock``;
``loss(student, teacher)`` is the batch loss (mean over samples), shape (1,),
*without* its weight (the trainer multiplies by the config's ``weight`` or by
``loss.default_weight``).  The teacher input never receives a gradient.

==============  ==========  ==============  =====================================
name            inputs      default_weight  loss (per sample; see the class docs)
==============  ==========  ==============  =====================================
kd              logits      16              KL(softmax(z_T/T) || softmax(z_S/T)), T = 4
fitnet          feature     100             mean (r(F_S) - F_T)^2, r a learned 1x1 conv
at              feature     1000            mean (Q_S - Q_T)^2, Q = normalised mean_c F^2
nst_linear      feature     25              MMD^2, linear kernel (Eq. 4 / Eq. 5)
nst_poly        feature     25              MMD^2, (x^T y + c)^d, d=2, c=0 (Eq. 4 / Eq. 9)
nst_gaussian    feature     50              MMD^2, Gaussian kernel (Eq. 4)
==============  ==========  ==============  =====================================

Every class accepts ``student_shape=`` and ``teacher_shape=`` (per-sample
shapes, or None) besides its own parameters, and exposes ``loss_name``,
``inputs``, ``default_weight`` and ``defaults``.  Spatial losses resize the
larger feature map to the smaller one (:mod:`train.losses.utils`).
"""

from .base import TransferLoss, get_loss, list_losses, loss_class, register
from .kd import KDLoss
from .fitnet import FitNetLoss
from .at import ATLoss
from .nst import NSTLinear, NSTPoly, NSTGaussian, poly_form, poly_form_costs

__all__ = ["get_loss", "list_losses", "loss_class", "register", "TransferLoss",
           "KDLoss", "FitNetLoss", "ATLoss", "NSTLinear", "NSTPoly", "NSTGaussian",
           "poly_form", "poly_form_costs"]
