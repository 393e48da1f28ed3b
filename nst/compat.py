"""NumPy >= 1.24 compatibility for MXNet 1.9.1 (Python 3.12 support).

NumPy 1.20 deprecated and NumPy 1.24 removed the aliases ``np.bool``,
``np.int``, ``np.float``, ``np.object``, ``np.str`` and ``np.complex`` of the
Python builtins.  MXNet 1.9.1 still uses them: importing ``mxnet`` against
NumPy 1.24+ fails with ``AttributeError: module 'numpy' has no attribute
'bool'``.  Python 3.12 has no wheel of NumPy older than 1.26, so on 3.12 the
project runs MXNet with NumPy 1.26 and this module puts the aliases back.

What it does, on import, exactly once:

* NumPy < 1.24 (the Python 3.8-3.11 constraint set pins 1.23.5): nothing.
  The aliases still exist there (as deprecated names) and are left alone.
* NumPy >= 1.24: each alias that is *missing* is set to the builtin it
  always meant (``np.bool = bool``, ``np.int = int``, ...), exactly the values
  NumPy < 1.24 had.  An alias that is present is not touched.

It must be imported before ``mxnet``: ``nst/cli.py``, the ``__init__`` of
every package that uses MXNet (``symbols``, ``train``, ``tools``,
``detection``, ``benchmarks``) and ``tests/conftest.py`` import it first.
Code outside those packages that imports ``mxnet`` directly should
``import nst.compat`` before it.

The other Python 3.12 gap, the removed ``distutils`` that MXNet imports, is
filled by ``setuptools`` (an install requirement on Python >= 3.12), not here.
"""

import builtins
import warnings

import numpy

#: The aliases NumPy 1.24 removed and the builtin each one stood for.
REMOVED_ALIASES = ("bool", "int", "float", "object", "str", "complex")

#: The first NumPy release without the aliases.
FIRST_WITHOUT_ALIASES = (1, 24)


def numpy_version(version=None):
    """``(major, minor)`` of ``version`` (default: the imported NumPy's), e.g. ``(1, 26)``."""
    text = numpy.__version__ if version is None else version
    parts = []
    for piece in text.split(".")[:2]:
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or 0))
    while len(parts) < 2:
        parts.append(0)
    return tuple(parts)


def restore_numpy_aliases(module=numpy, version=None):
    """Put back the removed aliases that are missing from ``module``.

    Does nothing when ``module``'s version (``version`` overrides it, for
    tests) is below 1.24.  Returns the names it set, in
    :data:`REMOVED_ALIASES` order (an empty list when nothing was missing).
    """
    if numpy_version(module.__version__ if version is None else version) < FIRST_WITHOUT_ALIASES:
        return []
    restored = []
    for name in REMOVED_ALIASES:
        # NumPy >= 1.24 raises AttributeError (from its module __getattr__) for a
        # removed alias, after a FutureWarning for bool/object/str ("will be defined
        # as the corresponding NumPy scalar") that is noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            present = hasattr(module, name)
        if not present:
            setattr(module, name, getattr(builtins, name))
            restored.append(name)
    return restored


#: The aliases this import restored (empty on NumPy < 1.24).
RESTORED = restore_numpy_aliases()
