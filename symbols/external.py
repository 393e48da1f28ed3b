"""Any network as student or teacher: GluonCV models, your own HybridBlocks, MXNet checkpoints.

Three kinds of ``network:`` names besides the built-in ones (:func:`symbols.get_model`):

``gluoncv:<model>``
    A GluonCV model-zoo model, e.g. ``gluoncv:mobilenetv2_0.25``.  Params:
    ``pretrained`` (default true: ImageNet weights, downloaded to
    ``~/.mxnet/models`` on first use), ``kwargs`` (passed to
    ``gluoncv.model_zoo.get_model``; ``model_kwargs`` is accepted too).  The
    number of classes is the data set's: with ``pretrained: false`` it is
    passed as ``classes``; with pretrained weights for another number of
    classes every parameter whose shape fits is copied from the pretrained
    model and the classifier is freshly initialised (``net.fresh_parameters``
    names what was not copied).
``python:<module>:<callable>``
    Your own Gluon ``HybridBlock``, e.g. ``python:mypackage.nets:MyNet``,
    built as ``MyNet(**kwargs)`` (``classes=`` is added when the callable takes
    a ``classes`` argument and ``kwargs`` does not set it).  The module is
    imported from ``sys.path``; the folder ``nst`` runs in is searched too.
``mxnet_checkpoint``
    ``<prefix>-symbol.json`` + ``<prefix>-<epoch>.params``
    (:mod:`symbols.checkpoint_teacher`).  Params: ``prefix``, ``epoch``.

Common params: ``logits`` (the internal output used as logits; default the
network's output, or the input of a final softmax), ``data_name`` (the input
variable, default ``data``), ``input_mean`` / ``input_std`` (what the network
expects as input, RGB 0-255 units; default: the pipelines' ImageNet-normalised
images as they are).

Every kind becomes one :class:`GraphNet`, so the trainer and the tools never
know which kind they hold.  A GraphNet is the network's symbolic graph (for a
Gluon block: the graph it hybridizes to) cut at the requested internal
outputs: a ``gluon.SymbolBlock`` over ``symbol.get_internals()`` that *shares*
the block's ``Parameter`` objects (no copy).  Hence

* features are internal output names, e.g.
  ``mobilenetv20_features_relu61_relu6_output``; the ``_output`` suffix, the
  model's prefix, or any unambiguous ``_``-separated tail, with or without
  Gluon's ``_fwd`` (``features_relu61_relu6``, ``stage3_activation1``,
  ``relu1`` for ``mynet0_relu1_fwd_output``) may be given; an unknown name
  lists the closest ones;
* the same Parameters train when the GraphNet is a student and are frozen
  (``grad_req = 'null'``) when it is a teacher;
* ``save_parameters`` / ``load_parameters`` go to the original block, so the
  trained student's file has the block's own structure and names and
  ``MyNet(**kwargs).load_parameters('student.params')`` works in your code;
  a checkpoint network saves ``{parameter name: value}``, which both
  ``mxnet_checkpoint`` and ``gluon.SymbolBlock.imports`` read;
* :meth:`GraphNet.export` writes the logits graph alone as
  ``<path>-symbol.json`` + ``<path>-0000.params``.

Networks are built inside a fresh ``mx.name.NameManager``, so their prefixes
(and hence the feature names) do not depend on what the process built before:
the first ``mobilenetv2_*`` is always ``mobilenetv20_``.
"""

import difflib
import importlib
import inspect
import os
import sys
import warnings

import mxnet as mx
from mxnet import gluon

from nst.errors import NSTError, first_line

from .checkpoint_teacher import head_logits, input_transform, load_symbol_checkpoint

__all__ = ["GraphNet", "get_external_model", "is_external", "import_block", "transplant"]

