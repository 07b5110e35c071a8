"""The ``pat-seg`` command shows pat_seg's own log lines on the console, as Lightning shows its own.

Python drops a library's INFO lines unless the application gives them a handler, so without this
the lines that explain a wait or a substitution ("counting training pixels per class for ...",
"Cityscapes test labels are not public: the 'test' split is the val set") never reached a user of
the command. Only the command installs the handler (importing pat_seg configures nothing), and only
where the user has not configured logging already (the root logger has no handler), so nothing
prints twice. INFO lines come from the rank-zero process only, as Lightning's ``rank_zero_info``;
warnings come from every process, since they can be about one process's share of the data.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from lightning.fabric.utilities.rank_zero import rank_zero_only

PACKAGE_LOGGER = "pat_seg"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a notebook or a test may swap it),
    not to the stream that was current when the handler was made."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def _rank_zero_or_a_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or getattr(rank_zero_only, "rank", 0) == 0


def show_package_log() -> None:
    """Show pat_seg's INFO lines and above on stderr, each as its bare message (like Lightning's)."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if logging.getLogger().handlers or any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        return
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_rank_zero_or_a_warning)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
