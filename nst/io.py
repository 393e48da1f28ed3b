"""Atomic file writes: a reader never sees a half-written file.

Everything that must survive a crash (checkpoints, logs, results) is written to
a temporary file in the destination folder, flushed and fsync'ed, then renamed
over the destination with :func:`os.replace`, which is atomic on POSIX.
"""

import contextlib
import json
import os
import tempfile

from .errors import NSTError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    Use it with writers that want a file name (``mx.nd.save``,
    ``block.save_parameters``, ``fig.savefig``).  On an exception the temporary
    file is removed and ``path`` is left as it was.
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
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise NSTError("could not write %s (%s); the previous version, if any, is intact. "
                       "Free some disk space or choose another output folder"
                       % (path, err.strerror or err)) from err
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_text(path, text):
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)


def write_json(path, obj):
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    # numpy scalars and arrays
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError("not JSON serialisable: %r" % (value,))
