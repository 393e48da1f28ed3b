"""Fault injection for the reliability tests: die at a chosen point, as SIGKILL would.

Inactive unless the environment variable ``NST_FAULT`` is set, e.g.
``NST_FAULT=checkpoint-write@2`` kills the process the second time it is about
to publish a checkpoint file, and ``NST_FAULT=step@5,eval@1`` at whichever
comes first.  Points: ``step`` (after a training step's update), ``eval``
(inside an evaluation pass), ``checkpoint-write`` (a checkpoint file fully
written to its temporary name, not yet renamed), ``log-write`` (likewise for
the epoch log).  The tests use it to prove that a run killed at any of these
instants resumes without loss; users never need it.

An action may follow the count: ``step@8:term`` sends SIGTERM to the process
instead (as ``kill`` would, but exactly there: the run saves and stops), and
``step@3:stop`` sends SIGSTOP (the process freezes at that point; a test
waits for it with ``os.waitpid(pid, os.WUNTRACED)`` instead of sleeping, then
continues or kills it).
"""

import os
import signal

_counts = {}


_ACTIONS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "stop": signal.SIGSTOP}


def _plan():
    """``{point: (count, signal)}`` from ``NST_FAULT``."""
    spec = os.environ.get("NST_FAULT", "")
    plan = {}
    for item in spec.split(","):
        if "@" in item:
            point, _, rest = item.strip().partition("@")
            count, _, action = rest.partition(":")
            try:
                plan[point] = (int(count), _ACTIONS[action or "kill"])
            except (ValueError, KeyError):
                continue
    return plan


def checkpoint(point):
    """Die here (SIGKILL to self) when ``NST_FAULT`` asks for this point's n-th visit
    (or send the signal its action names)."""
    if "NST_FAULT" not in os.environ:
        return
    _counts[point] = _counts.get(point, 0) + 1
    count, sig = _plan().get(point, (None, None))
    if count == _counts[point]:
        os.kill(os.getpid(), sig)
