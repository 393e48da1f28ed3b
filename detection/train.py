"""Train and evaluate the Inception-BN Faster R-CNN on PASCAL VOC.

The training step is GluonCV's (``scripts/detection/faster_rcnn/
train_faster_rcnn.py`` and ``ForwardBackwardTask``): on every device, one
image (``train.images_per_device``) goes through the detector in training
mode, which samples 256 anchors for the RPN (targets computed by the data
workers) and 128 RoIs for the R-CNN head, and the loss is

    RPN:   sigmoid BCE (objectness)  + smooth-L1 (rho 1/9) of the anchor deltas
    R-CNN: softmax CE (21 classes)   + smooth-L1 (rho 1) of the class's box deltas

each normalised by the number of sampled anchors / RoIs; the gradients of
all devices are summed by the kvstore and ``trainer.step(images)`` averages
them.  SGD with momentum, weight decay and a step schedule (epochs, x0.1) at
``optimizer.lr`` itself: as in GluonCV the learning rate is not scaled by the
images per step (its published VOC run: 4 GPUs, batch 4, lr 0.001); the log
says how a run's batch and lr relate to that run (:func:`recipe_note`).  A
resumed run must keep the checkpoint's images per step (another device count
is fine at the same global batch); anything else is refused.  At test time
``model.post_nms`` caps the detections per image (:func:`cap_detections`).

Outputs in the run folder (``out``), mirroring the classification trainer:

- ``config.json``: the resolved config;
- ``log.json`` / ``log.csv``: one record per epoch (the four losses, images/s,
  learning rate, test mAP on evaluation epochs), rewritten atomically;
- ``checkpoint.json`` + ``checkpoints/``: the latest checkpoint
  (:mod:`train.checkpoint`: detector parameters, optimiser state, position,
  RNG state); ``--resume`` continues exactly from it, including mid-epoch
  after SIGINT/SIGTERM;
- ``detector.params``: the final detector (``net.load_parameters``);
- ``detections/detections.json`` (and the devkit files
  ``detections/comp4_det_test_<class>.txt``): the test detections in VOC
  coordinates, which ``nst voc-eval`` re-scores;
- ``results.json``: mAP and per-class AP (fractions, VOC07 11-point by default).
"""

import json
import os
import time
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from nst.errors import NSTError
from nst.io import atomic_path, write_json
from tools.voc_eval import VOC_CLASSES, write_detections_json, write_devkit_files
from train import checkpoint as ckpt
from train import epochs
from train.devices import create_kvstore
from train.rng import seed_step
from train.runlog import log_path, read_log, write_log

from .data import VOCDataset, test_loader, train_loader
from .model import build_detector

LOSS_NAMES = ("rpn_cls", "rpn_box", "rcnn_cls", "rcnn_box")


#: GluonCV's published VOC Faster R-CNN run (faster_rcnn_resnet50_v1b_voc, 78.3 mAP in its
#: zoo): ``train_faster_rcnn.py --gpus 0,1,2,3 --dataset voc``, i.e. batch 4, lr 0.001.
GLUONCV_PUBLISHED = {"images_per_step": 4, "lr": 0.001}


def recipe_note(lr, devices, images_per_device, steps_per_epoch):
    """The log line that says how this run's batch and lr relate to GluonCV's published run."""
    batch = devices * images_per_device
    line = ("detection recipe: %d device(s) x %d image(s) = %d image(s) per step, %d steps per "
            "epoch, lr %g (never scaled by the images per step)"
            % (devices, images_per_device, batch, steps_per_epoch, lr))
    ref = GLUONCV_PUBLISHED
    if batch == ref["images_per_step"] and lr == ref["lr"]:
        return line + "; this is GluonCV's published VOC run (batch 4 on 4 GPUs, lr 0.001)"
    return line + ("; GluonCV's published VOC run used batch %d, lr %g: at %d image(s) per "
                   "step this run takes %.3gx its steps per epoch at %s (the linear-scaling "
                   "rule would give lr %g)"
                   % (ref["images_per_step"], ref["lr"], batch, ref["images_per_step"] / batch,
                      "the same lr" if lr == ref["lr"] else "lr %g instead of %g" % (lr, ref["lr"]),
                      ref["lr"] * batch / ref["images_per_step"]))


