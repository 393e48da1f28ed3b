"""Shared machinery of every network in :mod:`symbols`: named stages, feature taps.

Every network in this package is a :class:`StagedNet`: a Gluon ``HybridBlock``
whose body is an ordered sequence of *named stages* (child blocks, kept in the
``HybridSequential`` ``net.stages``) followed by a classification *head*
(global average pooling, flatten, ``Dense(classes)`` called ``net.output``)::

    x -> stage_1 -> stage_2 -> ... -> stage_k -> pool -> flatten -> output -> logits

Feature ``X`` is simply the output of stage ``X``.  Pre-activation tensors are
stages of their own (e.g. ``bn1`` followed by ``relu1``, or ``in5b_bn`` followed
by ``in5b``), so "the BN output before the ReLU" is just another feature.

Which features the forward pass returns is fixed when the network is built
(``features=[...]``) or later with :meth:`StagedNet.set_features`:

* ``features=None``: ``net(x)`` returns the logits only;
* ``features=[a, b, ...]`` (possibly empty): ``net(x)`` returns the tuple
  ``(logits, feat_a, feat_b, ...)`` in request order.

Because the output structure is fixed per network, the block stays
hybridizable (``net.hybridize(static_alloc=True, static_shape=True)``).
"""

import math
import numbers

import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from nst.errors import NSTError

__all__ = ["StagedNet", "scale_channels", "count_parameters", "check_classes", "check_width"]


def check_classes(classes, model):
    """Return ``classes`` as an int >= 1, or raise NSTError."""
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
        raise NSTError(
            "%s: classes must be a positive integer (the number of labels, e.g. 10 "
            "for CIFAR-10, 100 for CIFAR-100, 1000 for ImageNet), got %r" % (model, classes))
    return int(classes)


def check_width(width, model):
    """Return ``width`` as a positive finite float, or raise NSTError."""
    try:
        value = float(width)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(width, bool) or not math.isfinite(value) or value <= 0:
        raise NSTError(
            "%s: width must be a positive number that multiplies every channel count "
            "(1.0 = the published network, e.g. 0.25 for a small CPU run), got %r"
            % (model, width))
    return value


def scale_channels(channels, width, multiple=1):
    """Channel count ``channels * width`` rounded to a multiple of ``multiple`` (>= ``multiple``).

    ``width == 1`` returns ``channels`` unchanged (the published networks).
    """
    return multiple * max(1, int(round(channels * width / multiple)))


