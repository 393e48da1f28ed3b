r"""Flow of Solution Procedure (Yim et al., CVPR 2017): ``get_loss("fsp")``.

J. Yim, D. Joo, J. Bae and J. Kim, "A Gift from Knowledge Distillation: Fast
Optimization, Network Minimization and Transfer Learning", CVPR 2017.
"""

import mxnet as mx
from mxnet.gluon import HybridBlock, nn

from nst.errors import NSTError

from .base import TransferLoss, _check_shape, register
from .utils import common_size, resize_to, sum_squares

__all__ = ["FSPLoss", "fsp_matrix"]

_CONNECTORS = ("auto", "always", "none")


def fsp_matrix(F, first, second, first_shape, second_shape):
    r"""The FSP matrix :math:`G = F_1^\top F_2 / (h w)` of two layers, (N, C1, C2).

    ``first`` (N, C1, H1, W1) and ``second`` (N, C2, H2, W2) are brought to
    their common (smaller) spatial size first (average pooling for integer
    ratios, else bilinear: :mod:`.utils`); ``first_shape`` / ``second_shape``
    are their per-sample shapes.
    """
    size = common_size(first_shape, second_shape)
    a = F.reshape(resize_to(F, first, first_shape, size), shape=(0, 0, -1))
    b = F.reshape(resize_to(F, second, second_shape, size), shape=(0, 0, -1))
    return F.batch_dot(a, b, transpose_b=True) * (1.0 / (size[0] * size[1]))


def _shape_list(shapes, key, owner):
    if shapes is None:
        return None
    if not isinstance(shapes, (list, tuple)) or len(shapes) < 2 or \
            not all(isinstance(s, (list, tuple)) for s in shapes):
        raise NSTError("%s: %s must be a list of at least two per-sample (C, H, W) shapes, one "
                       "per layer (the config names a list of features, e.g. student: [in3b, "
                       "in4d, in5b]), got %r" % (owner, key, shapes))
    return [_check_shape(s, key, owner, 3) for s in shapes]


