"""Core of the NST toolkit: the ``nst`` command, the project's error type and
small I/O helpers shared by ``symbols``, ``train``, ``detection`` and ``tools``."""

from .errors import NSTError

__all__ = ["NSTError"]
__version__ = "0.1.0"
