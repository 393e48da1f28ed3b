"""Inception-BN, the NST students: the ImageNet network and its CIFAR variant.

Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift", ICML 2015.

The layouts are those of MXNet's example ``symbols/inception-bn.py``: the
ImageNet network (:class:`InceptionBN`, ``inception_bn``) and its CIFAR
variant "inception-bn-28-small" (:class:`InceptionBNSmall`,
``inception_bn_small``).  Every convolution is conv-BN-ReLU (the convolutions
have no bias: a bias before BatchNorm is cancelled by it).

Each Inception module is two stages: ``X_bn``, the concatenation of its
branches' BatchNorm outputs *before* the ReLU (a branch that is a plain
pooling passes through unchanged), then ``X``, its ReLU.  ``relu(X_bn) == X``
and ``X`` is exactly the module output of the original network, because the
ReLU acts element-wise on the concatenation and a max pooling of a
post-ReLU input is already non-negative.  The stem convolutions are split the
same way (``conv1_bn``, ``conv1``).

``width`` multiplies every channel count (rounded, >= 1).
"""

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .base import StagedNet, check_classes, check_width, scale_channels

# Channel counts of width-scaled Inception networks are rounded to multiples of
# 16.  MKL-DNN (the CPU backend of the mxnet wheels) stores activations in
# channel blocks of 8 or 16 and fails with "could not construct a sub-memory"
# when a concatenation's channel offsets are not block-aligned.  Every channel
# count of the published networks is already a multiple of 16, so width=1.0 is
# unchanged.
CHANNEL_MULTIPLE = 16


def _scaled_channels(channels, width):
    return scale_channels(channels, width, multiple=CHANNEL_MULTIPLE)

__all__ = ["InceptionBN", "InceptionBNSmall", "conv_bn", "conv_bn_relu",
           "InceptionA", "InceptionB", "SimpleModule", "DownsampleModule"]

IMAGENET_MODULES = ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


def conv_bn(channels, kernel, stride=1, pad=0):
    """Convolution (no bias) then BatchNorm: the pre-ReLU half of MXNet's ConvFactory."""
    block = nn.HybridSequential(prefix="")
    block.add(nn.Conv2D(channels, kernel, stride, pad, use_bias=False))
    block.add(nn.BatchNorm())
    return block


def conv_bn_relu(channels, kernel, stride=1, pad=0):
    """Convolution (no bias), BatchNorm, ReLU: MXNet's ConvFactory."""
    block = conv_bn(channels, kernel, stride, pad)
    block.add(nn.Activation("relu"))
    return block


class _Branches(HybridBlock):
    """Concatenation (channel axis) of the outputs of the ``branch_*`` children."""

    def hybrid_forward(self, F, x):
        return F.concat(*[branch(x) for branch in self._children.values()], dim=1)


class InceptionA(_Branches):
    """InceptionFactoryA, pre-ReLU: concat of

    * ``branch_1x1``: 1x1 ``num_1x1``;
    * ``branch_3x3``: 1x1 ``num_3x3red`` -> 3x3 ``num_3x3``;
    * ``branch_double_3x3``: 1x1 ``num_d3x3red`` -> 3x3 ``num_d3x3`` -> 3x3 ``num_d3x3``;
    * ``branch_pool``: ``pool`` ('avg' or 'max') 3x3/1 pad 1 -> 1x1 ``proj``.

    Output channels: ``num_1x1 + num_3x3 + num_d3x3 + proj``, same spatial size.
    """

    def __init__(self, num_1x1, num_3x3red, num_3x3, num_d3x3red, num_d3x3, pool, proj,
                 **kwargs):
        super(InceptionA, self).__init__(**kwargs)
        if pool not in ("avg", "max"):
            raise ValueError("pool must be 'avg' or 'max', got %r" % (pool,))
        with self.name_scope():
            self.branch_1x1 = conv_bn(num_1x1, 1)
            self.branch_3x3 = conv_bn_relu(num_3x3red, 1)
            self.branch_3x3.add(*conv_bn(num_3x3, 3, pad=1))
            self.branch_double_3x3 = conv_bn_relu(num_d3x3red, 1)
            self.branch_double_3x3.add(*conv_bn_relu(num_d3x3, 3, pad=1))
            self.branch_double_3x3.add(*conv_bn(num_d3x3, 3, pad=1))
            self.branch_pool = nn.HybridSequential(prefix="")
            self.branch_pool.add(nn.AvgPool2D(3, 1, 1) if pool == "avg" else nn.MaxPool2D(3, 1, 1))
            self.branch_pool.add(*conv_bn(proj, 1))
        self.out_channels = num_1x1 + num_3x3 + num_d3x3 + proj