_COMMON = ("logits", "data_name", "input_mean", "input_std")
_OPTIONS = {
    "mxnet_checkpoint": ("prefix", "epoch") + _COMMON,
    "gluoncv": ("pretrained", "kwargs", "model_kwargs") + _COMMON,
    "python": ("kwargs",) + _COMMON,
}
#: the trainer's initialisation, used for GluonCV models built without pretrained weights
_INIT = dict(rnd_type="gaussian", factor_type="in", magnitude=2)


def is_external(name):
    """True for the names this module builds (``gluoncv:``, ``python:``, ``mxnet_checkpoint``)."""
    key = name.strip().lower() if isinstance(name, str) else ""
    return key == "mxnet_checkpoint" or key.startswith(("gluoncv:", "python:"))


def _initialized(param):
    return param._data is not None or bool(param._deferred_init)


class GraphNet(gluon.Block):
    """A network as a symbol graph cut at named internal outputs (see the module docs).

    Parameters
    ----------
    symbol : mx.sym.Symbol
        The whole network (its first output is taken when it has several).
    source : gluon.HybridBlock or None
        The block ``symbol`` was traced from; its Parameters are used as they are.
    values : dict of str -> NDArray, optional
        Without ``source``: the parameter values (an MXNet checkpoint); they
        become this block's own Parameters.
    features : list of str or None
    logits : str or None
        Internal output used as logits (None: :func:`head_logits`).
    data_name : str
    input_mean, input_std : 3 numbers or None
    classes : int or None
        Expected number of logits (checked on the first forward pass).
    model_name : str
        Used in messages.
    """

    def __init__(self, symbol, source=None, values=None, features=None, logits=None,
                 data_name="data", input_mean=None, input_std=None, classes=None,
                 model_name="network"):
        super(GraphNet, self).__init__(prefix="")
        if len(symbol.list_outputs()) > 1:
            symbol = symbol[0]
        self.model_name = model_name
        self._symbol = symbol
        self._internals = symbol.get_internals()
        # internal output name -> position; a name that recurs (two layers built with the
        # same prefix) is listed again as "name:1", "name:2", ...
        variables = set(symbol.list_arguments() + symbol.list_auxiliary_states())
        self._position = {}
        for index, out in enumerate(self._internals.list_outputs()):
            key, count = out, 0
            while key in self._position:
                count += 1
                key = "%s:%d" % (out, count)
            if out not in variables:
                self._position[key] = index
        self._all_outputs = list(self._position)
        self.feature_names = tuple(k for k in self._all_outputs
                                   if k.split(":")[0].endswith("_output"))
        self._data_name = data_name
        self._name_prefix = getattr(source, "prefix", "") or ""
        self.net = source                       # registered child: its Parameters are ours
        if source is None:
            self._own_parameters(values or {})
        self.logits_name = self._resolve(logits) if logits else self._last(head_logits(symbol))
        self.expected_classes = classes
        self._transform = input_transform(input_mean, input_std, model_name)
        self._transform_on = {}
        self._contexts = []
        self._checked = False
        self._requested = None
        self._hybrid = None
        self.loads_own_weights = all(_initialized(p) for p in self.collect_params().values())
        self.set_features(features)

    def _own_parameters(self, values):
        aux = set(self._symbol.list_auxiliary_states())
        for name in self._symbol.list_arguments() + self._symbol.list_auxiliary_states():
            if name == self._data_name or name not in values:
                continue
            value = values[name]
            param = self.params.get(name, shape=value.shape, dtype=value.dtype,
                                    grad_req="null" if name in aux else "write")
            param._load_init(value, [mx.cpu()])

    # ------------------------------------------------------------------ names
    def _output(self, key):
        """The internal output (a Symbol) of name ``key``."""
        return self._internals[self._position[key]]

    def _last(self, name):
        """The key of the last internal output called ``name`` (the head is the last node)."""
        keys = [k for k in self._all_outputs if k.split(":")[0] == name]
        return keys[-1] if keys else name

    def _resolve(self, name):
        """The internal output ``name`` stands for (exact, + ``_output``, + prefix, or a tail)."""
        if not isinstance(name, str) or not name:
            raise NSTError("%s: feature names must be strings (internal output names such as "
                           "%s), got %r" % (self.model_name, (self.feature_names or ("x",))[-1],
                                            name))
        outputs = set(self._all_outputs)
        for candidate in (name, name + "_output", self._name_prefix + name,
                          self._name_prefix + name + "_output"):
            if candidate in outputs and candidate != self._data_name:
                return candidate
        tails = [n for n in self.feature_names if n.endswith(("_" + name, "_" + name + "_output",
                                                              "_" + name + "_fwd_output"))]
        if len(tails) == 1:
            return tails[0]
        ambiguous = ""
        if tails:
            ambiguous = " (%r ends %d of them: %s%s; give more of the name)" % (
                name, len(tails), ", ".join(tails[:4]), " ..." if len(tails) > 4 else "")
        raise NSTError("%s has no internal output %r%s; the closest names are %s (%d in all: "
                       "`nst features NETWORK` lists them with their shapes). Fix the feature or "
                       "logits name in your config"
                       % (self.model_name, name, ambiguous, ", ".join(self.closest(name)),
                          len(self.feature_names)))

    def closest(self, name, n=5):
        """Feature names closest to ``name`` (compared without the prefix and ``_output``)."""
        short = {}
        for full in self.feature_names:
            key = full[len(self._name_prefix):] if full.startswith(self._name_prefix) else full
            short.setdefault(key[:-len("_output")] if key.endswith("_output") else key, full)
        query = name[len(self._name_prefix):] if name.startswith(self._name_prefix) else name
        query = query[:-len("_output")] if query.endswith("_output") else query
        close = difflib.get_close_matches(query, list(short), n=n, cutoff=0.3)
        return [short[c] for c in close] or list(self.feature_names[-n:])

    def resolve_feature(self, name):
        return self._resolve(name)

    @property
    def requested_features(self):
        return None if self._requested is None else tuple(self._requested)

    # ---------------------------------------------------------------- outputs
    def set_features(self, features):
        """Choose the outputs: None (logits only) or a list of internal output names."""
        if isinstance(features, str):
            raise NSTError("%s: features must be a list of names, got the string %r; write "
                           "features=[%r]" % (self.model_name, features, features))
        if features is not None and not isinstance(features, (list, tuple)):
            raise NSTError("%s: features must be a list of internal output names or None, got "
                           "%r" % (self.model_name, features))
        resolved = [self._resolve(f) for f in (features or [])]
        outputs = [self._output(self.logits_name)]
        for name in resolved:
            out = self._output(name)
            outputs.append(out if name != self.logits_name and resolved.count(name) == 1
                           else mx.sym.identity(out))
        group = outputs[0] if len(outputs) == 1 else mx.sym.Group(outputs)
        if self._data_name not in group.list_arguments():
            raise NSTError("%s: the network has no input named %r; set params.data_name to its "
                           "input variable" % (self.model_name, self._data_name))
        params = self.collect_params()
        missing = [a for a in group.list_arguments() + group.list_auxiliary_states()
                   if a != self._data_name and a not in params]
        if missing:
            raise NSTError("%s: no values for %s%s; these inputs are needed by the requested "
                           "outputs (is it the matching .params file?)"
                           % (self.model_name, ", ".join(missing[:5]),
                              " ..." if len(missing) > 5 else ""))
        with warnings.catch_warnings():  # "cannot decide type for data": it is float32
            warnings.simplefilter("ignore", UserWarning)
            body = gluon.SymbolBlock(group, mx.sym.var(self._data_name), params=params)
        object.__setattr__(self, "body", body)  # not a child: its Parameters are ours already
        if self._hybrid is not None:
            body.hybridize(**self._hybrid)
        self._requested = None if features is None else list(features)
        return self

    def feature_shapes(self, data_shape, names=None):
        """``{name: shape}`` of internal outputs for input ``data_shape`` (shape inference only)."""
        names = list(self.feature_names if names is None else names)
        targets = {n: self._resolve(n) for n in names}
        wanted = list(dict.fromkeys(targets.values()))
        group = mx.sym.Group([self._output(t) for t in wanted])
        try:
            _, shapes, _ = group.infer_shape(**{self._data_name: tuple(data_shape)})
        except Exception as err:  # MXNetError: the input does not fit the network
            raise NSTError("%s does not accept input of shape %s (%s); give another input size"
                           % (self.model_name, tuple(data_shape), first_line(err))) from err
        if shapes is None:
            raise NSTError("%s: the output shapes cannot be inferred from input shape %s"
                           % (self.model_name, tuple(data_shape)))
        by_name = dict(zip(wanted, (tuple(s) for s in shapes)))
        return {n: by_name[targets[n]] for n in names}

    # ---------------------------------------------------------------- running
    def initialize(self, init=None, ctx=None, verbose=False, force_reinit=False):
        """Initialise the Parameters that have no value yet (loaded weights are kept) on ``ctx``."""
        init = init if init is not None else mx.init.Uniform()
        ctx = [ctx] if isinstance(ctx, mx.Context) else list(ctx or [mx.cpu()])
        for param in self.collect_params().values():
            if force_reinit or not _initialized(param):
                param.initialize(None, ctx, default_init=init, force_reinit=force_reinit)
            else:
                param.reset_ctx(ctx)
        self._contexts = list(ctx)

    def hybridize(self, active=True, **kwargs):
        self._hybrid = dict(kwargs, active=active)
        self.body.hybridize(active, **kwargs)

    def _place(self, ctx):
        if ctx in self._contexts:
            return
        self._contexts.append(ctx)
        for param in self.collect_params().values():
            if _initialized(param):
                param.reset_ctx(list(self._contexts))

    def _finish_deferred(self, data_shape):
        """Give every Parameter the graph does not use (a custom ``logits``) its shape."""
        pending = [p for p in self.collect_params().values()
                   if p._data is None and p._deferred_init]
        if not pending:
            return
        arg_shapes, _, aux_shapes = self._symbol.infer_shape_partial(
            **{self._data_name: tuple(data_shape)})
        names = self._symbol.list_arguments() + self._symbol.list_auxiliary_states()
        shapes = dict(zip(names, list(arg_shapes or []) + list(aux_shapes or [])))
        for param in pending:
            shape = shapes.get(param.name)
            if shape and all(shape):
                param.shape = tuple(shape)
                param._finish_deferred_init()

    def forward(self, x):
        self._place(x.context)
        if self._transform is not None:
            if x.context not in self._transform_on:
                scale, shift = self._transform
                self._transform_on[x.context] = (scale.as_in_context(x.context),
                                                 shift.as_in_context(x.context))
            scale, shift = self._transform_on[x.context]
            x = mx.nd.broadcast_add(mx.nd.broadcast_mul(x, scale), shift)
        out = self.body(x)
        outs = tuple(out) if isinstance(out, (list, tuple)) else (out,)
        if not self._checked:
            self._check_logits(outs[0])
            self._finish_deferred(x.shape)
            self._checked = True
        return outs[0] if self._requested is None else outs

    def _check_logits(self, logits):
        if self.expected_classes is None:
            return
        width = logits.shape[1] if logits.ndim == 2 else None
        if width != self.expected_classes:
            raise NSTError("%s gives logits of shape %s (output %s) but the data has %d classes; "
                           "build it for %d classes (params.kwargs: {classes: %d}) or choose "
                           "the logits output with params.logits"
                           % (self.model_name, logits.shape[1:], self.logits_name,
                              self.expected_classes, self.expected_classes,
                              self.expected_classes))

    # ------------------------------------------------------------- parameters
    def _collect_params_with_prefix(self, prefix=""):
        if self.net is not None:  # the block's own structure: 'features.0.weight' ...
            return self.net._collect_params_with_prefix(prefix)
        return {prefix + name: param for name, param in self.params.items()}

    def save_parameters(self, filename, deduplicate=False):
        """The block's own parameter file (``net.load_parameters`` reads it)."""
        if self.net is not None:
            return self.net.save_parameters(filename, deduplicate=deduplicate)
        return super(GraphNet, self).save_parameters(filename, deduplicate=deduplicate)

    def load_parameters(self, filename, ctx=None, allow_missing=False, ignore_extra=False,
                        cast_dtype=False, dtype_source="current"):
        if self.net is not None:
            self.net.load_parameters(filename, ctx=ctx, allow_missing=allow_missing,
                                     ignore_extra=ignore_extra, cast_dtype=cast_dtype,
                                     dtype_source=dtype_source)
        else:  # {name: value}, 'arg:'/'aux:' prefixes accepted (an MXNet checkpoint's file)
            self.collect_params().load(filename, ctx, allow_missing, ignore_extra, "",
                                       cast_dtype=cast_dtype, dtype_source=dtype_source)
        if ctx is not None:
            self._contexts = [ctx] if isinstance(ctx, mx.Context) else list(ctx)

    def export(self, path, epoch=0):
        """Write the logits graph alone: ``<path>-symbol.json`` + ``<path>-%04d.params``.

        The files load with ``gluon.SymbolBlock.imports(path + '-symbol.json',
        [data_name], path + '-0000.params')``; the parameter names are the
        network's own.  An ``input_mean`` / ``input_std`` conversion becomes two
        extra parameters, ``nst_input_scale`` and ``nst_input_shift``.
        """
        logits = self._output(self.logits_name)
        params = self.collect_params()
        values = {}
        if self._transform is not None:
            data = mx.sym.var(self._data_name)
            scale, shift = mx.sym.var("nst_input_scale"), mx.sym.var("nst_input_shift")
            logits = logits(**{self._data_name: mx.sym.broadcast_add(
                mx.sym.broadcast_mul(data, scale), shift)})
            values["arg:nst_input_scale"], values["arg:nst_input_shift"] = self._transform
        for name in logits.list_arguments():
            if name in params:
                values["arg:" + name] = params[name]._reduce()
        for name in logits.list_auxiliary_states():
            values["aux:" + name] = params[name]._reduce()
        logits.save("%s-symbol.json" % path)
        mx.nd.save("%s-%04d.params" % (path, epoch), values)

    def __repr__(self):
        return "%s(%s, logits=%s, features=%s)" % (type(self).__name__, self.model_name,
                                                    self.logits_name, self._requested)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------

