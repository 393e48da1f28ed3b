"""The one exception type the project raises for bad input.

Every user-facing problem (a missing file, a corrupt batch, an unknown network
or loss name, a NaN loss ...) is raised as :class:`NSTError` with a message that
names the problem *and* the fix.  The ``nst`` command prints that message on one
line and exits with status 2 (a traceback only with ``--debug``).
"""


class NSTError(Exception):
    """A problem with the user's input or environment, with a clear message."""

    exit_code = 2


def first_line(err, limit=300):
    """The first line of an exception's message (its type name when the message is
    empty), cut to ``limit`` characters: the detail an :class:`NSTError` quotes."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]