class InceptionB(_Branches):
    """InceptionFactoryB (stride 2), pre-ReLU: concat of

    * ``branch_3x3``: 1x1 ``num_3x3red`` -> 3x3/2 ``num_3x3``;
    * ``branch_double_3x3``: 1x1 ``num_d3x3red`` -> 3x3 ``num_d3x3`` -> 3x3/2 ``num_d3x3``;
    * ``branch_pool``: max pool 3x3/2 pad 1 of the input (passes through).

    Output channels: ``num_3x3 + num_d3x3 + input channels``, half the spatial size.
    """

    def __init__(self, num_3x3red, num_3x3, num_d3x3red, num_d3x3, **kwargs):
        super(InceptionB, self).__init__(**kwargs)
        with self.name_scope():
            self.branch_3x3 = conv_bn_relu(num_3x3red, 1)
            self.branch_3x3.add(*conv_bn(num_3x3, 3, stride=2, pad=1))
            self.branch_double_3x3 = conv_bn_relu(num_d3x3red, 1)
            self.branch_double_3x3.add(*conv_bn_relu(num_d3x3, 3, pad=1))
            self.branch_double_3x3.add(*conv_bn(num_d3x3, 3, stride=2, pad=1))
            self.branch_pool = nn.MaxPool2D(3, 2, 1)


class SimpleModule(_Branches):
    """SimpleFactory of inception-bn-28-small, pre-ReLU: concat(1x1 ``num_1x1``,
    3x3 pad 1 ``num_3x3``)."""

    def __init__(self, num_1x1, num_3x3, **kwargs):
        super(SimpleModule, self).__init__(**kwargs)
        with self.name_scope():
            self.branch_1x1 = conv_bn(num_1x1, 1)
            self.branch_3x3 = conv_bn(num_3x3, 3, pad=1)


class DownsampleModule(_Branches):
    """DownsampleFactory of inception-bn-28-small, pre-ReLU: concat(3x3/2 pad 1
    conv ``num_3x3``, 3x3/2 pad 1 max pool of the input)."""

    def __init__(self, num_3x3, **kwargs):
        super(DownsampleModule, self).__init__(**kwargs)
        with self.name_scope():
            self.branch_3x3 = conv_bn(num_3x3, 3, stride=2, pad=1)
            self.branch_pool = nn.MaxPool2D(3, 2, 1)


