"""The ``config.yaml`` that each of many ``pat-seg`` commands would save, worked out without running them.

``python -m pat_seg.cli.saved_config COMMANDS.json OUTPUT.yaml``: ``COMMANDS.json`` holds a list of
argument lists (``["fit", "--config", "configs/synthetic_pat.yaml", ...]``); ``OUTPUT.yaml`` gets one
entry per command, ``{config: ...}`` (the config as the command's run folder would hold it) or
``{error: ...}`` (why the command cannot be configured). Nothing is instantiated: no network is built,
no data set read. ``pat-seg sweep`` labels a study's grid with it before any run has trained; it runs
this as a process of its own, as it runs ``pat-seg fit``, so the experiments code never imports the
command line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from pat_seg.cli.app import PatSegCLI, cli_main
from pat_seg.cli.errors import project_error
from pat_seg.cli.warning_filters import ignore_third_party_warnings


class _Configured(Exception):
    """Carries the config out of LightningCLI's constructor, which would go on to build everything."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__("configured")
        self.config = config


class _ConfigOnly(PatSegCLI):
    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()  # resolves the experiment name, as a real run saves it
        raise _Configured(self._config_to_save())


def saved_config(args: list[str]) -> dict[str, Any]:
    """The config ``pat-seg ARGS`` would save in its run's ``config.yaml``; a pat-seg error
    (:class:`~pat_seg.exceptions.ConfigurationError`) when the command cannot be configured."""
    try:
        cli_main(args, cli_class=_ConfigOnly)
    except _Configured as configured:
        return configured.config
    raise AssertionError("LightningCLI returned without configuring its classes")


def main(argv: list[str] | None = None) -> None:
    commands_file, output_file = sys.argv[1:] if argv is None else argv
    ignore_third_party_warnings()
    results: list[dict[str, Any]] = []
    for args in json.loads(Path(commands_file).read_text()):
        try:
            results.append({"config": saved_config(list(args))})
        except Exception as error:
            cause = project_error(error)
            if cause is None:  # not a configuration the user can fix: a bug, keep its traceback
                raise
            results.append({"error": str(cause)})
    Path(output_file).write_text(yaml.safe_dump(results, sort_keys=False))


if __name__ == "__main__":
    main()
