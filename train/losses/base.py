"""Base class and registry of the transfer losses.

Every loss is a Gluon ``HybridBlock`` registered under a name; the trainer
builds it with :func:`get_loss` and calls ``loss(student, teacher)``:

* the result is the batch loss (the mean over samples of the per-sample loss),
  an NDArray of shape ``(1,)``, *without* the weight lambda (the trainer
  multiplies by the config's weight, or by ``default_weight``);
* the teacher input never receives a gradient (``stop_gradient`` inside);
* learned parameters (FitNet's regressor) are children of the loss block, so
  ``loss.collect_params()`` returns them and they are trained with the student.

Constructor contract (uniform, so the trainer needs no per-method code)::

    cls(student_shape=None, teacher_shape=None, **params)

``student_shape`` / ``teacher_shape`` are the per-sample shapes of the two
inputs, e.g. ``(336, 8, 8)`` for a feature or ``(10,)`` for logits; losses use
them when they need them (FitNet builds its regressor from the channel counts,
NST picks its cheaper Gram form) and otherwise ignore them.  ``params`` are the
method's own options (``cls.defaults``); anything else raises
:class:`nst.errors.NSTError` naming the accepted ones.

Shapes at call time: when called on NDArrays the actual per-sample shapes are
recorded before the graph is built, so size-dependent choices (resizing, Gram
form) follow the data; if they change on a hybridized block the cached graph
is rebuilt.  A purely symbolic call (``Symbol`` inputs) uses the constructor
shapes.
"""

import numbers

import mxnet as mx
from mxnet.gluon import HybridBlock

from nst.errors import NSTError

__all__ = ["TransferLoss", "register", "get_loss", "list_losses", "loss_class", "check_number"]

_REGISTRY = {}
_SHAPE_KEYS = ("student_shape", "teacher_shape")


def register(cls):
    """Class decorator: make ``cls`` available to :func:`get_loss` as ``cls.loss_name``."""
    name = cls.loss_name
    if not name or name in _REGISTRY:
        raise ValueError("loss name %r missing or registered twice" % (name,))
    _REGISTRY[name] = cls
    return cls


def list_losses():
    """Names accepted by :func:`get_loss`, sorted."""
    return sorted(_REGISTRY)


def loss_class(name):
    """The class registered as ``name`` (case-insensitive), or raise NSTError."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _REGISTRY:
        raise NSTError("unknown transfer loss %r; known losses: %s"
                       % (name, ", ".join(list_losses())))
    return _REGISTRY[key]


def get_loss(name, **params):
    """Build the transfer loss ``name`` with ``params`` (see the class docstrings).

    ``student_shape`` and ``teacher_shape`` (per-sample shapes or None) are
    accepted by every loss.  Raises NSTError for an unknown name (listing the
    known ones), an unknown parameter (listing the accepted ones) or a bad value.
    """
    return loss_class(name)(**params)


def _check_shape(shape, key, owner, ndim):
    if shape is None:
        return None
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if shape is None or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
                                and d >= 1 for d in shape):
        raise NSTError("%s: %s must be a tuple of positive ints (the per-sample shape, "
                       "e.g. (336, 8, 8)) or None, got %r" % (owner, key, shape))
    shape = tuple(int(d) for d in shape)
    if len(shape) != ndim:
        raise NSTError("%s: %s must have %d dimensions (%s) per sample, got %r"
                       % (owner, key, ndim, "C, H, W" if ndim == 3 else "classes", shape))
    return shape


def check_number(owner, key, value, low=None, low_open=False, integer=False):
    """Validate a numeric parameter; return it as float (or int)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        value = int(value) if integer else float(value)
        ok = value == value and abs(value) != float("inf")
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        need = "an integer" if integer else "a finite number"
        if low is not None:
            need += " %s %g" % (">" if low_open else ">=", low)
        raise NSTError("%s: parameter %s must be %s, got %r" % (owner, key, need, value))
    return value


