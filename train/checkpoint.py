"""Checkpoints that survive a crash at any instant.

A checkpoint is a set of files in ``<out>/checkpoints/`` plus one manifest,
``<out>/checkpoint.json``, that names them.  Every file is written atomically
(temporary file, fsync, rename, see :mod:`nst.io`) and the manifest is written
last, so the manifest always points at a complete checkpoint: a run killed while
writing leaves the previous checkpoint as the latest one.

What a checkpoint holds: the student's parameters, the parameters of the
transfer losses that learn (FitNet's regressor ...), the optimiser state
(momentum buffers, update counts and the LR scheduler's position, through
``gluon.Trainer.save_states``), the position in training (epoch and step within
the epoch), the running sums of the epoch's metrics and the RNG state.
"""

import os

import numpy as np

from nst.errors import NSTError
from nst.io import atomic_path, read_json, remove_stale_temporaries, write_json

MANIFEST = "checkpoint.json"
FOLDER = "checkpoints"


def manifest_path(out_dir):
    return os.path.join(out_dir, MANIFEST)


def read_manifest(out_dir):
    """The latest checkpoint's manifest, or None when the run has none."""
    path = manifest_path(out_dir)
    if not os.path.exists(path):
        return None
    manifest = read_json(path, "checkpoint manifest", "delete it to start over or restore "
                         "it from a backup")
    for key in ("epoch", "step_in_epoch", "global_step", "files"):
        if key not in manifest:
            raise NSTError("checkpoint manifest %s lacks %r; delete it to start over" % (path, key))
    for rel in manifest["files"].values():
        if rel and not os.path.exists(os.path.join(out_dir, rel)):
            raise NSTError("checkpoint %s names %s, which is missing; restore it or delete "
                           "the manifest to start over" % (path, rel))
    return manifest


def write_checkpoint(out_dir, tag, student, transfer_blocks, trainer, state, keep=2):
    """Write one checkpoint; ``state`` is a JSON-able dict (epoch, step, metrics...)."""
    folder = os.path.join(out_dir, FOLDER)
    files = {}
    student_rel = os.path.join(FOLDER, "%s-student.params" % tag)
    with atomic_path(os.path.join(out_dir, student_rel), "checkpoint-write") as tmp:
        student.save_parameters(tmp)
    files["student"] = student_rel
    for index, block in enumerate(transfer_blocks):
        if not block.collect_params():
            continue
        rel = os.path.join(FOLDER, "%s-transfer%d.params" % (tag, index))
        with atomic_path(os.path.join(out_dir, rel), "checkpoint-write") as tmp:
            block.save_parameters(tmp)
        files["transfer%d" % index] = rel
    states_rel = os.path.join(FOLDER, "%s-trainer.states" % tag)
    with atomic_path(os.path.join(out_dir, states_rel), "checkpoint-write") as tmp:
        trainer.save_states(tmp)
    files["trainer"] = states_rel
    manifest = dict(state, files=files, tag=tag)
    write_json(manifest_path(out_dir), manifest, "checkpoint-write")
    _prune(folder, keep_tags=_recent_tags(folder, tag, keep))
    return manifest


def load_checkpoint(out_dir, manifest, student, transfer_blocks, trainer, ctx):
    """Load the files a manifest names into the student, losses and trainer."""
    files = manifest["files"]
    try:
        student.load_parameters(os.path.join(out_dir, files["student"]), ctx=ctx)
        for index, block in enumerate(transfer_blocks):
            key = "transfer%d" % index
            if key in files:
                block.load_parameters(os.path.join(out_dir, files[key]), ctx=ctx)
            elif block.collect_params():
                raise NSTError("checkpoint has no parameters for transfer loss %d; the "
                               "config's transfer losses changed since it was written" % index)
        trainer.load_states(os.path.join(out_dir, files["trainer"]))
    except NSTError:
        raise
    except Exception as err:  # MXNet raises AssertionError/MXNetError/ValueError
        raise NSTError("cannot resume from %s: %s. The config must be the one the run "
                       "started with (same networks and losses)"
                       % (manifest_path(out_dir), str(err).splitlines()[0])) from err


class CheckpointClock:
    """When to write a mid-epoch checkpoint: every ``every_steps`` optimiser steps
    (counted from the start of training, so a resumed run checkpoints at the same
    steps as an uninterrupted one) and/or every ``every_minutes`` of wall time
    since the last checkpoint (``train.checkpoint_every_steps`` /
    ``train.checkpoint_every_minutes``; 0 or None switches either off -- in a
    config a null means the key's default, so 0 is how a config switches the
    clock off).  The epoch end always writes one (:mod:`train.epochs`)."""

    def __init__(self, every_steps=None, every_minutes=None, clock=None):
        import time

        for name, value in (("checkpoint_every_steps", every_steps),
                            ("checkpoint_every_minutes", every_minutes)):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise NSTError("train.%s must be a positive number, or 0 to switch it off, "
                               "got %r" % (name, value))
        self.every_steps = int(every_steps) if every_steps else None
        self.every_seconds = 60.0 * float(every_minutes) if every_minutes else None
        self.clock = clock or time.monotonic
        self.last = self.clock()

    def due_by_steps(self, global_step):
        """True when ``global_step`` (steps done in all) is a multiple of ``every_steps``."""
        return bool(self.every_steps) and global_step % self.every_steps == 0

    def due_by_time(self):
        """True when ``every_minutes`` have passed since the last checkpoint."""
        return bool(self.every_seconds) and self.clock() - self.last >= self.every_seconds

    def written(self):
        """Restart the wall-time interval (after any checkpoint, mid-epoch or epoch end)."""
        self.last = self.clock()