class StagedNet(HybridBlock):
    """A classification network made of named stages and a pooling/``Dense`` head.

    Subclasses build their body in ``__init__`` with :meth:`add_stage` (inside
    ``self.name_scope()``) and finish with ``self.set_features(features)``.

    Parameters
    ----------
    classes : int
        Number of outputs of the final ``Dense`` layer (``net.output``).
    in_units : int, default 0
        Input size of ``net.output`` (0: inferred on the first forward pass).
    aliases : dict, optional
        Extra feature names, ``{alias: stage_name}`` (e.g. ``{'in5b': '5b'}``).
    model_name : str, optional
        Registry name used in messages (e.g. ``'inception_bn'``).

    Attributes
    ----------
    stages : HybridSequential
        The stages in network order (``net.stages[i]`` is stage ``net.stage_names[i]``).
    pool, flatten, output :
        The head: global average pooling, flatten, ``Dense(classes)``.
    stage_names : tuple of str
        Stage names in network order.
    feature_names : tuple of str
        Every name accepted by ``features=[...]``, in network order (each stage
        name followed by its aliases).
    feature_aliases : dict
        ``{alias: stage_name}``.
    requested_features : tuple of str or None
        The feature names the forward pass returns after the logits (None: logits only).
    """

    def __init__(self, classes, in_units=0, aliases=None, model_name=None, **kwargs):
        super(StagedNet, self).__init__(**kwargs)
        self.model_name = model_name or type(self).__name__
        self._stage_names = []
        self._aliases = dict(aliases or {})
        self._requested = None
        self._requested_stages = ()
        with self.name_scope():
            self.stages = nn.HybridSequential(prefix="")
            self.pool = nn.GlobalAvgPool2D()
            self.flatten = nn.Flatten()
            self.output = nn.Dense(classes, in_units=in_units)

    # ------------------------------------------------------------------ building
    def add_stage(self, name, block):
        """Append ``block`` as stage ``name`` (call inside ``self.name_scope()``)."""
        if name in self._stage_names or name in self._aliases:
            raise ValueError("duplicate stage name %r" % name)
        self.stages.add(block)
        self._stage_names.append(name)
        return block

    # ------------------------------------------------------------------ names
    @property
    def stage_names(self):
        return tuple(self._stage_names)

    @property
    def feature_aliases(self):
        return dict(self._aliases)

    @property
    def feature_names(self):
        names = []
        for stage in self._stage_names:
            names.append(stage)
            names.extend(a for a, target in self._aliases.items() if target == stage)
        return tuple(names)

    @property
    def requested_features(self):
        return None if self._requested is None else tuple(self._requested)

    def resolve_feature(self, name):
        """Stage name for feature ``name`` (a stage name or an alias); NSTError if unknown."""
        if isinstance(name, str):
            if name in self._stage_names:
                return name
            if name in self._aliases:
                return self._aliases[name]
        raise NSTError(
            "%s has no feature %r; known feature names (in network order): %s. "
            "Fix the feature name in your config or call." % (
                self.model_name, name, ", ".join(self.feature_names)))

    def named_stages(self):
        """``[(name, block), ...]`` in network order."""
        return list(zip(self._stage_names, self.stages))

    def stage(self, name):
        """The block of stage ``name`` (aliases accepted)."""
        return self.stages[self._stage_names.index(self.resolve_feature(name))]

    # ------------------------------------------------------------------ features
    def set_features(self, features):
        """Choose what the forward pass returns.

        ``None``: the logits only.  A list of feature names (possibly empty):
        the tuple ``(logits, feat_1, ..., feat_k)`` in request order.  Resets
        the hybridized graph, so it can be called on a hybridized network.
        """
        if features is None:
            self._requested = None
            self._requested_stages = ()
        else:
            if isinstance(features, str):
                raise NSTError(
                    "%s: features must be a list of feature names, got the string %r; "
                    "write features=[%r]" % (self.model_name, features, features))
            if not isinstance(features, (list, tuple)):
                raise NSTError(
                    "%s: features must be a list of feature names or None, got %r"
                    % (self.model_name, features))
            self._requested_stages = tuple(self.resolve_feature(f) for f in features)
            self._requested = tuple(features)
        self._clear_cached_op()
        return self

    def forward(self, x, *args):
        out = super(StagedNet, self).forward(x, *args)
        # a hybridized block regroups multiple outputs as a list: keep the tuple contract
        return tuple(out) if isinstance(out, list) else out

    def hybrid_forward(self, F, x):
        wanted = set(self._requested_stages)
        captured = {}
        for index, name in enumerate(self._stage_names):
            x = self.stages[index](x)
            if name in wanted:
                captured[name] = x
        logits = self.output(self.flatten(self.pool(x)))
        if self._requested is None:
            return logits
        outputs = [logits]
        returned = set()
        for name in self._requested_stages:
            feat = captured[name]
            if name in returned:  # the same tensor twice: give the graph a distinct output
                feat = F.identity(feat)
            returned.add(name)
            outputs.append(feat)
        return tuple(outputs)

    # ------------------------------------------------------------------ helpers
    def split_at(self, name):
        """Split the stages after stage ``name``, e.g. ``net.split_at('4b')`` for detection.

        Returns ``(features, top_features)``: two ``HybridSequential`` blocks
        holding the stages up to and including ``name`` and the remaining
        stages (the head -- pool, flatten, output -- is in neither).  They hold
        the very same child blocks, hence share parameters with ``net``, and
        ``top_features(features(x))`` equals the output of the last stage.
        """
        cut = self._stage_names.index(self.resolve_feature(name)) + 1
        features = nn.HybridSequential(prefix="")
        top_features = nn.HybridSequential(prefix="")
        for index, block in enumerate(self.stages):
            (features if index < cut else top_features).add(block)
        return features, top_features

    def feature_shapes(self, data_shape, names=None):
        """``{name: shape}`` of stage outputs for input ``data_shape``, by shape inference.

        No memory is allocated and the parameters need not be initialized.
        ``names`` defaults to all stages; aliases are accepted.
        """
        names = list(self._stage_names if names is None else names)
        targets = {n: self.resolve_feature(n) for n in names}
        x = mx.sym.var("data")
        outputs = {}
        for index, stage in enumerate(self._stage_names):
            x = self.stages[index](x)
            outputs[stage] = x
        wanted = sorted(set(targets.values()), key=self._stage_names.index)
        group = mx.sym.Group([outputs[s] for s in wanted])
        _, out_shapes, _ = group.infer_shape(data=tuple(data_shape))
        by_stage = dict(zip(wanted, (tuple(s) for s in out_shapes)))
        return {n: by_stage[targets[n]] for n in names}


def count_parameters(net, data_shape=None, running_stats=False):
    """Number of parameter values of ``net`` (weights, biases, BatchNorm gamma/beta).

    BatchNorm running means and variances are not parameters in the usual
    sense and are counted only with ``running_stats=True``.  If some shapes are
    still unknown (deferred initialization), pass ``data_shape`` (e.g.
    ``(1, 3, 224, 224)``): they are inferred symbolically, without allocating.
    """
    params = net.collect_params()
    shapes = {name: p.shape for name, p in params.items()}
    if any(shape is None or 0 in shape for shape in shapes.values()):
        if data_shape is None:
            raise NSTError(
                "count_parameters: some parameter shapes are not known yet; pass data_shape "
                "(e.g. (1, 3, 32, 32)) or run one forward pass first")
        out = net(mx.sym.var("data"))
        if isinstance(out, (list, tuple)):
            out = mx.sym.Group(list(out))
        arg_shapes, _, aux_shapes = out.infer_shape(data=tuple(data_shape))
        inferred = dict(zip(out.list_arguments(), arg_shapes))
        inferred.update(zip(out.list_auxiliary_states(), aux_shapes))
        shapes = {name: inferred.get(name, shape) for name, shape in shapes.items()}
    total = 0
    for name, p in params.items():
        if not running_stats and name.endswith(("running_mean", "running_var")):
            continue
        size = 1
        for dim in shapes[name]:
            size *= int(dim)
        total += size
    return total

