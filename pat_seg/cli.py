"""The ``pat-seg`` command: LightningCLI over :class:`SegmentationModule` and the data modules.

``pat-seg fit`` with no arguments trains on the embedded synthetic data with the defaults of
``pat_seg/configs/default.yaml``; ``--config`` files and flags override them. The data module's
``num_classes`` and ``ignore_index`` flow to the module, the network and the loss, so a config never
repeats them.
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.resources import files
from typing import Any

from lightning.pytorch.cli import LightningCLI

from pat_seg.data.base import SegmentationDataModule
from pat_seg.module import SegmentationModule

DEFAULT_CONFIG = str(files("pat_seg") / "configs" / "default.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class PatSegCLI(LightningCLI):
    """LightningCLI with pat-seg's argument links."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        for source, targets in {
            "data.num_classes": ("model.num_classes", "model.model.init_args.num_classes"),
            "data.ignore_index": ("model.ignore_index", "model.loss.init_args.ignore_index"),
        }.items():
            for target in targets:
                parser.link_arguments(source, target, apply_on="instantiate")


def cli_main(args: list[str] | None = None, run: bool = True) -> PatSegCLI:
    """Entry point of the ``pat-seg`` console script (``args=None`` reads ``sys.argv``)."""
    return PatSegCLI(
        SegmentationModule,
        SegmentationDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={command: {"default_config_files": [DEFAULT_CONFIG]} for command in SUBCOMMANDS},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main() -> None:
    # `report` and `sweep` work on finished runs / grids of runs, not on one Trainer: route them
    # before LightningCLI, whose subcommands are fit, validate, test and predict.
    if len(sys.argv) > 1 and sys.argv[1] in ("report", "sweep"):
        tool = import_module(f"pat_seg.{sys.argv[1]}")
        tool.main(sys.argv[2:])
        return
    cli_main()


if __name__ == "__main__":
    main()