def _check_options(kind, name, kwargs):
    unknown = sorted(k for k in kwargs if k not in _OPTIONS[kind])
    if unknown:
        raise NSTError("%s: unknown param(s) %s; the params are %s"
                       % (name, ", ".join(unknown), ", ".join(_OPTIONS[kind])))


def _kwargs(name, kwargs):
    extra = kwargs.get("kwargs")
    if extra is None:
        extra = kwargs.get("model_kwargs")
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise NSTError("%s: params.kwargs must be a mapping of constructor arguments, got %r"
                       % (name, extra))
    return dict(extra)


def _trace(block, data_name, label):
    """The symbol ``block`` hybridizes to."""
    try:
        with mx.name.NameManager():  # names of unnamed operators, too, do not depend on history
            return block(mx.sym.var(data_name))
    except NSTError:
        raise
    except Exception as err:
        raise NSTError("%s cannot be traced into a symbolic graph (%s: %s); its hybrid_forward "
                       "must use only F.* operators so that it hybridizes"
                       % (label, type(err).__name__, first_line(err))) from err


def _graph_options(kwargs):
    """The :class:`GraphNet` options every external network takes from its params."""
    options = {k: kwargs.get(k) for k in ("logits", "input_mean", "input_std")}
    options["data_name"] = kwargs.get("data_name") or "data"
    return options