class TransferLoss(HybridBlock):
    """Common machinery of the transfer losses (see the module docstring).

    Subclasses set the class attributes below, validate their parameters in
    :meth:`_configure` and implement :meth:`_loss`.
    """

    #: registry name (``get_loss(loss_name)``)
    loss_name = None
    #: "feature" (N, C, H, W) maps or "logits" (N, classes)
    inputs = "feature"
    #: the paper's lambda as applied in Eq. 3: what the trainer multiplies the loss by
    default_weight = None
    #: accepted parameters and their defaults
    defaults = {}

    def __init__(self, student_shape=None, teacher_shape=None, **params):
        super().__init__()
        owner = self.loss_name or type(self).__name__
        unknown = sorted(k for k in params if k not in self.defaults)
        if unknown:
            accepted = list(self.defaults) + list(_SHAPE_KEYS)
            raise NSTError("%s: unknown parameter(s) %s; the accepted parameters are %s"
                           % (owner, ", ".join(unknown), ", ".join(accepted)))
        ndim = 1 if self.inputs == "logits" else 3
        self.student_shape = _check_shape(student_shape, "student_shape", owner, ndim)
        self.teacher_shape = _check_shape(teacher_shape, "teacher_shape", owner, ndim)
        values = dict(self.defaults)
        values.update(params)
        self.config = self._configure(**values)
        self._shapes = None          # per-sample shapes used by the graph being built
        self._graph_shapes = None    # per-sample shapes the cached graph was built for

    # ------------------------------------------------------------ subclass API
    def _configure(self, **values):
        """Validate ``values`` (all of ``defaults``), store them, return them as a dict."""
        return values

    def _check_call(self, s_shape, t_shape):
        """Raise NSTError if the full input shapes cannot be used (NDArray calls)."""
        owner = self.loss_name
        ndim = 2 if self.inputs == "logits" else 4
        what = "(N, classes) logits" if ndim == 2 else "(N, C, H, W) feature maps"
        for role, shape in (("student", s_shape), ("teacher", t_shape)):
            if len(shape) != ndim:
                raise NSTError("%s expects %s; got a %s input of shape %s"
                               % (owner, what, role, shape))
        if s_shape[0] != t_shape[0]:
            raise NSTError("%s: student and teacher batch sizes differ (%d vs %d); feed both "
                           "networks the same images" % (owner, s_shape[0], t_shape[0]))

    def _loss(self, F, student, teacher, s_shape, t_shape):
        """Return the batch loss; ``teacher`` already has its gradient stopped."""
        raise NotImplementedError

    # ------------------------------------------------------------------ gluon
    def forward(self, student, teacher):
        if isinstance(student, mx.nd.NDArray):
            if not isinstance(teacher, mx.nd.NDArray):
                raise NSTError("%s: student and teacher must both be NDArrays, got %s"
                               % (self.loss_name, type(teacher).__name__))
            self._check_call(tuple(student.shape), tuple(teacher.shape))
            shapes = (tuple(student.shape[1:]), tuple(teacher.shape[1:]))
            if self._active and self._graph_shapes is not None and shapes != self._graph_shapes:
                self._clear_cached_op()   # size-dependent choices must be re-made
            self._graph_shapes = shapes
            self._shapes = shapes
        else:
            self._shapes = (self.student_shape, self.teacher_shape)
        return super().forward(student, teacher)

    def hybrid_forward(self, F, student, teacher):
        s_shape, t_shape = self._shapes or (self.student_shape, self.teacher_shape)
        if s_shape is None or t_shape is None:
            raise NSTError("%s called on symbols without student_shape/teacher_shape: pass "
                           "the per-sample shapes to get_loss()" % self.loss_name)
        return self._loss(F, student, F.stop_gradient(teacher), s_shape, t_shape)

    def __repr__(self):
        opts = ", ".join("%s=%r" % kv for kv in self.config.items())
        return "%s(%s)" % (type(self).__name__, opts)