@register
class FSPLoss(TransferLoss):
    r"""FSP matrices between consecutive layers: ``get_loss("fsp")``.

    Inputs are **lists** of feature maps, the same number ``k >= 2`` for the
    student and the teacher (``student: [conv1, in3b, in4d, in5b]``,
    ``teacher: [conv0, stage1, stage2, stage3]`` in a config).  Each pair of
    consecutive layers :math:`(F_i, F_{i+1})` of one network gives the FSP
    matrix (Yim et al., Eq. 1)

    .. math:: G_i(x) = \frac{1}{h w} \sum_{s=1}^{h}\sum_{t=1}^{w}
              F_i(x)_{s,t,\cdot}\, F_{i+1}(x)_{s,t,\cdot}^\top
              \in R^{C_i \times C_{i+1}},

    the larger of the two maps first average-pooled (integer ratios, else
    bilinear) to the smaller's :math:`h \times w`.  The per-sample loss is the
    sum over the :math:`k-1` pairs of the mean squared difference of the
    student's and the teacher's matrices,

    .. math:: L_{FSP} = \sum_{i=1}^{k-1}
              \frac{\| G_i^S - G_i^T \|_F^2}{C_i\, C_{i+1}},

    averaged over the batch.  Yim et al.'s Eq. 2 sums the squared differences
    over the matrices and the pairs with equal weights :math:`\lambda_i`;
    dividing each pair by its matrix size is RepDistiller's per-pair
    ``(s - t).pow(2).mean()``, and the pairs are summed as RepDistiller sums
    its ``loss_group``.  So ``default_weight = 1`` is RepDistiller's FSP
    stage (weight 1 on that sum) for any ``k``.

    Training schedule: Yim et al. (and RepDistiller) train the student on the
    FSP loss **alone** first, then on the task alone.  That is available with
    the activity windows, e.g. ``end_epoch: 50`` on this entry and
    ``train: {ce_start_epoch: 50}``; the shipped configs instead add the
    term to the cross-entropy for the whole run, as every method of the
    paper's comparison (Sec. 5.1).

    Different channel counts
    ------------------------
    The paper requires the student's and teacher's matrices to have the same
    size, i.e. equal channel counts per layer (RepDistiller refuses anything
    else).  With ``connector="auto"`` (default) every student layer whose
    channel count differs from its teacher layer's first goes through a
    learned 1x1 convolution (with bias) to the teacher's count, as FitNet's
    regressor; the connectors are parameters of this block, trained with the
    student and not exported.  ``"always"`` adds a connector to every layer,
    ``"none"`` adds none and refuses unequal counts.

    Parameters
    ----------
    connector : "auto" | "always" | "none", default "auto"
    student_shape, teacher_shape : lists of (C, H, W)
        Required unless ``connector="none"``: the connectors are built from
        the channel counts.

    Inputs: ``inputs = "feature"``; ``loss([s_1, ..., s_k], [t_1, ..., t_k])``
    with (N, C, H, W) maps.
    """

    loss_name = "fsp"
    inputs = "feature"
    #: the inputs are lists of (at least) this many layers
    input_layers = 2
    default_weight = 1.0
    defaults = {"connector": "auto"}

    def __init__(self, student_shape=None, teacher_shape=None, **params):
        super().__init__(student_shape=None, teacher_shape=None, **params)
        self.student_shape = _shape_list(student_shape, "student_shape", "fsp")
        self.teacher_shape = _shape_list(teacher_shape, "teacher_shape", "fsp")
        if self.student_shape is not None and self.teacher_shape is not None and \
                len(self.student_shape) != len(self.teacher_shape):
            raise NSTError("fsp: %d student layers but %d teacher layers; name the same number "
                           "of layers on both sides (consecutive layers form the FSP pairs)"
                           % (len(self.student_shape), len(self.teacher_shape)))
        mode = self.config["connector"]
        self.connectors = []
        if mode == "none":
            if self.student_shape and self.teacher_shape:
                self._check_channels([s[0] for s in self.student_shape],
                                     [t[0] for t in self.teacher_shape])
            return
        if self.student_shape is None or self.teacher_shape is None:
            raise NSTError("fsp needs student_shape and teacher_shape (lists of per-sample "
                           "shapes) to build its 1x1 connectors; pass them, or "
                           "connector='none' for equal channel counts")
        with self.name_scope():
            for i, (s, t) in enumerate(zip(self.student_shape, self.teacher_shape)):
                if mode == "always" or s[0] != t[0]:
                    conv = nn.Conv2D(t[0], kernel_size=1, use_bias=True, in_channels=s[0],
                                     prefix="connector%d_" % i)
                    self.register_child(conv, "connector%d" % i)
                    self.connectors.append(conv)
                else:
                    self.connectors.append(None)

    def _configure(self, connector):
        if connector not in _CONNECTORS:
            raise NSTError("fsp: parameter connector must be one of %s, got %r"
                           % (", ".join(_CONNECTORS), connector))
        return {"connector": connector}

    @staticmethod
    def _check_channels(s_channels, t_channels):
        if list(s_channels) != list(t_channels):
            raise NSTError("fsp with connector='none' needs equal channel counts per layer "
                           "(student %s, teacher %s); use connector='auto' for learned 1x1 "
                           "connectors" % (list(s_channels), list(t_channels)))

    # ------------------------------------------------------------------ calls
    def _check_lists(self, student, teacher):
        for role, value in (("student", student), ("teacher", teacher)):
            if not isinstance(value, (list, tuple)) or len(value) < 2:
                raise NSTError("fsp: the %s input must be a list of at least two feature maps "
                               "(name a list of layers in the config, e.g. %s: [a, b, c]), got "
                               "%s" % (role, role, type(value).__name__))
        if len(student) != len(teacher):
            raise NSTError("fsp: %d student layers but %d teacher layers; name the same number "
                           "of layers on both sides" % (len(student), len(teacher)))
        kinds = {type(x) for x in list(student) + list(teacher)}
        if any(issubclass(k, mx.nd.NDArray) for k in kinds) and \
                not all(issubclass(k, mx.nd.NDArray) for k in kinds):
            raise NSTError("fsp: the inputs must all be NDArrays or all Symbols")

    def _check_call(self, s_shapes, t_shapes):
        for role, shapes in (("student", s_shapes), ("teacher", t_shapes)):
            for shape in shapes:
                if len(shape) != 4:
                    raise NSTError("fsp expects (N, C, H, W) feature maps; got a %s input of "
                                   "shape %s" % (role, shape))
        batch = {shape[0] for shape in list(s_shapes) + list(t_shapes)}
        if len(batch) != 1:
            raise NSTError("fsp: the inputs have different batch sizes %s; feed both networks "
                           "the same images" % sorted(batch))
        for role, shapes, built in (("student", s_shapes, self.student_shape),
                                    ("teacher", t_shapes, self.teacher_shape)):
            if built is None:
                continue
            if len(shapes) != len(built) or [s[1] for s in shapes] != [b[0] for b in built]:
                raise NSTError("fsp was built for %s channels %s but got %s; pass the right "
                               "%s_shape" % (role, [b[0] for b in built],
                                             [s[1] for s in shapes], role))
        if self.config["connector"] == "none":
            self._check_channels([s[1] for s in s_shapes], [t[1] for t in t_shapes])

    def forward(self, student, teacher):
        self._check_lists(student, teacher)
        student, teacher = list(student), list(teacher)
        if isinstance(student[0], mx.nd.NDArray):
            self._check_call([tuple(x.shape) for x in student], [tuple(x.shape) for x in teacher])
            shapes = (tuple(tuple(x.shape[1:]) for x in student),
                      tuple(tuple(x.shape[1:]) for x in teacher))
            if self._active and self._graph_shapes is not None and shapes != self._graph_shapes:
                self._clear_cached_op()
            self._graph_shapes = shapes
            self._shapes = shapes
        else:
            self._shapes = (self.student_shape, self.teacher_shape)
        return HybridBlock.forward(self, student, teacher)

    def hybrid_forward(self, F, student, teacher):
        s_shapes, t_shapes = self._shapes or (self.student_shape, self.teacher_shape)
        if s_shapes is None or t_shapes is None:
            raise NSTError("fsp called on symbols without student_shape/teacher_shape: pass "
                           "the per-sample shapes to get_loss()")
        teacher = [F.stop_gradient(t) for t in teacher]
        return self._loss(F, student, teacher, s_shapes, t_shapes)

    def _loss(self, F, student, teacher, s_shapes, t_shapes):
        mapped, mapped_shapes = [], []
        for i, (x, shape) in enumerate(zip(student, s_shapes)):
            conv = self.connectors[i] if self.connectors else None
            if conv is not None:
                x = conv(x)
                shape = (t_shapes[i][0],) + tuple(shape[1:])
            mapped.append(x)
            mapped_shapes.append(tuple(shape))
        pairs = len(student) - 1
        total = None
        for i in range(pairs):
            g_s = fsp_matrix(F, mapped[i], mapped[i + 1], mapped_shapes[i], mapped_shapes[i + 1])
            g_t = fsp_matrix(F, teacher[i], teacher[i + 1], t_shapes[i], t_shapes[i + 1])
            size = t_shapes[i][0] * t_shapes[i + 1][0]
            term = sum_squares(F, g_s - g_t) * (1.0 / size)
            total = term if total is None else total + term
        return F.mean(total)

    def __repr__(self):
        return "FSPLoss(connector=%r, pairs=%s)" % (
            self.config["connector"],
            None if self.student_shape is None else len(self.student_shape) - 1)
