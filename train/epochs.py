"""The epoch loop both trainers share, where it restarts, and stopping on a signal.

:func:`run_epochs` drives a runner (the classification :class:`train.trainer.Distiller`
and the detection :class:`detection.train.DetectionTrainer`): per epoch it calls
``runner._train_epoch(epoch, step, sums)``, appends the epoch's record to the
history, writes the epoch log (:mod:`train.runlog`), then checkpoints with
``runner._save(epoch + 1, 0, None)``.  :func:`resume_position` says where a
resumed run starts (from its checkpoint manifest, :mod:`train.checkpoint`), and
:func:`stop_requests` turns SIGTERM / SIGINT into a request the loop honours
after the current step, so a stopped run checkpoints and exits cleanly.
"""

import contextlib
import signal

from nst.runtime import runtime_info
from train.checkpoint import set_numpy_rng_state
from train.runlog import write_log

__all__ = ["resume_position", "run_epochs", "stop_requests"]


@contextlib.contextmanager
def stop_requests(owner):
    """While active, SIGTERM and SIGINT set ``owner._stop_signal`` instead of
    killing the process, so the training loop can finish its step, write a
    checkpoint and return; the previous handlers are restored afterwards."""
    def handler(signum, _frame):
        owner._stop_signal = signum

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: signals stay with their owner
            pass
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)



def resume_position(manifest, history):
    """``(start_epoch, start_step, epoch_sums, history)`` to continue from ``manifest``;
    log records past the checkpoint are dropped, so every epoch is logged once."""
    if manifest is None:
        return 0, 0, None, []
    set_numpy_rng_state(manifest.get("numpy_rng"))
    start_epoch = manifest["epoch"]
    return (start_epoch, manifest["step_in_epoch"], manifest.get("epoch_sums"),
            [r for r in history if r["epoch"] <= start_epoch])


def run_epochs(runner, start_epoch, start_step, sums, history, epochs):
    """The epoch loop both trainers share: ``runner._train_epoch(epoch, step, sums)``
    returns an epoch's log record (None when a stop signal checkpointed mid-epoch);
    after each epoch the log is written, then ``runner._save(epoch + 1, 0, None)``.
    Returns the history, or None when stopped."""
    # fixed for the life of the process (MXNet reads it at start-up); every epoch's
    # record carries it, since a resumed run -- a new process -- may run on another machine
    runtime = runtime_info()
    with stop_requests(runner):
        for epoch in range(start_epoch, epochs):
            first = epoch == start_epoch
            record = runner._train_epoch(epoch, start_step if first else 0,
                                         sums if first else None)
            if record is None:  # stopped by a signal: the checkpoint is written
                return None
            record["engine"], record["omp_threads"] = runtime["engine"], runtime["omp_threads"]
            history.append(record)
            write_log(runner.out, history)
            runner._save(epoch + 1, 0, None)
    return history
