"""pat_seg's own log lines reach the console of the ``pat-seg`` command: INFO from rank zero only,
warnings from every process, each line once, and nothing added where the user configured logging.

Each case runs in a fresh interpreter, as the command does (pytest attaches handlers of its own)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_resume import REPO

SETUP = """
import logging
from lightning.fabric.utilities.rank_zero import rank_zero_only
from pat_seg.cli.console_log import show_package_log
{before}
show_package_log()
show_package_log()  # a second call (another entry point) adds nothing
log = logging.getLogger("pat_seg.data.base")
log.info("counting training pixels per class for X")
log.warning("could not cache class counts at Y")
"""


def run(before: str) -> str:
    code = SETUP.format(before=before)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout == ""
    return result.stderr


@pytest.mark.parametrize(
    "before, expected",
    [
        ("", ["counting training pixels per class for X", "could not cache class counts at Y"]),
        # Another DDP process: its INFO lines would repeat rank zero's; its warnings are its own.
        ("rank_zero_only.rank = 1", ["could not cache class counts at Y"]),
        # The user's own configuration decides (here: warnings and above, with the level named).
        (
            "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')",
            ["WARNING could not cache class counts at Y"],
        ),
    ],
    ids=["rank-zero", "other-rank", "user-configured"],
)
def test_package_log_lines_on_the_console(before: str, expected: list[str]) -> None:
    assert run(before).splitlines() == expected