def _graph(block, classes, features, label, kwargs):
    options = _graph_options(kwargs)
    symbol = _trace(block, options["data_name"], label)
    if isinstance(symbol, (list, tuple)):
        symbol = symbol[0]
    return GraphNet(symbol, source=block, features=features, classes=classes, model_name=label,
                    **options)


def import_block(path):
    """The callable named by ``module:attribute`` (``attribute`` may be dotted)."""
    module_name, sep, attr = path.rpartition(":")
    if not sep or not module_name or not attr:
        raise NSTError("network python:%s must look like python:<module>:<class>, e.g. "
                       "python:mypackage.nets:MyNet" % path)
    try:
        module = _import(module_name)
    except ModuleNotFoundError as err:
        raise NSTError("cannot import module %r for network python:%s (%s); put the folder "
                       "holding it on PYTHONPATH (the folder nst runs in is searched too)"
                       % (module_name, path, first_line(err))) from err
    except Exception as err:  # SyntaxError, an exception at import time ...
        raise NSTError("importing module %r for network python:%s failed (%s: %s)"
                       % (module_name, path, type(err).__name__, first_line(err))) from err
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            blocks = sorted(n for n, v in vars(module).items()
                            if inspect.isclass(v) and issubclass(v, gluon.HybridBlock)
                            and v.__module__ == module.__name__)
            raise NSTError("module %r has no attribute %r (network python:%s); its HybridBlock "
                           "classes: %s" % (module_name, attr, path, ", ".join(blocks) or "none"))
        target = getattr(target, part)
    if inspect.isclass(target) and not issubclass(target, gluon.HybridBlock):
        raise NSTError("python:%s is the class %s, which is not a Gluon HybridBlock; a network "
                       "must subclass mxnet.gluon.HybridBlock so that it can be traced into a "
                       "graph" % (path, target.__name__))
    if not callable(target):
        raise NSTError("python:%s is a %s, not a HybridBlock class or a function returning one"
                       % (path, type(target).__name__))
    return target


