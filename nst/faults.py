"""Fault injection for the reliability tests: die at a chosen point, as SIGKILL would.

Inactive unless the environment variable ``NST_FAULT`` is set, e.g.
``NST_FAULT=checkpoint-write@2`` kills the process the second time it is about
to publish a checkpoint file, and ``NST_FAULT=step@5,eval@1`` at whichever
comes first.  Points: ``step`` (after a training step's update), ``eval``
(inside an evaluation pass), ``checkpoint-write`` (a checkpoint file fully
written to its temporary name, not yet renamed), ``log-write`` (likewise for
the epoch log).  The tests use it to prove that a run killed at any of these
instants resumes without loss; users never need it.
"""

import os
import signal

_counts = {}


def _plan():
    spec = os.environ.get("NST_FAULT", "")
    plan = {}
    for item in spec.split(","):
        if "@" in item:
            point, _, count = item.strip().partition("@")
            try:
                plan[point] = int(count)
            except ValueError:
                continue
    return plan


def checkpoint(point):
    """Die here (SIGKILL to self) when ``NST_FAULT`` asks for this point's n-th visit."""
    if "NST_FAULT" not in os.environ:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _plan().get(point) == _counts[point]:
        os.kill(os.getpid(), signal.SIGKILL)
