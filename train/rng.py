"""Random-number generators as a pure function of the position in training.

MXNet's generator state cannot be read back, so it cannot be stored in a
checkpoint.  Instead, before every training step the trainers call
:func:`seed_step`, which seeds MXNet's generators (every device) and NumPy's
global generator from ``(seed, rank, epoch, step)``.  Whatever a step draws --
CRD's negatives, dropout masks, a custom loss's noise -- then depends only on
where the step is, so a run resumed mid-epoch draws exactly what the
uninterrupted run drew at the same step (bitwise, under the NaiveEngine).

The two seeds come from :class:`numpy.random.SeedSequence` of the four
integers, so neighbouring steps, epochs, workers and seeds get unrelated
streams.  Cost: about 1.5 ms per step on this machine's CPU
(``mx.random.seed`` re-seeds every device's generators).
"""

import mxnet as mx
import numpy as np


def step_seeds(seed, epoch, step, rank=0):
    """``(mxnet_seed, numpy_seed)`` for global step position ``(epoch, step)`` of worker ``rank``."""
    words = np.random.SeedSequence([int(seed), int(rank), int(epoch), int(step)]) \
        .generate_state(2, dtype=np.uint32)
    return int(words[0] & 0x7FFFFFFF), int(words[1])


def seed_step(seed, epoch, step, rank=0):
    """Seed MXNet (all devices) and NumPy's global generator for one training step."""
    mx_seed, np_seed = step_seeds(seed, epoch, step, rank)
    mx.random.seed(mx_seed)
    np.random.seed(np_seed)
