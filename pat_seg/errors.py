"""The project's own errors end a ``pat-seg`` command with a short message instead of a traceback.

pat-seg checks its input where it enters (data layouts, argument values, checkpoints, labels) and
raises ``ValueError`` (or a subclass) naming the value and what was expected. Such an error, raised by
pat-seg's code, is printed as ``pat-seg <command>: error: <message>``; the exit code is 2 when the
configuration is wrong (anything raised before training or evaluation starts, a data layout, a
checkpoint that cannot be resumed) and 1 when a run fails on the way (a bad label in batch 812, a
NaN loss). Any other exception is a bug or an environment problem and keeps its full traceback.
``PAT_SEG_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIGURATION_ERROR = 2
RUN_FAILURE = 1
MAX_MESSAGE_LINES = 12


class CommandProgress:
    """Whether the command got past configuration (set by the CLI just before it trains or evaluates)."""

    def __init__(self) -> None:
        self.running = False


def _raised_by_pat_seg(error: BaseException) -> bool:
    """Whether the frame that raised ``error`` is pat-seg's code (not a dependency's)."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return PACKAGE_DIR in Path(traceback.tb_frame.f_code.co_filename).resolve().parents


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__  # type: ignore[assignment]


def project_error(error: BaseException) -> ValueError | RuntimeError | None:
    """The pat-seg error behind ``error`` (jsonargparse and Lightning wrap them), or None."""
    for link in _chain(error):
        if isinstance(link, (ValueError, RuntimeError)) and _raised_by_pat_seg(link):
            return link
    return None


def exit_code(error: BaseException, progress: CommandProgress) -> int:
    from pat_seg.data.io import DatasetLayoutError
    from pat_seg.run_folders import ResumeError

    if isinstance(error, (DatasetLayoutError, ResumeError)) or not progress.running:
        return CONFIGURATION_ERROR
    return RUN_FAILURE


def short_message(command: str, error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    if len(lines) > MAX_MESSAGE_LINES:
        lines = lines[:MAX_MESSAGE_LINES] + ["..."]
    lines[0] = f"pat-seg {command}: error: {lines[0]}"
    return "\n".join(lines + ["(set PAT_SEG_DEBUG=1 to see the traceback)"]) + "\n"


@contextmanager
def short_errors(command: str, progress: CommandProgress) -> Iterator[None]:
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
        sys.exit(exit_code(cause, progress))
