"""The networks of the NST experiments (Huang & Wang 2017), built by name.

========================  =========  ==========================================
name                      input      network
========================  =========  ==========================================
preact_resnet{d}_cifar    32 x 32    pre-activation bottleneck ResNet, depth
                                     d = 9n+2 (1001 and 164 in the paper)
preact_resnet101          224 x 224  pre-activation ResNet-101 v2
inception_bn              224 x 224  Inception-BN (MXNet layout)
inception_bn_small        32 x 32    MXNet's inception-bn-28-small
========================  =========  ==========================================

Any other network, as student or teacher (:mod:`symbols.external`):
``gluoncv:<model>`` (a GluonCV model-zoo model), ``python:<module>:<class>``
(your own ``HybridBlock``) and ``mxnet_checkpoint`` (a symbol checkpoint);
their features are the internal outputs of the network's graph.

``get_model(name, classes=..., features=None, width=1.0)`` returns a Gluon
``HybridBlock`` (a :class:`symbols.base.StagedNet`): ``net(x)`` gives the
logits, or with ``features=[...]`` the tuple ``(logits, feat_1, ...)`` in
request order.  ``net.feature_names`` lists the names a network accepts.
"""

import re

import nst.compat  # noqa: F401  -- NumPy aliases MXNet needs, before any mxnet import
from nst.errors import NSTError

from .base import StagedNet, count_parameters
from .external import GraphNet, get_external_model, is_external
from .inception_bn import InceptionBN, InceptionBNSmall
from .preact_resnet import PreActResNetCIFAR, PreActResNetImageNet, check_cifar_depth

__all__ = ["get_model", "list_models", "count_parameters", "StagedNet", "GraphNet",
           "PreActResNetCIFAR", "PreActResNetImageNet", "InceptionBN", "InceptionBNSmall"]

_CIFAR_RESNET = re.compile(r"^preact_resnet(\d+)_cifar$")
_LISTED_CIFAR_DEPTHS = (1001, 164, 29)
_FIXED = {
    "preact_resnet101": (PreActResNetImageNet, 1000),
    "inception_bn": (InceptionBN, 1000),
    "inception_bn_small": (InceptionBNSmall, 10),
}
_OPTIONS = ("width", "prefix", "params")


def list_models():
    """Names accepted by :func:`get_model` (any ``preact_resnet{9n+2}_cifar`` works too)."""
    return ["preact_resnet%d_cifar" % d for d in _LISTED_CIFAR_DEPTHS] + list(_FIXED)


def get_model(name, classes=None, features=None, **kwargs):
    """Build network ``name``.

    Parameters
    ----------
    name : str
        One of :func:`list_models`, or ``preact_resnet{depth}_cifar`` for any
        depth = 9n+2.
    classes : int, optional
        Number of classes; default 10 for the CIFAR networks, 1000 for the
        ImageNet ones.
    features : list of str or None
        ``None``: ``net(x)`` returns the logits.  A list (possibly empty):
        ``net(x)`` returns ``(logits, feat_1, ..., feat_k)`` in request order.
    width : float, default 1.0
        Multiplier of every channel count (rounded to ints >= 1).
    prefix, params :
        Passed to the Gluon ``HybridBlock``.

    Raises
    ------
    NSTError
        Unknown name (the message lists the known names), depth not 9n+2,
        unknown feature (the message lists the network's feature names),
        unknown option, bad ``classes`` or ``width``.
    """
    if not isinstance(name, str):
        raise NSTError("model name must be a string, got %r; known models: %s"
                       % (name, _known_names()))
    key = name.strip().lower()
    if is_external(key):  # gluoncv:<model>, python:<module>:<class>, mxnet_checkpoint
        return get_external_model(name.strip(), classes=classes, features=features, **kwargs)
    unknown = sorted(k for k in kwargs if k not in _OPTIONS)
    if unknown:
        raise NSTError("get_model(%r): unknown option(s) %s; the options are classes, features, "
                       "%s" % (name, ", ".join(unknown), ", ".join(_OPTIONS)))
    match = _CIFAR_RESNET.match(key)
    if match:
        depth = int(match.group(1))
        check_cifar_depth(depth)
        return PreActResNetCIFAR(depth, classes=10 if classes is None else classes,
                                 features=features, **kwargs)
    if key in _FIXED:
        cls, default_classes = _FIXED[key]
        return cls(classes=default_classes if classes is None else classes,
                   features=features, **kwargs)
    raise NSTError("unknown model %r; known models: %s" % (name, _known_names()))


def _known_names():
    return ", ".join(list_models()) + (
        " (and preact_resnet{depth}_cifar for any depth = 9n+2; any other network: "
        "gluoncv:<model-zoo name>, python:<module>:<HybridBlock class>, mxnet_checkpoint)")