class InceptionBN(StagedNet):
    """Inception-BN for 224 x 224 ImageNet inputs (Ioffe & Szegedy 2015), the NST
    ImageNet student, in the layout of MXNet's ``symbols/inception-bn.py``.

    Stages (output size at 224 x 224 input)::

        data_bn       BatchNorm of the input, stored statistics (no scale, no shift) 3 x 224 x 224
        conv1_bn      conv7x7/2 pad 3, 64 + BN;  conv1 ReLU            64 x 112 x 112
        pool1         max pool 3x3/2, no padding                       64 x 55 x 55
        conv2_red_bn  conv1x1 64 + BN;           conv2_red ReLU        64 x 55 x 55
        conv2_bn      conv3x3 pad 1, 192 + BN;   conv2 ReLU            192 x 55 x 55
        pool2         max pool 3x3/2, no padding                       192 x 27 x 27
        3a  A(64, 64, 64, 64, 96, avg, 32)                             256 x 27 x 27
        3b  A(64, 64, 96, 64, 96, avg, 64)                             320 x 27 x 27
        3c  B(128, 160, 64, 96)                                        576 x 14 x 14
        4a  A(224, 64, 96, 96, 128, avg, 128)                          576 x 14 x 14
        4b  A(192, 96, 128, 96, 128, avg, 128)                         576 x 14 x 14
        4c  A(160, 128, 160, 128, 160, avg, 128)                       608 x 14 x 14
        4d  A(96, 128, 192, 160, 192, avg, 128)                        608 x 14 x 14
        4e  B(128, 192, 192, 256)                                      1056 x 7 x 7
        5a  A(352, 192, 320, 160, 224, avg, 128)                       1024 x 7 x 7
        5b  A(352, 192, 320, 192, 224, max, 128)                       1024 x 7 x 7
        head  global average pool, flatten, Dense(classes)

    Each module ``X`` is the stages ``X_bn`` (pre-ReLU) and ``X`` (post-ReLU);
    ``inX`` / ``inX_bn`` are aliases (``in5b`` = ``5b``), so configs can say
    ``in5b`` for both Inception-BN networks.  The detection backbone is
    ``net.split_at('4b')`` (stride 16).  As in MXNet's symbol and the authors'
    ``symbol/inception_bn.py``, pool1 and pool2 have no padding and the
    stride-2 modules 3c and 4e pad by 1, so the spatial sizes are
    112, 55, 27, 14, 7 (floor rounding, MXNet's ``pooling_convention='valid'``).

    Parameters
    ----------
    classes : int, default 1000
    width : float, default 1.0
        Multiplier of every channel count.
    features : list of str or None
        Features returned after the logits (see :class:`symbols.base.StagedNet`).
    """

    MODULES = (
        ("3a", "A", (64, 64, 64, 64, 96, "avg", 32)),
        ("3b", "A", (64, 64, 96, 64, 96, "avg", 64)),
        ("3c", "B", (128, 160, 64, 96)),
        ("4a", "A", (224, 64, 96, 96, 128, "avg", 128)),
        ("4b", "A", (192, 96, 128, 96, 128, "avg", 128)),
        ("4c", "A", (160, 128, 160, 128, 160, "avg", 128)),
        ("4d", "A", (96, 128, 192, 160, 192, "avg", 128)),
        ("4e", "B", (128, 192, 192, 256)),
        ("5a", "A", (352, 192, 320, 160, 224, "avg", 128)),
        ("5b", "A", (352, 192, 320, 192, 224, "max", 128)),
    )

    def __init__(self, classes=1000, width=1.0, features=None, **kwargs):
        classes = check_classes(classes, "inception_bn")
        width = check_width(width, "inception_bn")
        aliases = {}
        for module, _, _ in self.MODULES:
            aliases["in" + module + "_bn"] = module + "_bn"
            aliases["in" + module] = module
        super(InceptionBN, self).__init__(classes, aliases=aliases, model_name="inception_bn",
                                          **kwargs)
        self.width = width

        def scaled(*channels):
            return [c if isinstance(c, str) else _scaled_channels(c, width) for c in channels]

        with self.name_scope():
            # The input is already normalised by the data pipeline.  MXNet's CPU
            # (MKL-DNN) BatchNorm updates running statistics in the backward pass,
            # which never runs for a parameterless layer on the input, so in
            # training mode this layer would normalise each batch while inference
            # used the initial 0/1: use the stored statistics in both (identity
            # for our own training; GluonCV's values when its weights are loaded).
            self.add_stage("data_bn", nn.BatchNorm(scale=False, center=False,
                                                   use_global_stats=True))
            self.add_stage("conv1_bn", conv_bn(_scaled_channels(64, width), 7, stride=2, pad=3))
            self.add_stage("conv1", nn.Activation("relu"))
            self.add_stage("pool1", nn.MaxPool2D(3, 2, 0))
            self.add_stage("conv2_red_bn", conv_bn(_scaled_channels(64, width), 1))
            self.add_stage("conv2_red", nn.Activation("relu"))
            self.add_stage("conv2_bn", conv_bn(_scaled_channels(192, width), 3, pad=1))
            self.add_stage("conv2", nn.Activation("relu"))
            self.add_stage("pool2", nn.MaxPool2D(3, 2, 0))
            for module, kind, args in self.MODULES:
                factory = InceptionA if kind == "A" else InceptionB
                self.add_stage(module + "_bn", factory(*scaled(*args), prefix=module + "_"))
                self.add_stage(module, nn.Activation("relu"))
        self.set_features(features)


