"""Faster R-CNN with an Inception-BN backbone initialised from a classification student.

The detector is GluonCV's :class:`~gluoncv.model_zoo.rcnn.faster_rcnn.FasterRCNN`
built exactly as ``faster_rcnn_resnet50_v1b_voc`` builds it (single feature
level, RoIAlign, per-RoI head, the predefined RPN/R-CNN settings of
``configs/voc/faster_rcnn.yaml``), with the ResNet-50 replaced by the
Inception-BN student of :mod:`symbols`:

* ``features`` = the stages up to and including ``4b`` (stride 16, 576
  channels at width 1), ``top_features`` = ``4c`` ... ``5b`` (``4e`` halves the
  14 x 14 RoI features to 7 x 7; 1024 channels), both from
  ``net.split_at('4b')``, so they hold the very parameters of the classification
  network the checkpoint was saved from.  The classification head (global pool
  + ``Dense``) is dropped; GluonCV's global average pooling of the RoI head then
  feeds the class and box predictors (``Dense``).
* As GluonCV does for ResNet (``use_global_stats=True``, train patterns that
  exclude BatchNorm), every BatchNorm uses the checkpoint's running statistics
  and keeps its scale and shift; with one image per device, batch statistics
  would be meaningless.
* The stem, up to ``pool2`` (stride 4: the analogue of ResNet's ``conv1`` +
  ``layer1``, which GluonCV freezes, and of the ``conv1``/``conv2`` blocks
  py-faster-rcnn freezes in VGG16), is frozen entirely.  Trained: the
  convolution weights of ``3a`` ... ``5b``, the RPN and the two predictors.

Which checkpoint initialises the backbone is the only difference between
the rows of Table 4.
"""

import os
import re
import warnings

import mxnet as mx

import symbols
from nst.errors import NSTError

from .config import model_kwargs

__all__ = ["read_checkpoint", "classification_network", "build_detector", "backbone_parameters",
           "trainable_parameter_names", "freeze_batchnorm"]


def read_checkpoint(path):
    """The arrays of a Gluon parameter file, ``{name: NDArray}``, or NSTError."""
    if not path or not os.path.isfile(path):
        raise NSTError("backbone checkpoint %s does not exist; train the ImageNet student first "
                       "(its run writes runs/imagenet/<row>/student.params) or pass the right "
                       "file with --backbone" % path)
    try:
        arrays = mx.nd.load(path)
    except Exception as err:  # MXNetError on a file that is not an NDArray file
        raise NSTError("backbone checkpoint %s is not a Gluon parameter file (%s); pass the "
                       "student.params a classification run wrote"
                       % (path, str(err).splitlines()[0][:200])) from err
    if not isinstance(arrays, dict) or not arrays:
        raise NSTError("backbone checkpoint %s holds no named parameters; pass the "
                       "student.params a classification run wrote (net.save_parameters)" % path)
    return arrays


def _width_hint(arrays):
    for key in ("stages.1.0.weight",):
        if key in arrays:
            channels = arrays[key].shape[0]
            return " (its first convolution has %d channels; at width w the network has " \
                   "64 * w, rounded)" % channels
    return ""


def classification_network(network="inception_bn", width=1.0, checkpoint=None):
    """The classification student, loaded from ``checkpoint`` if given.

    The number of classes is read from the checkpoint's ``output.weight``
    (1000 for ImageNet) so that any student of the architecture loads; the
    head is not used by the detector.
    """
    classes = 1000
    arrays = None
    if checkpoint is not None:
        arrays = read_checkpoint(checkpoint)
        if "output.weight" in arrays:
            classes = int(arrays["output.weight"].shape[0])
    net = symbols.get_model(network, classes=classes, width=width)
    if not hasattr(net, "split_at"):
        raise NSTError("backbone network %r cannot be split into detection features; use "
                       "inception_bn" % network)
    if checkpoint is None:
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
        net(mx.nd.zeros((1, 3, 64, 64)))  # materialise the deferred shapes
        return net
    try:
        net.load_parameters(checkpoint, ctx=mx.cpu())
    except Exception as err:  # AssertionError / MXNetError on a mismatch
        raise NSTError("backbone checkpoint %s does not match %s at width %g%s: %s. Set "
                       "backbone.width (--set backbone.width=...) to the width the "
                       "classification student was trained with"
                       % (checkpoint, network, width, _width_hint(arrays),
                          str(err).splitlines()[0][:300])) from err
    return net


