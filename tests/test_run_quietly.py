"""``run_quietly``: a command from a notebook, Lightning's info lines held back, the host left as it was."""

import logging
import sys

import pytest

import pat_seg.cli.app as app
from pat_seg.cli import run_quietly
from pat_seg.exceptions import ConfigurationError

LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_quiet_for_the_call_only_however_it_ends(monkeypatch: pytest.MonkeyPatch, outcome: str) -> None:
    seen: dict[str, object] = {}

    def command(args: list[str]) -> str:
        seen["levels"] = [logging.getLogger(name).level for name in LIGHTNING_LOGGERS]
        seen["argv"] = list(sys.argv)
        if outcome == "raises":
            raise ConfigurationError("refused")
        return "the CLI"

    monkeypatch.setattr(app, "cli_main", command)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    before = [logging.getLogger(name).level for name in LIGHTNING_LOGGERS]
    if outcome == "raises":
        with pytest.raises(ConfigurationError, match="refused"):
            run_quietly(["fit"])
    else:
        assert run_quietly(["fit"]) == "the CLI"
    # During the call: info lines held back, the kernel's flags hidden from LightningCLI.
    assert seen == {"levels": [logging.WARNING, logging.WARNING], "argv": ["ipykernel_launcher.py"]}
    # After it: the host's logging and sys.argv as they were.
    assert [logging.getLogger(name).level for name in LIGHTNING_LOGGERS] == before
    assert sys.argv == ["ipykernel_launcher.py", "-f", "kernel.json"]