def _import(module_name):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        here = os.getcwd()
        top = module_name.split(".")[0]
        if err.name != top or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)
        return importlib.import_module(module_name)


def _accepts_classes(factory):
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return "classes" in signature.parameters


def _python_model(name, classes, features, kwargs):
    _check_options("python", name, kwargs)
    path = name.split(":", 1)[1].strip()
    factory = import_block(path)
    extra = _kwargs(name, kwargs)
    if classes is not None and "classes" not in extra and _accepts_classes(factory):
        extra["classes"] = classes
    try:
        with mx.name.NameManager():
            block = factory(**extra)
    except NSTError:
        raise
    except Exception as err:
        raise NSTError("cannot build network python:%s with kwargs %s (%s: %s); fix params.kwargs"
                       % (path, extra, type(err).__name__, first_line(err))) from err
    if not isinstance(block, gluon.HybridBlock):
        raise NSTError("python:%s returned a %s, which is not a Gluon HybridBlock; a network "
                       "must be a mxnet.gluon.HybridBlock so that it can be traced into a graph"
                       % (path, type(block).__name__))
    return _graph(block, classes, features, "python:%s" % path, kwargs)


def transplant(source, target):
    """Copy every parameter of ``source`` whose structural name and shape fit into ``target``.

    Returns the structural names of ``target`` left as they were (e.g. a new
    classifier).  Unknown (deferred) dimensions of ``target`` fit anything.
    """
    have = source._collect_params_with_prefix()
    fresh = []
    for key, param in target._collect_params_with_prefix().items():
        src = have.get(key)
        shape = tuple(param.shape or ())
        if src is None or len(src.shape) != len(shape) or \
                any(d not in (0, s) for d, s in zip(shape, src.shape)):
            fresh.append(key)
            continue
        param._load_init(src.data(), [mx.cpu()])
    return fresh