def cap_detections(ids, scores, post_nms):
    """``ids`` with all but the ``post_nms`` highest-scoring valid detections set to -1.

    GluonCV 0.10's FasterRCNN takes a ``post_nms`` argument but never applies it; this is
    the cap it documents ("only return top post_nms detection results"), applied to one
    image's (N,) arrays after the per-class NMS.  Ties keep the earlier row.  ``post_nms
    <= 0`` keeps everything.
    """
    ids = np.array(ids, copy=True)
    if post_nms is None or post_nms <= 0:
        return ids
    valid = np.flatnonzero(ids >= 0)
    if len(valid) > post_nms:
        order = valid[np.argsort(-np.asarray(scores)[valid], kind="mergesort")]
        ids[order[post_nms:]] = -1
    return ids


def classes_of(cfg):
    return list(cfg["data"]["classes"] or VOC_CLASSES)


def split_and_load(batch, contexts):
    """GluonCV's split: element ``i`` of every field goes to device ``i``."""
    out = []
    for field in batch:
        if isinstance(field, (list, tuple)):
            out.append([x.as_in_context(c) for x, c in zip(field, contexts)])
        else:
            out.append([field.as_in_context(contexts[0])])
    return out


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, values):
        pass

    def close(self):
        pass


def progress_bar(total, enabled, desc, initial=0):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def test_dataset(cfg):
    d = cfg["data"]
    return VOCDataset(d["voc_root"], d["test_splits"], classes_of(cfg), skip_empty=False,
                      limit=d["test_limit"])


def evaluate(net, dataset, cfg, contexts, out_dir=None, progress=True, log=print):
    """Detect on ``dataset`` and score with GluonCV's ``VOC07MApMetric`` (or ``VOCMApMetric``).

    With ``out_dir``, the detections are written there as ``detections.json``
    (and the devkit files, if ``eval.devkit_files``) in VOC coordinates.
    Returns ``{"mAP", "ap": {class: ap or None}, "metric", "images", "detections"}``.
    """
    from gluoncv.nn.bbox import BBoxClipToImage
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric

    classes = classes_of(cfg)
    metric_name = cfg["eval"]["metric"]
    metric = (VOC07MApMetric if metric_name == "voc07" else VOCMApMetric)(
        iou_thresh=0.5, class_names=classes)
    clipper = BBoxClipToImage()
    if cfg["train"]["hybridize"]:
        net.hybridize()  # the inference graph differs from the training one
    dets = {c: {"image_ids": [], "scores": [], "boxes": []} for c in classes}
    bar = progress_bar(len(dataset), progress, "test")
    with warnings.catch_warnings():
        # GluonCV's box encoder is registered but unused at inference
        warnings.filterwarnings("ignore", message=".*is not used by any computation.*")
        for batch in test_loader(dataset, cfg, len(contexts)):
            batch = split_and_load(batch, contexts)
            outputs = []
            for x, _label, scale, index in zip(*batch):
                ids, scores, boxes = net(x)
                boxes = clipper(boxes, x) * float(scale.asnumpy().reshape(-1)[0])
                outputs.append((ids, scores, boxes, index))
            for ids, scores, boxes, index in outputs:
                idx = int(index.asnumpy().reshape(-1)[0])
                scores = scores.asnumpy().reshape(-1)
                ids = cap_detections(ids.asnumpy().reshape(-1), scores,
                                     cfg["model"]["post_nms"])
                boxes = boxes.asnumpy().reshape(-1, 4)
                label = dataset.label(idx)
                metric.update(boxes[None], ids[None], scores[None], label[None, :, :4],
                              label[None, :, 4], label[None, :, 5])
                image_id = dataset.image_id(idx)
                for k in np.flatnonzero(ids >= 0):
                    entry = dets[classes[int(ids[k])]]
                    entry["image_ids"].append(image_id)
                    entry["scores"].append(float(scores[k]))
                    entry["boxes"].append((boxes[k] + 1.0).tolist())  # VOC 1-based pixels
                bar.update(1)
    bar.close()
    names, values = metric.get()
    ap = {}
    for name, value in zip(names[:-1], values[:-1]):
        ap[name] = None if value is None or not np.isfinite(value) else float(value)
    mean = values[-1]
    result = {"mAP": None if not np.isfinite(mean) else float(mean), "ap": ap,
              "metric": metric_name, "images": len(dataset)}
    if out_dir is not None:
        path = os.path.join(out_dir, "detections.json")
        meta = {"image_sets": ["%s/%s" % tuple(s) for s in cfg["data"]["test_splits"]],
                "voc_root": cfg["data"]["voc_root"], "images": len(dataset)}
        write_detections_json(path, {c: {"image_ids": v["image_ids"],
                                         "scores": np.asarray(v["scores"]),
                                         "boxes": np.asarray(v["boxes"]).reshape(-1, 4)}
                                     for c, v in dets.items()}, classes, meta)
        if cfg["eval"]["devkit_files"]:
            write_devkit_files(out_dir, {c: {"image_ids": v["image_ids"],
                                             "scores": np.asarray(v["scores"]),
                                             "boxes": np.asarray(v["boxes"]).reshape(-1, 4)}
                                         for c, v in dets.items()}, classes)
        result["detections"] = path
    return result


