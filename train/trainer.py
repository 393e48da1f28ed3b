"""The distillation trainer: one loop for teachers, students and distilled students.

It minimises Eq. 3 of the paper generalised to any set of transfer losses,

    L(W_S) = H(y_true, p_S) + sum_k  lambda_k * L_k(student feature_k, teacher feature_k),

where each ``L_k`` comes from :func:`train.losses.get_loss` and ``lambda_k`` is
the config's ``weight`` (the paper's lambda/2 for NST).  The trainer knows
nothing about individual methods: it asks each network for the named features
the config lists (``logits`` is the network's output), hands them to the loss
blocks, and trains the student's parameters together with any parameters the
losses own (FitNet's regressor).  With no ``transfer`` entries it trains a
plain network: that is how teachers and baseline students are trained.

Optimiser: SGD with Nesterov momentum (MXNet's ``nag``), weight decay, and a
step learning-rate schedule (``mx.lr_scheduler.MultiFactorScheduler``) whose
steps are given in epochs.  Data parallel over a list of contexts through
``gluon.Trainer`` and a kvstore (:mod:`train.devices`).

Outputs in the run folder (``out``):

- ``log.json`` / ``log.csv``: one record per epoch (errors, loss components,
  images/s, learning rate), rewritten atomically every epoch;
- ``checkpoint.json`` + ``checkpoints/``: the latest checkpoint
  (:mod:`train.checkpoint`); ``--resume`` continues exactly from it;
- ``student.params``: the final student as a plain Gluon parameter file
  (``net.load_parameters``), without the losses' own parameters;
- ``results.json`` and ``curves.png`` (train dashed, test solid).
"""

import os
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

import symbols
from nst.errors import NSTError
from nst import faults
from nst.io import write_json, write_text
from nst.runtime import runtime_info
from train import checkpoint as ckpt
from train import epochs
from train.data import build_batches
from train.devices import create_kvstore
from train.losses import get_loss, loss_class
from train.rng import seed_step
from train.runlog import log_path, read_log

LOGITS = "logits"
_SYNC_KEY_BASE = 1 << 20  # kvstore keys for replica synchronisation (gradients use 0..n-1)
_CLOCK_KEY = _SYNC_KEY_BASE - 1  # kvstore key on which dist_sync workers agree on a checkpoint


class TransferTerm:
    """One configured transfer loss: the block, its weight, its inputs and when it acts.

    ``student_index`` / ``teacher_index`` locate the loss's inputs in the
    networks' output tuples: an int, or a list of ints when the config names a
    list of features (the loss then receives a list, e.g. FSP's two layers).
    The term is active for ``start_epoch <= epoch < end_epoch``.
    """

    def __init__(self, name, block, weight, student_index, teacher_index, label,
                 start_epoch=0, end_epoch=None, pretrain_epochs=0):
        self.name = name
        self.block = block
        self.weight = float(weight)
        self.student_index = student_index
        self.teacher_index = teacher_index
        self.label = label
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.pretrain_epochs = pretrain_epochs
        self.needs_index = bool(getattr(block, "needs_index", False))

    def active(self, epoch):
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch < self.end_epoch)


def _names(spec):
    return list(spec) if isinstance(spec, list) else [spec]


def _feature_requests(cfg):
    """Unique feature names each network must return, in config order."""
    student, teacher = [], []
    for entry in cfg["transfer"]:
        for name in _names(entry["student"]):
            if name != LOGITS and name not in student:
                student.append(name)
        for name in _names(entry["teacher"]):
            if name != LOGITS and name not in teacher:
                teacher.append(name)
    return student, teacher


def _output_index(requested, spec):
    """Position(s) of a feature name (or list of names) in a network's outputs."""
    if isinstance(spec, list):
        return [_output_index(requested, name) for name in spec]
    return 0 if spec == LOGITS else 1 + requested.index(spec)


def _pick(outputs, index):
    return [outputs[i] for i in index] if isinstance(index, list) else outputs[index]


def _as_tuple(out):
    return out if isinstance(out, (tuple, list)) else (out,)