def _zoo(model, pretrained, extra):
    from gluoncv import model_zoo
    try:
        with mx.name.NameManager():
            return model_zoo.get_model(model, pretrained=pretrained, **extra)
    except ValueError as err:
        raise NSTError("gluoncv has no model %r (%s); see gluoncv.model_zoo.get_model_list()"
                       % (model, first_line(err))) from err
    except TypeError as err:
        raise NSTError("gluoncv:%s does not accept kwargs %s (%s); fix params.kwargs"
                       % (model, extra, first_line(err))) from err
    except Exception as err:  # download failure (no network), hash mismatch ...
        raise NSTError("could not build GluonCV model %r with pretrained=%s (%s); its weights "
                       "are downloaded to ~/.mxnet/models on first use: run once on a machine "
                       "with internet access and copy that folder, or use pretrained: false"
                       % (model, pretrained, first_line(err))) from err


def _logit_count(block, size=224):
    """Number of outputs of a classification block (shape inference), None if unknown."""
    try:
        out = block(mx.sym.var("data"))
        out = out[0] if isinstance(out, (list, tuple)) else out
        _, shapes, _ = out.infer_shape(data=(1, 3, size, size))
        return int(shapes[0][1]) if shapes and len(shapes[0]) == 2 else None
    except Exception:  # a model for other input sizes: decide by transplanting
        return None


