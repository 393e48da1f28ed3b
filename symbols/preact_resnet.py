"""Pre-activation ResNets, the NST teachers: CIFAR (depth 9n+2, e.g. ResNet-1001) and ImageNet.

He, Zhang, Ren & Sun 2016b, "Identity Mappings in Deep Residual Networks",
ECCV 2016, arXiv:1603.05027.

Both families are built from GluonCV's
:class:`gluoncv.model_zoo.resnet.BottleneckV2`, the pre-activation bottleneck
unit of that paper::

    y = x' + conv1x1(c)(relu(bn(conv3x3(c/4, stride)(relu(bn(conv1x1(c/4)(relu(bn(x))))))))

where the shortcut ``x'`` is ``x`` itself, or, when the shape changes (first
unit of a group), a 1x1 projection with the group's stride applied to the
pre-activated input ``relu(bn(x))``.  The stride sits on the 3x3 convolution.

* :class:`PreActResNetCIFAR` -- ``preact_resnet{depth}_cifar``, depth = 9n+2
  (ResNet-1001: n = 111, ~10.2M parameters; ResNet-164: n = 18, ~1.7M), the
  CIFAR teacher of the paper.  Stages::

      conv0   conv3x3 16                                   16 x 32 x 32
      stage1  n units, output 64  (bottleneck 16), stride 1 64 x 32 x 32
      stage2  n units, output 128 (bottleneck 32), stride 2 128 x 16 x 16
      stage3  n units, output 256 (bottleneck 64), stride 2 256 x 8 x 8
      bn1     final BatchNorm (pre-ReLU)                  256 x 8 x 8
      relu1   ReLU
      head    global average pool, flatten, Dense(classes)

  ``stage3`` (the output of the last residual group) is the feature the paper
  transfers on CIFAR.

* :class:`PreActResNetImageNet` -- ``preact_resnet101`` (units [3, 4, 23, 3],
  outputs 256/512/1024/2048, ~44.5M parameters), the ImageNet teacher.
  Stages (sizes at 224 x 224 input), identical, index by index, to
  ``features[0:11]`` of GluonCV's ``resnet101_v2``::

      data_bn  BatchNorm of the input, stored statistics (no scale, no shift) 3 x 224 x 224
      conv0    conv7x7/2 64                                   64 x 112 x 112
      bn0      BatchNorm (pre-ReLU)
      relu0    ReLU
      pool0    max pool 3x3/2 pad 1                           64 x 56 x 56
      stage1   3 units, output 256                            256 x 56 x 56
      stage2   4 units, output 512, stride 2                  512 x 28 x 28
      stage3   23 units, output 1024, stride 2                1024 x 14 x 14
      stage4   3 units, output 2048, stride 2                 2048 x 7 x 7
      bn1      final BatchNorm (pre-ReLU)                     2048 x 7 x 7
      relu1    ReLU
      head     global average pool, flatten, Dense(classes)

  GluonCV's ImageNet weights load with
  :meth:`PreActResNetImageNet.load_gluoncv_params` (see there).

``width`` multiplies every channel count; unit output widths are rounded to a
multiple of 4 so that the bottleneck width (output / 4) is a whole number >= 1.
"""

import numbers

import mxnet as mx
from mxnet.gluon import nn
from gluoncv.model_zoo.resnet import BottleneckV2

from nst.errors import NSTError

from .base import StagedNet, check_classes, check_width, scale_channels

__all__ = ["PreActResNetCIFAR", "PreActResNetImageNet", "check_cifar_depth",
           "residual_group"]


def _fits(shape, saved_shape):
    """True if a parameter of (possibly partly unknown, 0) ``shape`` can take ``saved_shape``."""
    if not shape:
        return True
    return len(shape) == len(saved_shape) and all(
        dim in (0, saved) for dim, saved in zip(shape, saved_shape))


def check_cifar_depth(depth):
    """Units per group ``n`` for a CIFAR bottleneck depth ``9n + 2``; NSTError otherwise."""
    integral = isinstance(depth, numbers.Integral) and not isinstance(depth, bool)
    if not integral or depth < 11 or (depth - 2) % 9:
        fix = "use a depth of the form 9n+2, e.g. 1001, 164 or 29"
        if integral and depth >= 2:
            lower = max(11, depth - (depth - 2) % 9)
            upper = lower if lower > depth else lower + 9
            fix = "use depth %s instead" % (
                "%d" % upper if lower == upper else "%d or %d" % (lower, upper))
        raise NSTError(
            "preact_resnet{depth}_cifar: depth %r is not of the form 9n+2 with n >= 1 (3 groups "
            "of n bottleneck units of 3 layers, plus the first convolution and the "
            "classifier); %s" % (depth, fix))
    return (int(depth) - 2) // 9


