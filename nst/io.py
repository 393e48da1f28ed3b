"""Atomic file writes: a reader never sees a half-written file.

Everything that must survive a crash (checkpoints, logs, results) is written to
a temporary file in the destination folder, flushed and fsync'ed, then renamed
over the destination with :func:`os.replace`, which is atomic on POSIX.
"""

import contextlib
import json
import os
import tempfile

from . import faults
from .errors import NSTError


@contextlib.contextmanager
def atomic_path(path, fault_point=None):
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    Use it with writers that want a file name (``mx.nd.save``,
    ``block.save_parameters``, ``fig.savefig``).  On an exception the temporary
    file is removed and ``path`` is left as it was.  ``fault_point`` names the
    instant for :mod:`nst.faults` (tests only).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1] or ".tmp",
                                   dir=folder)
        os.close(fd)
    except OSError as err:
        raise NSTError("cannot write to %s (%s): choose a writable output folder"
                       % (folder, err.strerror or err)) from err
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; publish like open() would
        if fault_point:
            faults.checkpoint(fault_point)
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise NSTError("could not write %s (%s); the previous version, if any, is intact. "
                       "Free some disk space or choose another output folder"
                       % (path, err.strerror or err)) from err
    except BaseException:
        _remove_quietly(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_text(path, text, fault_point=None):
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path, fault_point) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)


def write_json(path, obj, fault_point=None):
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n",
               fault_point)


def remove_stale_temporaries(folder):
    """Delete ``.tmp-*`` files a killed writer left in ``folder`` (never a published file)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(".tmp-"):
            _remove_quietly(os.path.join(folder, name))


def _json_default(value):
    # numpy scalars and arrays
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError("not JSON serialisable: %r" % (value,))


def read_json(path, what, fix):
    """Parse a JSON file; an unreadable one is an NSTError naming ``what`` and the ``fix``."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise NSTError("%s %s is unreadable (%s); %s" % (what, path, err, fix)) from err