def _gluoncv_model(name, classes, features, kwargs):
    _check_options("gluoncv", name, kwargs)
    model = name.split(":", 1)[1].strip()
    pretrained = kwargs.get("pretrained", True)
    pretrained = True if pretrained is None else bool(pretrained)
    extra = _kwargs(name, kwargs)
    if classes is not None:
        extra.setdefault("classes", classes)
    if not pretrained:  # random weights, the trainer's initialisation
        net = _zoo(model, False, extra)
        net.initialize(mx.init.Xavier(**_INIT))
        fresh = sorted(net._collect_params_with_prefix())
    else:
        wanted = extra.pop("classes", None)
        net = _zoo(model, True, extra)
        fresh = []
        if wanted is not None and _logit_count(net) != wanted:
            target = _zoo(model, False, dict(extra, classes=wanted))
            target.initialize(mx.init.Xavier(**_INIT))
            fresh = transplant(net, target)
            if len(fresh) == len(target._collect_params_with_prefix()):
                raise NSTError("the pretrained weights of gluoncv:%s fit none of the parameters "
                               "of the model built with kwargs %s" % (model, extra))
            net = target
    graph = _graph(net, classes, features, "gluoncv:%s" % model, kwargs)
    graph.fresh_parameters = fresh
    return graph


def _checkpoint_model(name, classes, features, kwargs):
    _check_options("mxnet_checkpoint", name, kwargs)
    prefix, epoch = kwargs.get("prefix"), kwargs.get("epoch", 0)
    symbol, values = load_symbol_checkpoint(prefix, 0 if epoch is None else epoch)
    label = "mxnet_checkpoint %s-%04d" % (prefix, int(epoch or 0))
    return GraphNet(symbol, values=values, features=features, model_name=label,
                    **_graph_options(kwargs))


def get_external_model(name, classes=None, features=None, **kwargs):
    """Build a ``gluoncv:``, ``python:`` or ``mxnet_checkpoint`` network as a :class:`GraphNet`."""
    key = name.strip()
    lower = key.lower()
    if lower == "mxnet_checkpoint":
        return _checkpoint_model(key, classes, features, kwargs)
    if lower.startswith("gluoncv:"):
        return _gluoncv_model(key, classes, features, kwargs)
    if lower.startswith("python:"):
        return _python_model(key, classes, features, kwargs)
    raise NSTError("%r is not a gluoncv:, python: or mxnet_checkpoint network" % name)
