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
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from pat_seg.data.base import SegmentationDataModule
from pat_seg.module import SegmentationModule
from pat_seg.third_party_warnings import ignore_third_party_warnings

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

    # Lightning offers no public switch for this: the one private LightningCLI method pat-seg overrides
    # (tests/test_lightning_private_api.py fails by name if a Lightning release removes it).
    def _parse_ckpt_path(self) -> None:
        # LightningCLI would re-parse the checkpoint's hyperparameters as `model.*` options, but
        # num_classes and ignore_index are link targets (set from the data module), which a parser
        # may not be given. The config defines the module; the checkpoint supplies its weights.
        return

    def before_instantiate_classes(self) -> None:
        # SyncBatchNorm has no CPU kernel (it fails in the first forward under gloo): drop it there, so
        # one config (configs/trainer/ddp.yaml) serves GPU runs and CPU checks alike.
        trainer = self.config[self.subcommand].trainer if self.subcommand else self.config.trainer
        on_cpu = trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not torch.cuda.is_available())
        if trainer.sync_batchnorm and on_cpu:
            rank_zero_warn("sync_batchnorm=True is ignored on CPU (SyncBatchNorm needs CUDA)")
            trainer.sync_batchnorm = False

    def before_fit(self) -> None:
        # `--ckpt_path last` in a NEW process: Lightning looks only in this run's (new) version folder;
        # fall back to the newest last*.ckpt of earlier versions under the same logger root.
        if self.config_init["fit"].get("ckpt_path") == "last":
            found = newest_last_checkpoint(self.trainer)
            if found is not None:
                self.config_init["fit"]["ckpt_path"] = found


def newest_last_checkpoint(trainer: Any) -> str | None:
    """The newest ``last*.ckpt`` the trainer's checkpoint callbacks would find, else the newest one in
    ``<logger root>/version_*/checkpoints/`` (None when there is none)."""
    own = [path for callback in trainer.checkpoint_callbacks if callback.dirpath
           for path in Path(callback.dirpath).glob("last*.ckpt")]
    if own:
        return None  # Lightning resolves "last" itself
    root = getattr(trainer.logger, "root_dir", None) if trainer.logger is not None else None
    if root is None:
        return None
    candidates = list(Path(root).glob("version_*/checkpoints/last*.ckpt"))
    return str(max(candidates, key=lambda path: path.stat().st_mtime)) if candidates else None


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
    ignore_third_party_warnings()
    # `report` and `sweep` work on finished runs / grids of runs, not on one Trainer: route them
    # before LightningCLI, whose subcommands are fit, validate, test and predict.
    if len(sys.argv) > 1 and sys.argv[1] in ("report", "sweep"):
        tool = import_module(f"pat_seg.{sys.argv[1]}")
        tool.main(sys.argv[2:])
        return
    cli_main()


if __name__ == "__main__":
    main()