def voc_eval_command(cfg, detections):
    """The ``nst voc-eval`` command that re-scores ``detections`` (single test split)."""
    splits = cfg["data"]["test_splits"]
    if len(splits) != 1 or cfg["data"]["test_limit"]:
        return None
    year, name = splits[0]
    folder = os.path.join(cfg["data"]["voc_root"], "VOC%s" % year if isinstance(year, int)
                          else str(year))
    return ("nst voc-eval --dets %s --annotations %s --imageset %s"
            % (detections, os.path.join(folder, "Annotations"),
               os.path.join(folder, "ImageSets", "Main", name + ".txt")))


class DetectionTrainer:
    """Train ``cfg``'s Faster R-CNN from the backbone checkpoint ``cfg['backbone']['checkpoint']``.

    Parameters
    ----------
    cfg : dict
        A validated detection config.
    contexts : list of mx.Context
        One image per device per step (``--gpus 0,...,7`` or ``--cpus N``).
    kvstore : str, optional
        ``device`` (default), ``nccl`` or ``local``.
    progress : bool
        tqdm progress bars.
    """

    def __init__(self, cfg, contexts, kvstore=None, progress=True, log=print):
        self.cfg = cfg
        self.ctx = list(contexts)
        self.progress = progress
        self.log = log
        self.kv, _rank, workers = create_kvstore(kvstore or cfg["train"]["kvstore"])
        if workers > 1:
            raise NSTError("detection training runs on the devices of one machine (--gpus "
                           "0,1,...,7); distributed kvstores are not supported here")
        self.out = cfg["out"]
        self._stop_signal = None
        self.classes = classes_of(cfg)
        mx.random.seed(cfg["seed"])
        np.random.seed(cfg["seed"])
        if not cfg["backbone"]["checkpoint"]:
            raise NSTError("no backbone checkpoint: pass --backbone runs/imagenet/<row>/"
                           "student.params (the classification student of the Table 4 row)")
        d = cfg["data"]
        self.train_set = VOCDataset(d["voc_root"], d["train_splits"], self.classes,
                                    skip_empty=True, limit=d["train_limit"])
        self.test_set = test_dataset(cfg)
        self.net = build_detector(cfg, self.classes, cfg["backbone"]["checkpoint"], self.ctx)
        self.images_per_step = cfg["train"]["images_per_device"] * len(self.ctx)
        self.loader, self.sampler = train_loader(self.net, self.train_set, cfg, len(self.ctx))
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self._build_trainer()
        self._build_losses()

    # ----------------------------------------------------------------- set-up
    def _build_trainer(self):
        o = self.cfg["optimizer"]
        base_lr = o["lr"]  # never scaled by the images per step (GluonCV's rule)
        steps = [e * self.steps_per_epoch for e in o["lr_steps"]]
        params = {"learning_rate": base_lr, "wd": o["wd"]}
        if o["name"] in ("sgd", "nag"):
            params["momentum"] = o["momentum"]
        if o["clip_gradient"]:
            params["clip_gradient"] = o["clip_gradient"]
        warmup = {}
        if o["warmup_steps"] > 0:
            warmup = {"warmup_steps": o["warmup_steps"],
                      "warmup_begin_lr": base_lr * o["warmup_factor"], "warmup_mode": "linear"}
        if steps:
            params["lr_scheduler"] = mx.lr_scheduler.MultiFactorScheduler(
                step=steps, factor=o["lr_factor"], base_lr=base_lr, **warmup)
        elif warmup:
            params["lr_scheduler"] = mx.lr_scheduler.FactorScheduler(
                step=10 ** 12, factor=1.0, base_lr=base_lr, **warmup)
        try:
            mx.optimizer.create(o["name"], **params)
        except Exception as err:
            raise NSTError("optimizer %r cannot be created (%s); use sgd (GluonCV's)"
                           % (o["name"], err)) from err
        update_on_kvstore = False if isinstance(self.kv, mx.kv.KVStore) else None
        self.trainer = gluon.Trainer(self.net.collect_train_params(), o["name"], params,
                                     kvstore=self.kv, update_on_kvstore=update_on_kvstore)
        self.base_lr = base_lr

    def _build_losses(self):
        loss = self.cfg["loss"]
        self.rpn_cls_loss = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
        self.rpn_box_loss = gluon.loss.HuberLoss(rho=loss["rpn_smoothl1_rho"])
        self.rcnn_cls_loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self.rcnn_box_loss = gluon.loss.HuberLoss(rho=loss["rcnn_smoothl1_rho"])

    # --------------------------------------------------------------- training
    def forward_backward(self, batch):
        """One step's forward and backward on every device (GluonCV's ForwardBackwardTask).

        Returns one NDArray per device: the sums over its images of the four losses.
        """
        components = []
        with autograd.record():
            totals = []
            for data, label, rpn_cls_t, rpn_box_t, rpn_box_m in zip(*batch):
                gt_label = label[:, :, 4:5]
                gt_box = label[:, :, :4]
                (cls_pred, box_pred, _, _, _, rpn_score, rpn_box, _, cls_targets, box_targets,
                 box_masks, _) = self.net(data, gt_box, gt_label)
                rpn_score = rpn_score.squeeze(axis=-1)
                num_rpn = (rpn_cls_t >= 0).sum()
                rpn_loss1 = self.rpn_cls_loss(rpn_score, rpn_cls_t, rpn_cls_t >= 0) \
                    * rpn_cls_t.size / num_rpn
                rpn_loss2 = self.rpn_box_loss(rpn_box, rpn_box_t, rpn_box_m) \
                    * rpn_box.size / num_rpn
                num_rcnn = (cls_targets >= 0).sum()
                rcnn_loss1 = self.rcnn_cls_loss(cls_pred, cls_targets,
                                                cls_targets.expand_dims(-1) >= 0) \
                    * cls_targets.size / num_rcnn
                rcnn_loss2 = self.rcnn_box_loss(box_pred, box_targets, box_masks) \
                    * box_pred.size / num_rcnn
                parts = [rpn_loss1.sum(), rpn_loss2.sum(), rcnn_loss1.sum(), rcnn_loss2.sum()]
                totals.append(mx.nd.add_n(*parts))
                components.append(mx.nd.concat(*[p.reshape((1,)) for p in parts], dim=0))
        autograd.backward(totals)
        return components

    def _check_finite(self, pending, epoch, first_step):
        values = mx.nd.stack(*[mx.nd.add_n(*[c.as_in_context(mx.cpu()) for c in step])
                               for step in pending]).asnumpy()
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            step = first_step + int(row)
            raise NSTError("detection loss %r became %s at step %d (epoch %d); the run stopped "
                           "%s. Lower optimizer.lr or check the backbone checkpoint"
                           % (LOSS_NAMES[col], values[row, col], step, epoch + 1,
                              "and the last good checkpoint %s was kept"
                              % ckpt.manifest_path(self.out)
                              if os.path.isfile(ckpt.manifest_path(self.out))
                              else "before its first checkpoint"))
        return values.sum(axis=0)

    def fit(self, resume=False):
        """Train to ``cfg['epochs']`` and test; returns the results dict (None if stopped)."""
        cfg = self.cfg
        ckpt.prepare_run_folder(self.out)
        manifest = ckpt.read_manifest(self.out)
        if manifest is not None and not resume:
            raise NSTError("%s already holds a detection run (checkpoint at epoch %d); pass "
                           "--resume to continue it or choose another folder with --out"
                           % (self.out, manifest["epoch"]))
        start_epoch, start_step, sums, history = epochs.resume_position(
            manifest, read_log(self.out))
        if manifest is not None:
            results_path = os.path.join(self.out, "results.json")
            if start_epoch >= cfg["epochs"] and os.path.isfile(results_path):
                self.log("%s: already finished" % self.out)
                with open(results_path, "r", encoding="utf-8") as handle:
                    return json.load(handle)
            self._check_resume_batch(manifest)
            ckpt.load_checkpoint(self.out, manifest, self.net, [], self.trainer, self.ctx)
            self.log("resuming %s at epoch %d, step %d" % (self.out, start_epoch + 1, start_step))
        else:
            if resume:
                self.log("no checkpoint in %s; starting from scratch" % self.out)
            write_json(os.path.join(self.out, "config.json"), cfg)
        self.log(recipe_note(self.base_lr, len(self.ctx), cfg["train"]["images_per_device"],
                             self.steps_per_epoch))
        history = epochs.run_epochs(self, start_epoch, start_step, sums, history, cfg["epochs"])
        if history is None:
            return None
        return self._finish(history)

    def _check_resume_batch(self, manifest):
        """Continue only on the checkpoint's global batch and steps per epoch.

        The step position and the lr schedule (MultiFactorScheduler steps at
        ``epoch * steps_per_epoch``) count steps of ``images_per_step`` images,
        so another device count continues correctly only at the same global
        batch (devices x ``train.images_per_device``); anything else is one
        NSTError naming what changed and what to do.
        """
        path = ckpt.manifest_path(self.out)
        devices, per_device = len(self.ctx), self.cfg["train"]["images_per_device"]
        if "images_per_step" not in manifest:
            self.log("warning: checkpoint %s does not record the images per step it was trained "
                     "with (written before that was recorded); assuming this run's %d (%d "
                     "device(s) x %d)" % (path, self.images_per_step, devices, per_device))
            return
        saved = (manifest["devices"], manifest["images_per_device"], manifest["images_per_step"],
                 manifest["steps_per_epoch"])
        where = "epoch %d, step %d" % (manifest["epoch"] + 1, manifest["step_in_epoch"])
        if saved[2] != self.images_per_step:
            hint = ("--set train.images_per_device=%d" % (saved[2] // devices)
                    if saved[2] % devices == 0 else "a device count that divides %d" % saved[2])
            raise NSTError("cannot resume %s: it was trained at %d images per step (%d device(s) "
                           "x %d image(s), %d steps per epoch, now at %s), this run has %d "
                           "device(s) x %d image(s) = %d; its step position and lr schedule "
                           "count steps of %d images. Resume with %d device(s) (--gpus/--cpus) "
                           "or keep %d images per step (%s), or start a new run with --out"
                           % (path, saved[2], saved[0], saved[1], saved[3], where, devices,
                              per_device, self.images_per_step, saved[2], saved[0], saved[2],
                              hint))
        if saved[3] != self.steps_per_epoch:
            raise NSTError("cannot resume %s: it was trained on %d images per epoch (%d steps "
                           "of %d), this run's training set gives %d steps; the data "
                           "(data.train_splits, data.train_limit, data.voc_root) must be the "
                           "run's own, or start a new run with --out"
                           % (path, manifest.get("train_images", saved[3] * saved[2]), saved[3],
                              saved[2], self.steps_per_epoch))
        if saved[0] != devices:
            self.log("resuming on %d device(s) x %d image(s) instead of %d x %d: the same %d "
                     "images per step, so the step position (%s) and the lr schedule carry "
                     "over unchanged" % (devices, per_device, saved[0], saved[1],
                                         self.images_per_step, where))

    def _train_epoch(self, epoch, start_step, sums):
        cfg = self.cfg
        self.sampler.set_epoch(epoch, start_step)
        if cfg["train"]["hybridize"]:
            self.net.hybridize()
        interval = max(1, cfg["train"]["log_interval"])
        sums = dict(sums) if sums else {"losses": [0.0] * len(LOSS_NAMES), "images": 0,
                                        "seconds": 0.0}
        step_in_epoch = start_step
        global_step = epoch * self.steps_per_epoch + start_step
        pending, first_pending, images = [], global_step, 0
        bar = progress_bar(self.steps_per_epoch, self.progress,
                           "epoch %d/%d" % (epoch + 1, cfg["epochs"]), initial=start_step)
        tic = time.time()
        for batch in self.loader:
            batch = split_and_load(batch, self.ctx)
            # the RoI sampler's draws depend only on the position: exact mid-epoch resume
            seed_step(cfg["seed"], epoch, step_in_epoch)
            pending.append(self.forward_backward(batch))
            self.trainer.step(self.images_per_step)
            images += self.images_per_step
            step_in_epoch += 1
            global_step += 1
            bar.update(1)
            if len(pending) >= interval or step_in_epoch == self.steps_per_epoch \
                    or self._stop_signal:
                totals = self._check_finite(pending, epoch, first_pending)
                sums["losses"] = [a + float(b) for a, b in zip(sums["losses"], totals)]
                sums["images"] += images
                sums["seconds"] += time.time() - tic
                tic, images, pending, first_pending = time.time(), 0, [], global_step
                seen = max(1, sums["images"])
                bar.set_postfix({n: "%.3f" % (v / seen) for n, v in zip(LOSS_NAMES,
                                                                        sums["losses"])})
                if self._stop_signal and step_in_epoch < self.steps_per_epoch:
                    bar.close()
                    self._save(epoch, step_in_epoch, sums)
                    self.log("stopped by signal %d at epoch %d, step %d; checkpoint written, "
                             "continue with --resume" % (self._stop_signal, epoch + 1,
                                                         step_in_epoch))
                    return None
        bar.close()
        seen = max(1, sums["images"])
        record = {"epoch": epoch + 1, "lr": self.trainer.learning_rate,
                  "images_per_s": sums["images"] / max(sums["seconds"], 1e-9),
                  "train_images": sums["images"]}
        for name, value in zip(LOSS_NAMES, sums["losses"]):
            record["loss_" + name] = value / seen
        record["loss_total"] = sum(sums["losses"]) / seen
        every = max(1, cfg["train"]["eval_every"])
        if (epoch + 1) % every == 0 and epoch + 1 < cfg["epochs"]:
            result = evaluate(self.net, self.test_set, cfg, self.ctx, None, self.progress)
            record["test_mAP"] = result["mAP"]
        self.log(_format_record(record))
        return record

    # ---------------------------------------------------------------- outputs
    def _save(self, epoch, step_in_epoch, sums):
        state = {"epoch": epoch, "step_in_epoch": step_in_epoch,
                 "global_step": epoch * self.steps_per_epoch + step_in_epoch,
                 "epoch_sums": sums, "numpy_rng": ckpt.numpy_rng_state(),
                 "name": self.cfg["name"], "config": self.cfg,
                 "devices": len(self.ctx),
                 "images_per_device": self.cfg["train"]["images_per_device"],
                 "images_per_step": self.images_per_step,
                 "steps_per_epoch": self.steps_per_epoch, "train_images": len(self.train_set)}
        tag = "step%09d" % state["global_step"]
        ckpt.write_checkpoint(self.out, tag, self.net, [], self.trainer, state,
                              keep=self.cfg["train"]["keep_checkpoints"])

    def _finish(self, history):
        cfg = self.cfg
        params_path = os.path.join(self.out, "detector.params")
        with atomic_path(params_path) as tmp:
            self.net.save_parameters(tmp)
        result = evaluate(self.net, self.test_set, cfg, self.ctx,
                          os.path.join(self.out, "detections"), self.progress)
        if history:
            history[-1]["test_mAP"] = result["mAP"]
            write_log(self.out, history)
        results = {"name": cfg["name"], "epochs": cfg["epochs"],
                   "backbone": cfg["backbone"]["checkpoint"], "metric": result["metric"],
                   "mAP": result["mAP"], "ap": result["ap"], "test_images": result["images"],
                   "detector_params": params_path, "detections": result["detections"],
                   "log": log_path(self.out),
                   "voc_eval": voc_eval_command(cfg, result["detections"])}
        write_json(os.path.join(self.out, "results.json"), results)
        return results


def _format_record(record):
    parts = ["epoch %d" % record["epoch"], "loss %.4g" % record["loss_total"]]
    parts += ["%s %.3g" % (n, record["loss_" + n]) for n in LOSS_NAMES]
    if record.get("test_mAP") is not None:
        parts.append("test mAP %.2f%%" % (100 * record["test_mAP"]))
    parts.append("%.1f img/s" % record["images_per_s"])
    return ", ".join(parts)


def load_detector(cfg, params_path, contexts):
    """The detector of ``cfg`` with the parameters of ``params_path`` (``detector.params``)."""
    if not os.path.isfile(params_path):
        raise NSTError("detector parameters %s do not exist; train first with `nst detect "
                       "train` (it writes <out>/detector.params)" % params_path)
    net = build_detector(cfg, classes_of(cfg), None, contexts)
    try:
        net.load_parameters(params_path, ctx=contexts)
    except Exception as err:
        raise NSTError("detector parameters %s do not match the config (%s); pass the run's "
                       "own config (--run DIR reads <DIR>/config.json)"
                       % (params_path, str(err).splitlines()[0][:300])) from err
    return net