class InceptionBNSmall(StagedNet):
    """Inception-BN-small for 32 x 32 CIFAR inputs, the NST CIFAR student: MXNet's
    "inception-bn-28-small" (``symbols/inception-bn.py`` for small images).

    Stages (output size at 32 x 32 input)::

        conv1_bn  conv3x3 pad 1, 96 + BN;  conv1 ReLU    96 x 32 x 32
        in3a  simple(32, 32)                             64 x 32 x 32
        in3b  simple(32, 48)                             80 x 32 x 32
        in3c  down(80)                                   160 x 16 x 16
        in4a  simple(112, 48)                            160 x 16 x 16
        in4b  simple(96, 64)                             160 x 16 x 16
        in4c  simple(80, 80)                             160 x 16 x 16
        in4d  simple(48, 96)                             144 x 16 x 16
        in4e  down(96)                                   240 x 8 x 8
        in5a  simple(176, 160)                           336 x 8 x 8
        in5b  simple(176, 160)                           336 x 8 x 8
        head  global average pool, flatten, Dense(classes)

    ``simple(c1, c3)`` = concat(1x1 conv c1, 3x3 pad 1 conv c3);
    ``down(c3)`` = concat(3x3/2 pad 1 conv c3, 3x3/2 pad 1 max pool of the input).
    Each module ``X`` is the stages ``X_bn`` (pre-ReLU) and ``X`` (post-ReLU).
    The original NST code transfers ``in5b_bn``, the pre-activation concat of in5b.
    Aliases without the ``in`` prefix (``4b`` = ``in4b``, ``5b_bn`` = ``in5b_bn``)
    match the names of :class:`InceptionBN`.

    Parameters
    ----------
    classes : int, default 10
    width : float, default 1.0
        Multiplier of every channel count, the 96-channel stem included.
    features : list of str or None
        Features returned after the logits (see :class:`symbols.base.StagedNet`).
    """

    MODULES = (
        ("in3a", "simple", (32, 32)),
        ("in3b", "simple", (32, 48)),
        ("in3c", "down", (80,)),
        ("in4a", "simple", (112, 48)),
        ("in4b", "simple", (96, 64)),
        ("in4c", "simple", (80, 80)),
        ("in4d", "simple", (48, 96)),
        ("in4e", "down", (96,)),
        ("in5a", "simple", (176, 160)),
        ("in5b", "simple", (176, 160)),
    )

    def __init__(self, classes=10, width=1.0, features=None, **kwargs):
        classes = check_classes(classes, "inception_bn_small")
        width = check_width(width, "inception_bn_small")
        aliases = {}
        for module, _, _ in self.MODULES:
            aliases[module[2:] + "_bn"] = module + "_bn"
            aliases[module[2:]] = module
        super(InceptionBNSmall, self).__init__(classes, aliases=aliases,
                                               model_name="inception_bn_small", **kwargs)
        self.width = width
        with self.name_scope():
            self.add_stage("conv1_bn", conv_bn(_scaled_channels(96, width), 3, pad=1))
            self.add_stage("conv1", nn.Activation("relu"))
            for module, kind, args in self.MODULES:
                factory = SimpleModule if kind == "simple" else DownsampleModule
                args = [_scaled_channels(c, width) for c in args]
                self.add_stage(module + "_bn", factory(*args, prefix=module + "_"))
                self.add_stage(module, nn.Activation("relu"))
        self.set_features(features)