def exempt_from_weight_decay(params, suffixes, require_match=True):
    """Set ``wd_mult = 0`` on every trainable parameter whose name ends with
    ``_<suffix>`` for a suffix in ``suffixes`` (``optimizer.no_wd``); the
    others keep ``wd_mult = 1``.

    ``[beta, bias]`` reproduces MXNet's Module, which the authors trained
    with: its optimiser decays only ``*_weight`` and ``*_gamma`` arguments
    (``Optimizer.set_wd_mult``).  Gluon's default (``[]``) decays everything.
    A suffix that matches no trainable parameter is an error (a typo would
    otherwise silently decay everything).
    """
    params = params.values() if hasattr(params, "values") else params
    trainable = [p for p in params if p.grad_req != "null"]
    matched = set()
    for param in trainable:
        hits = [s for s in suffixes if param.name.endswith("_" + s)]
        param.wd_mult = 0.0 if hits else 1.0
        matched.update(hits)
    missing = [s for s in suffixes if s not in matched]
    if require_match and missing:
        raise NSTError("optimizer.no_wd: no trainable parameter name ends with %s; use "
                       "parameter kinds such as beta, gamma, bias"
                       % ", ".join("'_%s'" % s for s in missing))


class Distiller:
    """Train ``cfg['student']`` with cross-entropy plus ``cfg['transfer']``.

    Parameters
    ----------
    cfg : dict
        A validated config (:func:`train.config.load_config`).
    contexts : list of mx.Context
        Devices to split every batch over.
    kvstore : str
        ``device``, ``nccl``, ``local`` or ``dist_sync``.
    progress : bool
        Show tqdm progress bars.
    """

    def __init__(self, cfg, contexts, kvstore=None, progress=True, log=print):
        self.cfg = cfg
        self.ctx = list(contexts)
        self.progress = progress
        self.log = log
        self.kv, self.rank, self.num_workers = create_kvstore(kvstore or cfg["train"]["kvstore"])
        self.out = cfg["out"] if self.rank == 0 else os.path.join(cfg["out"], "worker%d" % self.rank)
        self._stop_signal = None
        self._sync_keys = set()
        self._clock = ckpt.CheckpointClock(cfg["train"]["checkpoint_every_steps"],
                                           cfg["train"]["checkpoint_every_minutes"])
        self.teacher_eval = None  # the teacher's test error, set by fit (check_teacher)

        seed = cfg["seed"]
        mx.random.seed(seed)
        np.random.seed(seed)

        self._load_data()
        self._build_networks()
        self._build_transfer()
        self._build_trainer()

    # ----------------------------------------------------------------- set-up
    def _load_data(self):
        dcfg = self.cfg["data"]
        batch = dcfg["batch_size"]
        if batch % self.num_workers:
            raise NSTError("data.batch_size %d is not divisible by the %d workers"
                           % (batch, self.num_workers))
        self.global_batch = batch
        self.local_batch = batch // self.num_workers
        if self.local_batch < len(self.ctx):
            raise NSTError("data.batch_size %d gives fewer than one image per device "
                           "(%d devices); raise the batch size" % (batch, len(self.ctx)))
        source = build_batches(dcfg, self.cfg["seed"], self.local_batch, self.rank,
                               self.num_workers)
        self.train_batches, self.test_batches = source.train, source.test
        self.classes, self.image_shape = source.classes, source.image_shape
        self.class_names = source.class_names

    def _build_networks(self):
        cfg = self.cfg
        self.student_features, self.teacher_features = _feature_requests(cfg)
        scfg = cfg["student"]
        self.student = symbols.get_model(scfg["network"], classes=self.classes,
                                         features=self.student_features, **scfg["params"])
        self.student.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in",
                                               magnitude=2), ctx=self.ctx)
        if scfg.get("checkpoint"):
            self._load_params(self.student, scfg["checkpoint"], "student", scfg["network"],
                              allow_missing=False)
        self.student.hybridize(static_alloc=True, static_shape=True)

        self.teacher = None
        tcfg = cfg["teacher"]
        if tcfg is not None:
            self.teacher = symbols.get_model(tcfg["network"], classes=self.classes,
                                             features=self.teacher_features, **tcfg["params"])
            if tcfg["checkpoint"]:
                self._load_params(self.teacher, tcfg["checkpoint"], "teacher", tcfg["network"])
            elif not getattr(self.teacher, "loads_own_weights", False):
                raise NSTError("teacher.checkpoint is missing: a teacher must be trained; give "
                               "the .params file written by training %r (nst train CONFIG "
                               "writes <out>/student.params)" % tcfg["network"])
            for param in self.teacher.collect_params().values():
                param.grad_req = "null"
            self.teacher.hybridize(static_alloc=True, static_shape=True)

    def _teacher_forward(self, x):
        """The teacher's outputs for one device's batch, outside autograd (no graph).

        ``teacher.batchnorm: running`` runs it in inference mode (BatchNorm uses
        the stored running statistics); ``batch`` in training mode, so BatchNorm
        normalises with the statistics of this device's batch, as the authors'
        solver does (``teacher_module.forward(data_batch, is_train=True)``).
        Either way no gradient reaches the frozen teacher.
        """
        if self.cfg["teacher"]["batchnorm"] == "batch":
            with autograd.train_mode():
                return _as_tuple(self.teacher(x))
        return _as_tuple(self.teacher(x))

    def _load_params(self, net, path, role, network, allow_missing=False):
        if not os.path.isfile(path):
            raise NSTError("%s checkpoint %s does not exist; train the %s first (nst train "
                           "CONFIG writes <out>/student.params) or fix %s.checkpoint"
                           % (role, path, role, role))
        try:
            net.load_parameters(path, ctx=self.ctx, allow_missing=allow_missing)
        except Exception as err:  # AssertionError / MXNetError on a mismatch
            raise NSTError("%s checkpoint %s does not match network %r with %d classes (%s); "
                           "use a checkpoint trained for this architecture or fix %s.network "
                           "and %s.params" % (role, path, network, self.classes,
                                              str(err).splitlines()[0][:300], role, role)) from err

    def _probe_shapes(self):
        """Per-sample shapes of every output of the student and teacher."""
        probe = mx.nd.zeros((2,) + tuple(self.image_shape), ctx=self.ctx[0])
        student_out = [o.shape[1:] for o in _as_tuple(self.student(probe))]
        teacher_out = None
        if self.teacher is not None:
            teacher_out = [o.shape[1:] for o in _as_tuple(self.teacher(probe))]
        return student_out, teacher_out

    def _build_transfer(self):
        student_shapes, teacher_shapes = self._probe_shapes()
        self.terms = []
        counts = {}
        for entry in self.cfg["transfer"]:
            s_index = _output_index(self.student_features, entry["student"])
            t_index = _output_index(self.teacher_features, entry["teacher"])
            context = {"student_shape": _shape_of(_pick(student_shapes, s_index)),
                       "teacher_shape": _shape_of(_pick(teacher_shapes, t_index))}
            if getattr(loss_class(entry["loss"]), "needs_index", False):
                if not hasattr(self.train_batches, "dataset_size"):
                    raise NSTError("transfer loss %r keeps per-sample state and needs sample "
                                   "indices, which the %r data source does not provide"
                                   % (entry["loss"], self.cfg["data"]["dataset"]))
                context["num_samples"] = self.train_batches.dataset_size
            block = get_loss(entry["loss"], **context, **entry["params"])
            weight = entry["weight"] if entry["weight"] is not None else block.default_weight
            counts[entry["loss"]] = counts.get(entry["loss"], 0) + 1
            label = entry["loss"] if counts[entry["loss"]] == 1 else \
                "%s_%d" % (entry["loss"], counts[entry["loss"]])
            block.initialize(mx.init.Xavier(magnitude=2), ctx=self.ctx)
            block.hybridize(static_alloc=True, static_shape=True)
            self.terms.append(TransferTerm(entry["loss"], block, weight, s_index, t_index, label,
                                           entry["start_epoch"], entry["end_epoch"],
                                           entry["pretrain_epochs"]))
        self.needs_index = any(term.needs_index for term in self.terms)
        self.ce = gluon.loss.SoftmaxCrossEntropyLoss()

    def _build_trainer(self):
        ocfg = self.cfg["optimizer"]
        self.steps_per_epoch = len(self.train_batches)
        steps = [epoch * self.steps_per_epoch for epoch in ocfg["lr_steps"]]
        warmup = int(round(ocfg["warmup_epochs"] * self.steps_per_epoch))
        scheduler = None
        if steps or warmup:
            # MultiFactorScheduler needs at least one step: put it past the end
            steps = steps or [(self.cfg["epochs"] + 1) * self.steps_per_epoch]
            scheduler = mx.lr_scheduler.MultiFactorScheduler(
                step=steps, factor=ocfg["lr_factor"], base_lr=ocfg["lr"],
                warmup_steps=warmup, warmup_begin_lr=0.0)
        params = gluon.ParameterDict()
        params.update(self.student.collect_params())
        for term in self.terms:
            params.update(term.block.collect_params())
        exempt_from_weight_decay(params, ocfg["no_wd"])
        opt_params = {"learning_rate": ocfg["lr"], "wd": ocfg["wd"]}
        if ocfg["name"] in ("nag", "sgd"):
            opt_params["momentum"] = ocfg["momentum"]
        if ocfg["clip_gradient"] is not None:
            opt_params["clip_gradient"] = ocfg["clip_gradient"]
        if scheduler is not None:
            opt_params["lr_scheduler"] = scheduler
        try:
            mx.optimizer.create(ocfg["name"], **opt_params)
        except Exception as err:
            raise NSTError("optimizer %r cannot be created (%s); use nag (the paper's) or sgd"
                           % (ocfg["name"], err)) from err
        update_on_kvstore = False if isinstance(self.kv, mx.kv.KVStore) else None
        self.trainer = gluon.Trainer(params, ocfg["name"], opt_params, kvstore=self.kv,
                                     update_on_kvstore=update_on_kvstore)

    # --------------------------------------------------------------- training
    def _forward_backward(self, epoch, data, label, index=None):
        """One step's forward and backward on every device; no host sync."""
        datas = gluon.utils.split_and_load(data, self.ctx, even_split=False)
        labels = gluon.utils.split_and_load(label, self.ctx, even_split=False)
        indices = gluon.utils.split_and_load(index, self.ctx, even_split=False) \
            if index is not None else [None] * len(datas)
        active = [term for term in self.terms if term.active(epoch)]
        ce_weight = 1.0 if epoch >= self.cfg["train"]["ce_start_epoch"] else 0.0
        teacher_outs = []
        if self.teacher is not None and active:
            for x in datas:  # outside autograd: no graph is recorded
                teacher_outs.append(self._teacher_forward(x))
        totals, components, logits_all = [], [], []
        with autograd.record():
            for i, (x, y) in enumerate(zip(datas, labels)):
                outs = _as_tuple(self.student(x))
                n = x.shape[0]
                ce = self.ce(outs[0], y).sum()
                comps = [ce]
                total = ce * ce_weight
                for term in self.terms:
                    if not term.active(epoch):
                        comps.append(mx.nd.zeros((1,), ctx=x.context))
                        continue
                    inputs = [_pick(outs, term.student_index),
                              _pick(teacher_outs[i], term.teacher_index)]
                    if term.needs_index:
                        inputs.append(indices[i])
                    value = term.block(*inputs).reshape((1,))
                    comps.append(value * n)
                    total = total + (term.weight * n) * value
                totals.append(total)
                components.append(mx.nd.concat(*[c.reshape((1,)) for c in comps], dim=0))
                logits_all.append(outs[0])
        autograd.backward(totals)
        return components, logits_all, labels

    def train_step(self, epoch, batch, ignore_stale_grad=False):
        """One optimisation step on ``batch`` = ``(data, label[, index])``; never waits.

        Forward and backward on every device (:meth:`_forward_backward`), the
        optimiser update, and the on-device (top-1, top-5) correct counts.
        Returns ``(components, correct)``, lists of NDArrays (one per device)
        that the step loop folds into the epoch's statistics every
        ``log_interval`` steps (:meth:`_fold_pending`, its only host
        synchronisation).  ``nst bench step`` times exactly this method plus
        that fold.  ``ignore_stale_grad``: a loss outside its activity window
        leaves its own parameters (AB's connector after the init stage)
        without gradient; skip them.
        """
        components, logits, labels = self._forward_backward(
            epoch, *[_as_ndarray(part) for part in batch])
        self.trainer.step(self.global_batch, ignore_stale_grad=ignore_stale_grad)
        correct = [self._correct_counts(o, y) for o, y in zip(logits, labels)]
        return components, correct

    def _fold_pending(self, pending, pending_correct, epoch, first_pending, sums):
        """Add the loss components and correct counts of the steps since the last fold
        to ``sums`` (raising on a non-finite loss): one device-to-host copy.  The
        components are added step by step in float64, so the sums do not depend on
        where the folds fell (a run resumed mid-epoch logs the same numbers)."""
        per_step = self._check_finite(pending, epoch, first_pending)
        correct = mx.nd.add_n(*[c.as_in_context(mx.cpu()) for c in pending_correct])
        for row in per_step:
            sums["components"] = [a + float(b) for a, b in zip(sums["components"], row)]
        sums["correct"] = [a + float(b) for a, b in zip(sums["correct"], correct.asnumpy())]

    def _correct_counts(self, logits, label):
        """(top-1 correct, top-5 correct) for one device's part, on the device."""
        label = label.astype("float32")
        top1 = (mx.nd.argmax(logits, axis=1) == label).sum()
        k = min(5, logits.shape[1])
        topk = mx.nd.topk(logits, axis=1, k=k)
        top5 = (topk == label.reshape((-1, 1))).sum()
        return mx.nd.concat(top1.reshape((1,)), top5.reshape((1,)), dim=0)

    def _synchronise_replicas(self):
        """Make every replica of the student identical at an epoch's end.

        Weights are identical already up to float rounding (every replica
        applies the same summed gradient); BatchNorm running statistics are not
        (each device normalises its own part of the batch).  Average both over
        the devices and, under ``dist_sync``, over the workers, so evaluation,
        checkpoints and every worker's exported student agree exactly.
        """
        params = [p for _, p in sorted(self.student._collect_params_with_prefix().items())]
        distributed = self._distributed()
        for index, param in enumerate(params):
            copies = param.list_data()
            if len(copies) == 1 and not distributed:
                continue
            mean = mx.nd.add_n(*[c.as_in_context(copies[0].context) for c in copies])
            scale = 1.0 / len(copies)
            if distributed:
                self._sum_over_workers(_SYNC_KEY_BASE + index, mean)
                scale /= self.num_workers
            mean *= scale
            # In place, not ``param.set_data``: set_data resets the trainer's
            # kvstore, which with update_on_kvstore (kvstore device/local on
            # several devices) throws away every parameter's NAG momentum.
            for copy in copies:
                copy[:] = mean.as_in_context(copy.context)

    def component_names(self):
        return ["ce"] + [term.label for term in self.terms]

    def _check_finite(self, pending, epoch, first_step):
        """Raise on the first non-finite loss among the steps since the last check;
        returns the (steps, components) loss values of those steps."""
        if not pending:
            return np.zeros((0, len(self.component_names())))
        values = mx.nd.stack(*[mx.nd.add_n(*[c.as_in_context(mx.cpu()) for c in step])
                               for step in pending]).asnumpy()
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            step = first_step + int(row)
            manifest = ckpt.manifest_path(self.out)
            kept = ("the last good checkpoint %s was kept" % manifest
                    if os.path.exists(manifest) else "no checkpoint had been written yet")
            raise NSTError("loss term %r became %s at step %d (epoch %d, batch %d); the run "
                           "stopped and %s. Lower the learning rate or the weight of that term"
                           % (self.component_names()[col], values[row, col], step, epoch + 1,
                              step - epoch * self.steps_per_epoch + 1, kept))
        return values

    def evaluate(self, batches=None, net=None, desc=None):
        """Top-1/top-5 error and mean cross-entropy of the student (or ``net``) on a
        data set, in inference mode (nothing is trained, BatchNorm's running
        statistics are used and left as they are); ``desc``: show a progress bar."""
        batches = batches or self.test_batches
        net = net or self.student
        top1 = mx.metric.Accuracy()
        top5 = mx.metric.TopKAccuracy(top_k=min(5, self.classes))
        ce = mx.metric.Loss()
        bar = _progress(total=_length(batches), initial=0, enabled=bool(desc) and self.progress,
                        desc=desc)
        for data, label in batches:
            faults.checkpoint("eval")
            datas = gluon.utils.split_and_load(data, self.ctx, even_split=False)
            labels = gluon.utils.split_and_load(label, self.ctx, even_split=False)
            logits = [_as_tuple(net(x))[0] for x in datas]
            top1.update(labels, logits)
            top5.update(labels, logits)
            ce.update(None, [self.ce(o, y) for o, y in zip(logits, labels)])
            bar.update(1)
        bar.close()
        return {"top1_err": 100.0 * (1 - top1.get()[1]),
                "top5_err": 100.0 * (1 - top5.get()[1]),
                "ce": ce.get()[1], "images": top1.num_inst}

    def check_teacher(self):
        """Evaluate the teacher once on the test split before it teaches (issue 14).

        Returns the record stored in the checkpoints, every epoch's log record
        (``teacher_test_top1_err`` / ``_top5_err``) and ``results.json``:
        top-1/top-5 error, the chance level (top-1 error ``100 (1 - 1/classes)``)
        and a warning when the teacher is no better than chance -- its number of
        correct test images is not significantly above ``images / classes``
        (one-sided binomial test, ``scipy.stats.binomtest``, p >= 0.01) -- or
        its top-1 error exceeds ``teacher.max_top1_err``.  None when the run has
        no teacher, no transfer loss or ``teacher.evaluate`` is false.
        """
        tcfg = self.cfg["teacher"]
        if self.teacher is None or not self.terms or not tcfg["evaluate"]:
            return None
        from scipy.stats import binomtest

        tic = time.time()
        result = self.evaluate(net=self.teacher, desc="teacher evaluation")
        images = int(result["images"])
        correct = int(round(images * (1 - result["top1_err"] / 100.0)))
        chance = 100.0 * (1 - 1.0 / self.classes)
        p_value = binomtest(correct, images, 1.0 / self.classes,
                            alternative="greater").pvalue if images else 1.0
        record = {"top1_err": result["top1_err"], "top5_err": result["top5_err"],
                  "ce": result["ce"], "images": images, "chance_top1_err": chance,
                  "p_value_vs_chance": float(p_value), "seconds": time.time() - tic,
                  "checkpoint": tcfg["checkpoint"], "warning": None}
        self.log("teacher %s on the test split (%d images): top-1 error %.2f%%, top-5 error "
                 "%.2f%% (chance: %.2f%% top-1)" % (tcfg["network"], images, result["top1_err"],
                                                    result["top5_err"], chance))
        problems = []
        if p_value >= 0.01:
            problems.append("it is no better than chance (top-1 error %.2f%%, chance %.2f%%, "
                            "binomial p = %.2g)" % (result["top1_err"], chance, p_value))
        if tcfg["max_top1_err"] is not None and result["top1_err"] > tcfg["max_top1_err"]:
            problems.append("its top-1 error %.2f%% is above teacher.max_top1_err = %g%%"
                            % (result["top1_err"], tcfg["max_top1_err"]))
        if problems:
            record["warning"] = ("the teacher %s (%s) looks wrong: %s. Distilling from it "
                                 "wastes the run: check teacher.checkpoint (trained for this "
                                 "data set and these %d classes?), teacher.network and "
                                 "teacher.params" % (tcfg["network"], tcfg["checkpoint"],
                                                     "; ".join(problems), self.classes))
            banner = "!" * 78
            self.log("%s\nWARNING: %s\n%s" % (banner, record["warning"], banner))
        return record

    def _pretrain_terms(self):
        """Pre-training stages of the losses that have one (``pretrain_epochs``).

        A loss with a stage of its own (Factor Transfer's paraphraser, trained
        as an auto-encoder of the teacher's feature) exposes
        ``pretrain_loss(teacher_feature)`` and ``pretrain_params()``; those
        parameters alone are trained on the teacher's features of the training
        set, with the config's optimiser, before the student's training starts.
        """
        for term in self.terms:
            if term.pretrain_epochs <= 0:
                continue
            block = term.block
            if not hasattr(block, "pretrain_loss"):
                raise NSTError("transfer loss %r has no pre-training stage; remove its "
                               "pretrain_epochs" % term.name)
            if self.num_workers > 1:
                raise NSTError("pre-training stages (pretrain_epochs) are not supported under "
                               "dist_sync; pre-train on one machine")
            ocfg = self.cfg["optimizer"]
            opt_params = {"learning_rate": ocfg["lr"], "wd": ocfg["wd"]}
            if ocfg["name"] in ("nag", "sgd"):
                opt_params["momentum"] = ocfg["momentum"]
            pretrain_params = block.pretrain_params()
            exempt_from_weight_decay(pretrain_params, ocfg["no_wd"], require_match=False)
            trainer = gluon.Trainer(pretrain_params, ocfg["name"], opt_params)
            for epoch in range(term.pretrain_epochs):
                total, seen = None, 0
                for batch in self.train_batches.iter_epoch(epoch):
                    datas = gluon.utils.split_and_load(_as_ndarray(batch[0]), self.ctx,
                                                       even_split=False)
                    losses = []
                    for x in datas:
                        feature = _pick(self._teacher_forward(x), term.teacher_index)
                        with autograd.record():
                            losses.append(block.pretrain_loss(feature).reshape((1,)) * x.shape[0])
                    autograd.backward(losses)
                    trainer.step(self.local_batch)
                    step_sum = mx.nd.add_n(*[l.as_in_context(mx.cpu()) for l in losses])
                    total = step_sum if total is None else total + step_sum
                    seen += batch[0].shape[0]
                value = float(total.asscalar()) / max(1, seen)
                if not np.isfinite(value):
                    raise NSTError("the pre-training loss of %r became %s in epoch %d; lower the "
                                   "learning rate" % (term.label, value, epoch + 1))
                self.log("pre-training %s: epoch %d/%d, loss %.4g"
                         % (term.label, epoch + 1, term.pretrain_epochs, value))

    def fit(self, resume=False):
        """Train to ``cfg['epochs']``; returns the results dict."""
        cfg = self.cfg
        ckpt.prepare_run_folder(self.out)
        if self.class_names and self.rank == 0:  # label i is line i, as nst pack's classes.txt
            write_text(os.path.join(self.out, "classes.txt"),
                       "".join("%s\n" % name for name in self.class_names))
        manifest = ckpt.read_manifest(self.out)
        if manifest is not None and not resume:
            raise NSTError("%s already holds a run (checkpoint at epoch %d); pass --resume to "
                           "continue it or choose another output folder with --out"
                           % (self.out, manifest["epoch"]))
        start_epoch, start_step, sums, history = epochs.resume_position(
            manifest, read_log(self.out))
        runtime = runtime_info()
        self.log("CPU runtime: %s, %d OpenMP operator threads (%s)"
                 % (runtime["engine"], runtime["omp_threads"], runtime["omp_threads_source"]))
        if manifest is not None:
            changed = ckpt.check_machine(manifest, self._machine_state(), self.out)
            if changed:
                self.log(changed)
            ckpt.load_checkpoint(self.out, manifest, self.student,
                                 [t.block for t in self.terms], self.trainer, self.ctx)
            self.log("resuming %s at epoch %d, step %d" % (self.out, start_epoch + 1, start_step))
            # evaluated once, before the first step; kept in the checkpoints (a run
            # started without it, or from an older checkpoint, evaluates now: inference
            # only, it changes nothing the run trains)
            self.teacher_eval = manifest.get("teacher_eval") or self.check_teacher()
        else:
            if resume:
                self.log("no checkpoint in %s; starting from scratch" % self.out)
            self.teacher_eval = self.check_teacher()
            self._pretrain_terms()
        self._clock.written()  # the wall-time interval starts with training
        history = epochs.run_epochs(self, start_epoch, start_step, sums, history, cfg["epochs"])
        if history is None:
            return None
        return self._finish(history)

    def _train_epoch(self, epoch, start_step, sums):
        cfg = self.cfg
        names = self.component_names()
        batches = self.train_batches.iter_epoch(epoch, start_step, with_index=True) \
            if self.needs_index else self.train_batches.iter_epoch(epoch, start_step)
        interval = max(1, cfg["train"]["log_interval"])
        sums = dict(sums) if sums else {"components": [0.0] * len(names), "correct": [0.0, 0.0],
                                          "images": 0, "seconds": 0.0}
        pending, pending_correct = [], []
        step_in_epoch = start_step
        global_step = epoch * self.steps_per_epoch + start_step
        first_pending = global_step
        bar = _progress(total=self.steps_per_epoch, initial=start_step, enabled=self.progress,
                        desc="epoch %d/%d" % (epoch + 1, cfg["epochs"]))
        tic = time.time()
        images = 0
        stale_ok = any(not t.active(epoch) and t.block.collect_params() for t in self.terms)
        for batch in batches:
            # random draws (CRD's negatives, dropout) as a function of the position,
            # so a run resumed mid-epoch repeats them exactly (train.rng)
            seed_step(cfg["seed"], epoch, step_in_epoch, self.rank)
            components, correct = self.train_step(epoch, batch, ignore_stale_grad=stale_ok)
            faults.checkpoint("step")
            pending.append(components)
            pending_correct.extend(correct)
            images += batch[0].shape[0]
            step_in_epoch += 1
            global_step += 1
            bar.update(1)
            # folds at fixed positions in the epoch (not counted from a resume point),
            # so a resumed run's statistics add up exactly as an uninterrupted run's
            checkpoint_now = step_in_epoch < self.steps_per_epoch and \
                self._clock.due_by_steps(global_step)
            if step_in_epoch % interval == 0 or step_in_epoch == self.steps_per_epoch \
                    or self._stop_signal or checkpoint_now:
                self._fold_pending(pending, pending_correct, epoch, first_pending, sums)
                sums["images"] += images
                sums["seconds"] += time.time() - tic
                tic, images = time.time(), 0
                pending, pending_correct, first_pending = [], [], global_step
                seen = max(1, sums["images"])
                bar.set_postfix({n: "%.3g" % (v / seen) for n, v in zip(names, sums["components"])})
                if self._stop_signal and step_in_epoch < self.steps_per_epoch:
                    bar.close()
                    self._save(epoch, step_in_epoch, sums)
                    self.log("stopped by signal %d at epoch %d, step %d; checkpoint written, "
                             "continue with --resume" % (self._stop_signal, epoch + 1,
                                                         step_in_epoch))
                    return None
                # mid-epoch checkpoint (train.checkpoint_every_steps / _minutes); the
                # wall-time trigger is looked at only here, where the statistics are folded
                if step_in_epoch < self.steps_per_epoch and \
                        (checkpoint_now or (self._clock.every_seconds
                                            and self._agree(self._clock.due_by_time()))):
                    self._save(epoch, step_in_epoch, sums)
        bar.close()
        self._synchronise_replicas()
        seen = max(1, sums["images"])
        record = {"epoch": epoch + 1, "lr": self.trainer.learning_rate,
                  "train_top1_err": 100.0 * (1 - sums["correct"][0] / seen),
                  "images_per_s": sums["images"] / max(sums["seconds"], 1e-9),
                  "train_images": sums["images"]}
        if self.classes > 10:
            record["train_top5_err"] = 100.0 * (1 - sums["correct"][1] / seen)
        ce_weight = 1.0 if epoch >= cfg["train"]["ce_start_epoch"] else 0.0
        weights = [ce_weight] + [t.weight if t.active(epoch) else 0.0 for t in self.terms]
        for name, value in zip(names, sums["components"]):
            record["loss_" + name] = value / seen
        record["loss_total"] = sum(w * v / seen for w, v in zip(weights, sums["components"]))
        teacher_eval = self.teacher_eval
        if teacher_eval:  # the teacher's own test error, measured before the first step
            record["teacher_test_top1_err"] = teacher_eval["top1_err"]
            record["teacher_test_top5_err"] = teacher_eval["top5_err"]
        if (epoch + 1) % max(1, cfg["train"]["eval_every"]) == 0 or epoch + 1 == cfg["epochs"]:
            test = self.evaluate()
            record["test_top1_err"] = test["top1_err"]
            if self.classes > 10:
                record["test_top5_err"] = test["top5_err"]
            record["test_ce"] = test["ce"]
        self.log(_format_record(record))
        return record

    # ---------------------------------------------------------------- outputs
    def _save(self, epoch, step_in_epoch, sums):
        state = {"epoch": epoch, "step_in_epoch": step_in_epoch,
                 "global_step": epoch * self.steps_per_epoch + step_in_epoch,
                 "epoch_sums": sums, "numpy_rng": ckpt.numpy_rng_state(),
                 "name": self.cfg["name"], "config": self.cfg,
                 "machine": self._machine_state(),
                 "teacher_eval": self.teacher_eval}
        tag = "step%09d" % state["global_step"]
        ckpt.write_checkpoint(self.out, tag, self.student, [t.block for t in self.terms],
                              self.trainer, state, keep=self.cfg["train"]["keep_checkpoints"])
        self._clock.written()

    def _machine_state(self):
        return ckpt.machine_state(len(self.ctx), self.ctx[0].device_type, self.num_workers,
                                  self.global_batch, self.steps_per_epoch)

    def _distributed(self):
        """True under ``dist_sync`` with several workers."""
        return isinstance(self.kv, mx.kv.KVStore) and self.num_workers > 1

    def _sum_over_workers(self, key, array):
        """Replace ``array`` by its sum over the ``dist_sync`` workers (kvstore ``key``,
        initialised on first use)."""
        if key not in self._sync_keys:
            self.kv.init(key, mx.nd.zeros_like(array))
            self._sync_keys.add(key)
        self.kv.push(key, array)
        self.kv.pull(key, out=array)

    def _agree(self, flag):
        """Under ``dist_sync``, True on every worker when it is True on any (the
        workers' clocks differ, their checkpoints must not); otherwise ``flag``."""
        if not self._distributed():
            return flag
        value = mx.nd.array([1.0 if flag else 0.0])
        self._sum_over_workers(_CLOCK_KEY, value)
        return bool(value.asscalar() > 0)

    def _finish(self, history):
        from nst.io import atomic_path
        from train.report.curves import plot_error_curves
        final_path = os.path.join(self.out, "student.params")
        with atomic_path(final_path) as tmp:
            self.student.save_parameters(tmp)
        last = history[-1]
        results = {"name": self.cfg["name"], "epochs": last["epoch"],
                   "test_top1_err": last.get("test_top1_err"),
                   "test_top5_err": last.get("test_top5_err"),
                   "train_top1_err": last.get("train_top1_err"),
                   "student": self.cfg["student"]["network"],
                   "teacher": (self.cfg["teacher"] or {}).get("network"),
                   "transfer": [{"loss": t.name, "weight": t.weight} for t in self.terms],
                   "student_params": final_path, "log": log_path(self.out),
                   "runtime": runtime_info(),
                   "teacher_eval": self.teacher_eval}
        write_json(os.path.join(self.out, "results.json"), results)
        plot_error_curves({self.cfg["name"]: history}, os.path.join(self.out, "curves.png"),
                          title=self.cfg["name"])
        return results


def _shape_of(shapes):
    """Per-sample shape(s) as tuples: one tuple, or a list of tuples for a list input."""
    return [tuple(s) for s in shapes] if isinstance(shapes, list) else tuple(shapes)


def _as_ndarray(array):
    return array if isinstance(array, mx.nd.NDArray) else mx.nd.array(array)


def _length(batches):
    try:
        return len(batches)
    except TypeError:
        return None


def _format_record(record):
    parts = ["epoch %d" % record["epoch"]]
    for key in ("train_top1_err", "test_top1_err", "test_top5_err"):
        if key in record:
            parts.append("%s %.2f%%" % (key, record[key]))
    parts.append("loss %.4g" % record["loss_total"])
    parts.append("%.0f img/s" % record["images_per_s"])
    return ", ".join(parts)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, values):
        pass

    def close(self):
        pass


def _progress(total, initial, enabled, desc):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)
