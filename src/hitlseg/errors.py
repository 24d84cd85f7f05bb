"""Errors raised by hitlseg.

Bad input raises :class:`InputError`, a :class:`ValueError` whose message names the file or
argument at fault and what is wrong with it. The CLI prints it without a traceback and exits
with status 2; the server answers 4xx with a JSON body.
"""


class InputError(ValueError):
    """Bad input: a file, array or argument that hitlseg cannot use.

    The message names the offending file or argument and what is wrong.
    """


class ConflictError(InputError):
    """A write based on a stale version of stored data (e.g. markers saved over a newer version)."""


class DataWarning(UserWarning):
    """Input that hitlseg can use after a repair it reports (e.g. NaN voxels read as the lowest value)."""