def numpy_rng_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_numpy_rng_state(state):
    if state:
        np.random.set_state((state[0], np.array(state[1], dtype=np.uint32), state[2],
                             state[3], state[4]))


def _recent_tags(folder, newest, keep):
    tags = sorted({name.split("-")[0] for name in os.listdir(folder) if not name.startswith(".")})
    tags = [t for t in tags if t <= newest]
    return set(tags[-max(1, keep):]) | {newest}


def _prune(folder, keep_tags):
    for name in os.listdir(folder):
        if name.startswith("."):
            continue
        if name.split("-")[0] not in keep_tags:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def prepare_run_folder(out_dir):
    """Create the run folder (clear error if impossible) and remove the temporary
    files a run killed while writing left behind."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise NSTError("cannot create the run folder %s (%s); choose a writable output "
                       "folder with --out" % (out_dir, err.strerror or err)) from err
    if not os.access(out_dir, os.W_OK):
        raise NSTError("the run folder %s is not writable; choose another with --out" % out_dir)
    for folder in (out_dir, os.path.join(out_dir, FOLDER)):
        remove_stale_temporaries(folder)


def machine_state(devices, device_type, num_workers, global_batch, steps_per_epoch):
    """What a checkpoint records about the machine it was written on (see
    :func:`check_machine`)."""
    return {"devices": int(devices), "device_type": device_type,
            "num_workers": int(num_workers), "global_batch": int(global_batch),
            "steps_per_epoch": int(steps_per_epoch)}


def check_machine(manifest, current, out_dir):
    """Compare the machine a checkpoint was written on with this run's ``current``
    :func:`machine_state`; returns a log line, or raises one clear error.

    The step position and the learning-rate schedule (in optimiser updates) carry
    over unchanged only if every update still sees the same global batch and an
    epoch still has the same number of steps.  A different number of devices
    (``--gpus``/``--cpus``) with the same global batch only splits each batch
    differently: the run continues and the log says so.  A different global
    batch, steps per epoch or number of ``dist_sync`` workers (each worker's data
    shard, its position in it and its own checkpoint folder depend on the worker
    count) stops with what changed and what to do.  Checkpoints written before
    this was recorded are not checked.
    """
    before = manifest.get("machine")
    if not before:
        return None
    path = manifest_path(out_dir)
    if before["global_batch"] != current["global_batch"]:
        raise NSTError("cannot resume %s: it was trained with a global batch of %d images per "
                       "update, this run has %d, which changes every step's gradient and the "
                       "learning-rate schedule; resume with --set data.batch_size=%d (any number "
                       "of devices) or start a new run with --out"
                       % (path, before["global_batch"], current["global_batch"],
                          before["global_batch"]))
    if before["num_workers"] != current["num_workers"]:
        raise NSTError("cannot resume %s: it was trained by %d dist_sync worker(s), this run has "
                       "%d; each worker's data shard, its position in it and its checkpoint "
                       "depend on the worker count. Resume with %d worker(s) (their devices may "
                       "differ) or start a new run with --out"
                       % (path, before["num_workers"], current["num_workers"],
                          before["num_workers"]))
    if before["steps_per_epoch"] != current["steps_per_epoch"]:
        raise NSTError("cannot resume %s: an epoch had %d steps, now it has %d (the training "
                       "set or data.train_limit changed), so the step position and the "
                       "learning-rate schedule no longer match; resume with the original data "
                       "or start a new run with --out"
                       % (path, before["steps_per_epoch"], current["steps_per_epoch"]))
    if (before["devices"], before["device_type"]) != (current["devices"],
                                                      current["device_type"]):
        return ("resuming on %d %s device(s) per worker, the checkpoint was written on %d %s: "
                "the global batch (%d) and the steps per epoch (%d) are unchanged, so the "
                "schedule and the step position carry over; each device now takes %s images"
                % (current["devices"], current["device_type"], before["devices"],
                   before["device_type"], current["global_batch"], current["steps_per_epoch"],
                   _share(current)))
    return None


def _share(state):
    per = state["global_batch"] // state["num_workers"]
    low, extra = divmod(per, state["devices"])
    return str(low) if not extra else "%d-%d" % (low, low + 1)
