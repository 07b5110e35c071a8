"""pat-seg's own errors end a ``pat-seg`` command with a short message instead of a traceback.

Errors are told apart by type (:mod:`pat_seg.exceptions`), not by where they were raised: a
:class:`~pat_seg.exceptions.ConfigurationError` is printed as ``pat-seg <command>: error: <message>``
and exits 2, a :class:`~pat_seg.exceptions.RunFailure` likewise with exit 1. A ``ValueError`` or
``TypeError`` with which a configured class rejected its arguments while the command was being set
up is a configuration error too (:func:`configuration_error`). Any other exception -- a torch error
in pat-seg's own code, an out-of-memory error, a bug -- keeps its full traceback.
``PAT_SEG_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from pat_seg.exceptions import ConfigurationError, PatSegError, RunFailure

CONFIGURATION_ERROR = 2
RUN_FAILURE = 1
MAX_MESSAGE_LINES = 12


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def project_error(error: BaseException) -> PatSegError | None:
    """The pat-seg error behind ``error`` (jsonargparse and Lightning wrap them), or None."""
    for link in _chain(error):
        if isinstance(link, PatSegError):
            return link
    return None


def configuration_error(error: BaseException) -> ConfigurationError | None:
    """A class rejecting its configured arguments, as a :class:`ConfigurationError` with the rejection's words.

    jsonargparse wraps what a constructor raised; the innermost error is the rejection. None when
    ``error`` holds a pat-seg error already, or when the innermost error is not a ``ValueError`` or
    ``TypeError`` (a torch error while building a network, say): those are raised as they are.
    """
    if project_error(error) is not None:
        return None
    innermost = list(_chain(error))[-1]
    return ConfigurationError(str(innermost)) if isinstance(innermost, (ValueError, TypeError)) else None


def exit_code(error: PatSegError) -> int:
    return RUN_FAILURE if isinstance(error, RunFailure) else CONFIGURATION_ERROR


def short_message(command: str, error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    if len(lines) > MAX_MESSAGE_LINES:
        lines = lines[:MAX_MESSAGE_LINES] + ["..."]
    lines[0] = f"pat-seg {command}: error: {lines[0]}"
    return "\n".join(lines + ["(set PAT_SEG_DEBUG=1 to see the traceback)"]) + "\n"


@contextmanager
def short_errors(command: str) -> Iterator[None]:
    """Turn pat-seg's own errors into a short message on stderr and an exit code (see the module doc)."""
    try:
        yield
    except Exception as error:
        if os.environ.get("PAT_SEG_DEBUG", "").strip() not in ("", "0"):
            raise
        cause = project_error(error)
        if cause is None:
            raise
        sys.stderr.write(short_message(command, cause))
        sys.exit(exit_code(cause))