def residual_group(units, channels, stride, in_channels, prefix):
    """``units`` BottleneckV2 units of output ``channels``; the first has ``stride``
    and a projection shortcut if the shape changes (GluonCV's ``_make_layer`` layout)."""
    group = nn.HybridSequential(prefix=prefix)
    with group.name_scope():
        group.add(BottleneckV2(channels, stride, channels != in_channels or stride != 1,
                               in_channels=in_channels, prefix=""))
        for _ in range(units - 1):
            group.add(BottleneckV2(channels, 1, False, in_channels=channels, prefix=""))
    return group


class PreActResNetCIFAR(StagedNet):
    """Pre-activation bottleneck ResNet for 32 x 32 CIFAR inputs (He et al. 2016b).

    Parameters
    ----------
    depth : int
        9n + 2 (n units per group), e.g. 1001, 164, 29, 11.
    classes : int, default 10
    width : float, default 1.0
        Multiplier of every channel count (small CPU experiments).
    features : list of str or None
        Features returned after the logits (see :class:`symbols.base.StagedNet`);
        names: ``conv0, stage1, stage2, stage3, bn1, relu1``.
    """

    def __init__(self, depth, classes=10, width=1.0, features=None, **kwargs):
        model_name = "preact_resnet%s_cifar" % (depth,)
        units = check_cifar_depth(depth)
        classes = check_classes(classes, model_name)
        width = check_width(width, model_name)
        stem = scale_channels(16, width)
        outputs = [scale_channels(c, width, multiple=4) for c in (64, 128, 256)]
        super(PreActResNetCIFAR, self).__init__(
            classes, in_units=outputs[-1], model_name=model_name, **kwargs)
        self.depth = depth
        self.width = width
        with self.name_scope():
            self.add_stage("conv0", nn.Conv2D(stem, 3, 1, 1, use_bias=False, in_channels=3))
            in_channels = stem
            for index, channels in enumerate(outputs):
                self.add_stage("stage%d" % (index + 1), residual_group(
                    units, channels, 1 if index == 0 else 2, in_channels,
                    prefix="stage%d_" % (index + 1)))
                in_channels = channels
            self.add_stage("bn1", nn.BatchNorm())
            self.add_stage("relu1", nn.Activation("relu"))
        self.set_features(features)


