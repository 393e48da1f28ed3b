"""An example of your own network for `nst train`: any Gluon HybridBlock works.

Name it in a config as ``network: python:configs.examples.mynets:SmallNet``
(run ``nst`` from the repository root, which is searched for the module) with
``params: {kwargs: {width: 32}}``; ``classes`` is passed by the trainer since
the constructor takes it.  ``nst features python:configs.examples.mynets:SmallNet``
lists the features it offers (``stage1`` ... ``stage4``: the output of each
resolution, 56, 28, 14 and 7 pixels at a 224 x 224 input).
"""

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock


class SmallNet(HybridBlock):
    """A plain 9-layer convolutional network: a stride-2 stem, four stages that each
    halve the resolution (conv-BN-ReLU twice), global average pooling, a classifier."""

    def __init__(self, classes=1000, width=32, **kwargs):
        super(SmallNet, self).__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.Conv2D(width, 3, strides=2, padding=1, use_bias=False),
                              nn.BatchNorm(), nn.Activation("relu", prefix="stem_"))
            channels = width
            for stage in range(1, 5):
                channels *= 2 if stage > 1 else 1
                for conv in range(2):
                    self.features.add(
                        nn.Conv2D(channels, 3, strides=2 if conv == 0 else 1, padding=1,
                                  use_bias=False),
                        nn.BatchNorm(),
                        nn.Activation("relu", prefix="stage%d_" % stage) if conv
                        else nn.Activation("relu"))
            self.pool = nn.GlobalAvgPool2D()
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.pool(self.features(x)))
