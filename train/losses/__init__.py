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
nst_linear      feature     50              MMD^2, linear kernel (Eq. 4 / Eq. 5)
nst_poly        feature     50              MMD^2, (x^T y + c)^d, d=2, c=0 (Eq. 4 / Eq. 9)
nst_gaussian    feature     100             MMD^2, Gaussian kernel (Eq. 4)
fsp             feature     1               sum over layer pairs of ||G_S - G_T||^2/(C1 C2), G = F1^T F2/hw (lists)
ft              feature     500             mean |F_T/||F_T|| - F_S/||F_S|||, paraphraser/translator factors
crd             feature     0.8             NCE of embeddings vs memory banks, 16384 negatives (needs index)
sp              feature     3000            ||G_T - G_S||_F^2/b^2, G = row-normalised Q Q^T (batch)
ab              feature     0.003           ||rho(T) relu(1-r(S)) + (1-rho(T)) relu(1+r(S))||^2
rkd             embedding   1               25 Huber(dist/mean) + 50 Huber(angle cosines) (batch)
pkt             embedding   468.75          KL(p_.|i || q_.|i) of cosine-kernel rows (batch)
cc              embedding   100             ||C_T - C_S||_F^2/b^2, C = Taylor-2 RBF, gamma 0.4
vid             feature     1               mean_c,hw log s_c + (t - mu(s))^2 / 2 s_c^2
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
from .sp import SPLoss
from .ab import ABLoss
from .rkd import RKDLoss
from .pkt import PKTLoss
from .cc import CCLoss
from .vid import VIDLoss
from .fsp import FSPLoss
from .ft import FTLoss
from .crd import CRDLoss

__all__ = ["get_loss", "list_losses", "loss_class", "register", "TransferLoss",
           "KDLoss", "FitNetLoss", "ATLoss", "NSTLinear", "NSTPoly", "NSTGaussian",
           "SPLoss", "ABLoss", "RKDLoss", "PKTLoss", "CCLoss", "VIDLoss",
           "FSPLoss", "FTLoss", "CRDLoss", "poly_form", "poly_form_costs"]
