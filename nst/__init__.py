"""The toolkit's core: the ``nst`` command, the error type, atomic I/O and the CPU runtime.

The lowest layer: everything else (``symbols``, ``train``, ``detection``,
``tools``, ``benchmarks``) may import it, and it imports none of them -- the
``nst`` dispatcher (:mod:`nst.cli`) loads each command's module by name when
that command runs."""

from .errors import NSTError

__all__ = ["NSTError"]
__version__ = "0.1.0"
