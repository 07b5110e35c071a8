"""pat-seg's own errors, by what went wrong (the ``pat-seg`` command shortens exactly these).

:class:`ConfigurationError`: what the command was asked to do cannot be done as given (a data layout,
an argument value, a checkpoint that does not fit the run); nothing was trained or evaluated. Exit 2.
:class:`RunFailure`: a run that started could not go on (a label out of range in batch 812, a NaN
loss). Exit 1. Both subclass the built-in error a caller would expect (``ValueError``,
``RuntimeError``), so library code catching those keeps working. Every other exception, a torch error
raised inside pat-seg's own code included, is a bug or an environment problem and keeps its traceback.
"""

from __future__ import annotations


class PatSegError(Exception):
    """Base of the errors pat-seg raises on purpose, with a message meant for the person running it."""

    exit_code = 1  # of the `pat-seg` command it ends: a run failure's; a configuration error's is 2


class ConfigurationError(PatSegError, ValueError):
    """The command, its configuration or its input cannot be used as given (exit code 2)."""

    exit_code = 2


class RunFailure(PatSegError, RuntimeError):
    """A run stopped part-way for a reason its message names (exit code 1)."""