def checkpoint_width(checkpoint, network="inception_bn", candidates=(1.0, 0.5, 0.25, 0.125)):
    """The first width in ``candidates`` whose parameter shapes are those of ``checkpoint``.

    Raises NSTError if none matches.
    """
    arrays = read_checkpoint(checkpoint)
    classes = int(arrays["output.weight"].shape[0]) if "output.weight" in arrays else 1000
    for width in candidates:
        net = symbols.get_model(network, classes=classes, width=width)
        net.initialize()
        net(mx.nd.zeros((1, 3, 64, 64)))
        shapes = {k: p.shape for k, p in net._collect_params_with_prefix().items()}
        if shapes.keys() == arrays.keys() and all(
                tuple(arrays[k].shape) == tuple(s) for k, s in shapes.items()):
            return float(width)
    raise NSTError("backbone checkpoint %s is not a %s student at any of the widths %s; pass "
                   "the student.params of an Inception-BN classification run"
                   % (checkpoint, network, ", ".join("%g" % w for w in candidates)))


def freeze_batchnorm(block):
    """Make every BatchNorm in ``block`` use its running statistics (``use_global_stats``)."""
    count = 0
    for child in _walk(block):
        if isinstance(child, mx.gluon.nn.BatchNorm):
            child._kwargs["use_global_stats"] = True
            count += 1
    return count


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)


def build_detector(cfg, classes, checkpoint=None, ctx=None):
    """Build the Faster R-CNN of ``cfg`` for ``classes``.

    Parameters
    ----------
    cfg : dict
        A validated detection config (:func:`detection.config.load_config`).
    classes : list of str
        Foreground class names (the 20 VOC classes).
    checkpoint : str, optional
        Classification student parameters for the backbone (the Table 4 row);
        None leaves the backbone randomly initialised (used when a detector
        checkpoint is loaded next).
    ctx : list of mx.Context

    Returns
    -------
    FasterRCNN
        Initialised on ``ctx``, BatchNorm frozen, ``grad_req`` set: only the
        parameters of :func:`trainable_parameter_names` are trained, and
        ``net.collect_train_params()`` returns exactly them.
    """
    from gluoncv.model_zoo.rcnn.faster_rcnn.faster_rcnn import FasterRCNN

    ctx = list(ctx or [mx.cpu()])
    bcfg = cfg["backbone"]
    base = classification_network(bcfg["network"], bcfg["width"], checkpoint)
    stage_names = list(base.stage_names)
    split = base.resolve_feature(bcfg["split"])
    freeze_until = bcfg["freeze_until"] or None
    if freeze_until is not None:
        freeze_until = base.resolve_feature(freeze_until)
        if stage_names.index(freeze_until) > stage_names.index(split):
            raise NSTError("backbone.freeze_until %r comes after the split stage %r; freeze "
                           "stages of the features only (default pool2)"
                           % (bcfg["freeze_until"], bcfg["split"]))
    features, top_features = base.split_at(split)
    # parameters the checkpoint holds, by their names in the checkpoint file
    backbone = {key: param for key, param in base._collect_params_with_prefix().items()
                if key.startswith("stages.")}
    freeze_batchnorm(features)
    freeze_batchnorm(top_features)
    try:
        net = FasterRCNN(features, top_features, list(classes), train_patterns=None,
                         **model_kwargs(cfg))
    except (AssertionError, ValueError) as err:
        raise NSTError("invalid detector settings in the config's 'model' section: %s" % err) \
            from err
    for param in net.collect_params().values():
        if param._data is None:
            param.initialize()
    net.collect_params().reset_ctx(ctx)
    net.target_generator.collect_params().reset_ctx(ctx)
    # one small inference pass materialises the deferred shapes (RPN, predictors), so the
    # detector can be saved, snapshotted or loaded into before it ever trains
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not used by any computation.*")
        size = max(64, min(128, cfg["data"]["short"]))
        net(mx.nd.zeros((1, 3, size, size), ctx=ctx[0]))

    frozen = set()
    if freeze_until is not None:
        for name in stage_names[:stage_names.index(freeze_until) + 1]:
            frozen.add(name)
    trainable = []
    for name, block in base.named_stages():
        if name in frozen:
            continue
        for child in _walk(block):
            if isinstance(child, mx.gluon.nn.Conv2D):
                trainable.extend(p.name for p in child.params.values())
    for head in (net.rpn, net.class_predictor, net.box_predictor):
        trainable.extend(p.name for p in head.collect_params().values() if p.grad_req != "null")
    all_params = net.collect_params()
    for param in all_params.values():
        param.grad_req = "null"
    for name in trainable:
        all_params[name].grad_req = "write"
    # GluonCV API: net.collect_train_params() returns the trained parameters
    net.train_patterns = "|".join(re.escape(n) + "$" for n in trainable)
    net._nst_backbone = {"params": backbone, "frozen_stages": sorted(frozen, key=stage_names.index),
                         "trainable": list(trainable), "split": split,
                         "checkpoint": checkpoint, "stage_names": stage_names}
    return net


def backbone_parameters(net):
    """``{checkpoint key: Parameter}`` of the detector's backbone (see :func:`build_detector`)."""
    return dict(net._nst_backbone["params"])


def trainable_parameter_names(net):
    return list(net._nst_backbone["trainable"])