class PreActResNetImageNet(StagedNet):
    """Pre-activation bottleneck ResNet v2 for 224 x 224 ImageNet inputs (He et al. 2016b).

    Default ``units=(3, 4, 23, 3)`` is ResNet-101 v2 (``preact_resnet101``),
    the NST ImageNet teacher.  The stage list and the parameter structure are
    those of GluonCV's ``ResNetV2`` (``features[i]`` here is ``stages[i]``,
    ``output`` is ``output``), so GluonCV model-zoo weights load with
    :meth:`load_gluoncv_params`.

    Parameters
    ----------
    units : sequence of 4 ints, default (3, 4, 23, 3)
    classes : int, default 1000
    width : float, default 1.0
        Multiplier of every channel count (weights of GluonCV fit only width 1).
    features : list of str or None
        Features returned after the logits; names ``data_bn, conv0, bn0, relu0,
        pool0, stage1 .. stage4, bn1, relu1``.
    """

    def __init__(self, units=(3, 4, 23, 3), classes=1000, width=1.0, features=None, **kwargs):
        units = tuple(units)
        model_name = "preact_resnet%d" % (3 * sum(units) + 2)
        classes = check_classes(classes, model_name)
        width = check_width(width, model_name)
        stem = scale_channels(64, width)
        outputs = [scale_channels(c, width, multiple=4) for c in (256, 512, 1024, 2048)]
        super(PreActResNetImageNet, self).__init__(
            classes, in_units=outputs[-1], model_name=model_name, **kwargs)
        self.units = units
        self.width = width
        with self.name_scope():
            # The input is already normalised by the data pipeline.  MXNet's CPU
            # (MKL-DNN) BatchNorm updates running statistics in the backward pass,
            # which never runs for a parameterless layer on the input, so in
            # training mode this layer would normalise each batch while inference
            # used the initial 0/1: use the stored statistics in both (identity
            # for our own training; GluonCV's values when its weights are loaded).
            self.add_stage("data_bn", nn.BatchNorm(scale=False, center=False,
                                                   use_global_stats=True))
            self.add_stage("conv0", nn.Conv2D(stem, 7, 2, 3, use_bias=False))
            self.add_stage("bn0", nn.BatchNorm())
            self.add_stage("relu0", nn.Activation("relu"))
            self.add_stage("pool0", nn.MaxPool2D(3, 2, 1))
            in_channels = stem
            for index, (count, channels) in enumerate(zip(units, outputs)):
                self.add_stage("stage%d" % (index + 1), residual_group(
                    count, channels, 1 if index == 0 else 2, in_channels,
                    prefix="stage%d_" % (index + 1)))
                in_channels = channels
            self.add_stage("bn1", nn.BatchNorm())
            self.add_stage("relu1", nn.Activation("relu"))
        self.set_features(features)

    def load_gluoncv_params(self, filename, ctx=None):
        """Load GluonCV / Gluon model-zoo ``resnet{depth}_v2`` weights from a local file.

        ``filename`` is the ``.params`` file of GluonCV's ``resnet101_v2``
        (equally MXNet Gluon's ``vision.resnet101_v2``).  To get it, on a
        machine with internet access run::

            from gluoncv.model_zoo.model_store import get_model_file
            get_model_file('resnet101_v2')   # -> ~/.mxnet/models/resnet101_v2-18e93e4f.params

        then copy the file here and::

            net = symbols.get_model('preact_resnet101', classes=1000)
            net.load_gluoncv_params('resnet101_v2-18e93e4f.params')

        Both the structural format (``features.5.0.conv1.weight``, written by
        ``save_parameters``) and the legacy prefixed format
        (``resnetv20_stage1_conv0_weight``) are accepted.  If ``classes``
        differs from the file's classifier, the classifier (``net.output``)
        is not loaded but freshly initialized (Xavier); every other parameter
        must be in the file.  Returns the list of parameter names left
        unloaded (``[]`` or the two ``output.*`` names).
        """
        ctx = ctx or mx.cpu()
        try:
            loaded = mx.nd.load(filename)
        except Exception as err:  # MXNetError / OSError: missing or corrupt file
            raise NSTError("cannot read GluonCV parameter file %r (%s); pass the path of the "
                           "resnet%d_v2 .params file" % (filename, err, 3 * sum(self.units) + 2))
        if not isinstance(loaded, dict) or not loaded:
            raise NSTError("%r holds no named parameters; expected a GluonCV resnet_v2 .params "
                           "file" % (filename,))
        if all("." in key for key in loaded):
            renamed = {self._structural_name(key): value for key, value in loaded.items()}
        else:
            renamed = self._from_legacy_names(loaded, filename)
        params = self._collect_params_with_prefix()
        skipped = []
        unknown = sorted(k for k in renamed if k not in params)
        wrong = sorted(k for k in renamed if k in params and not k.startswith("output.")
                       and not _fits(params[k].shape, renamed[k].shape))
        missing = sorted(k for k in params if k not in renamed and not k.startswith("output."))
        if unknown or wrong or missing:
            problems = ["%s %s" % (label, ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
                        for label, names in (("unknown:", unknown), ("wrong shape:", wrong),
                                             ("missing:", missing)) if names]
            raise NSTError(
                "%r does not fit %s (width %g): %s; pass GluonCV's resnet%d_v2 weights and "
                "build the network with width=1.0" % (
                    filename, self.model_name, self.width, "; ".join(problems),
                    3 * sum(self.units) + 2))
        head = ("output.weight", "output.bias")
        if any(k not in renamed or not _fits(params[k].shape, renamed[k].shape) for k in head):
            skipped = list(head)
            self.output.collect_params().initialize(mx.init.Xavier(), ctx=ctx, force_reinit=True)
        for key, value in renamed.items():
            if key not in skipped:
                params[key]._load_init(value, ctx)
        return skipped

    @staticmethod
    def _structural_name(key):
        if key.startswith("features."):
            return "stages." + key[len("features."):]
        return key

    def _from_legacy_names(self, loaded, filename):
        """Map legacy names (``resnetv20_stage1_conv0_weight``) through a GluonCV ResNetV2."""
        from gluoncv.model_zoo.resnet import ResNetV2
        reference = ResNetV2(BottleneckV2, list(self.units), [64, 256, 512, 1024, 2048])
        by_legacy = {param.name[len(reference.prefix):]: structural
                     for structural, param in reference._collect_params_with_prefix().items()}
        renamed = {}
        for key, value in loaded.items():
            suffix = key.split("_", 1)[1] if "_" in key else key
            if suffix not in by_legacy:
                raise NSTError("%r: parameter %r is not a GluonCV resnet%d_v2 parameter" % (
                    filename, key, 3 * sum(self.units) + 2))
            renamed[self._structural_name(by_legacy[suffix])] = value
        return renamed
