"""The ``pat-seg`` command: LightningCLI over :class:`SegmentationModule` and the data modules.

``pat-seg fit`` with no arguments trains on the embedded synthetic data with the defaults of
``pat_seg/configs/default.yaml``; ``--config`` files and flags override them. The data module's
``num_classes`` and ``ignore_index`` flow to the module, the network and the loss, so a config never
repeats them. Where each command writes is decided here (:mod:`pat_seg.run_folders`): one folder per
run, resumed in place, evaluations and predictions inside the run they evaluate.
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from pat_seg.callbacks.prediction_writer import PredictionWriter
from pat_seg.cli_help import COMMANDS, PatSegHelpFormatter, top_level_help
from pat_seg.data.base import SegmentationDataModule
from pat_seg.errors import CommandProgress, short_errors
from pat_seg.module import SegmentationModule
from pat_seg.run_folders import (
    CHECKPOINTS,
    SUBFOLDERS,
    RunFolder,
    check_resumable,
    experiment_name,
    newest_run_with_last_checkpoint,
    run_of,
    run_of_checkpoint,
)
from pat_seg.third_party_warnings import ignore_third_party_warnings

DEFAULT_CONFIG = str(files("pat_seg") / "configs" / "default.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
TOOLS = ("report", "sweep", "prepare")
PROGRESS = CommandProgress()


class PatSegCLI(LightningCLI):
    """LightningCLI with pat-seg's argument links, run folders and resume in place."""

    _purge_step: int | None = None  # set when fit resumes a checkpoint

    def add_arguments_to_parser(self, parser: Any) -> None:
        for source, targets in {
            "data.num_classes": ("model.num_classes", "model.model.init_args.num_classes"),
            "data.ignore_index": ("model.ignore_index", "model.loss.init_args.ignore_index"),
        }.items():
            for target in targets:
                parser.link_arguments(source, target, apply_on="instantiate")
        # Always on the trainer; it acts in `pat-seg predict` only (--predictions.overlay=true for overlays).
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--name", type=str | None, default=None,
            help="experiment name: runs go to lightning_logs/<name>/version_N (default: the first --config "
                 "file's name without .yaml, or 'default')",
        )

    # Lightning offers no public switch for this: the one private LightningCLI method pat-seg overrides
    # (tests/test_lightning_private_api.py fails by name if a Lightning release removes it).
    def _parse_ckpt_path(self) -> None:
        # LightningCLI would re-parse the checkpoint's hyperparameters as `model.*` options, but
        # num_classes and ignore_index are link targets (set from the data module), which a parser
        # may not be given. The config defines the module; the checkpoint supplies its weights.
        return

    def _of_subcommand(self, container: Any) -> Any:
        """The part of a config for this subcommand (the whole config when built with ``run=False``)."""
        return container[self.subcommand] if self.subcommand else container

    def before_instantiate_classes(self) -> None:
        config = self._of_subcommand(self.config)
        # The experiment name is resolved once and saved in config.yaml, so a run restarted from its
        # own config.yaml keeps its name.
        config.name = experiment_name(config.get("name"), list(config.get("config") or []))
        if self.subcommand == "predict":
            fill_classes_from_run(config)
        # SyncBatchNorm has no CPU kernel (it fails in the first forward under gloo): drop it there, so
        # one config (configs/trainer/ddp.yaml) serves GPU runs and CPU checks alike.
        trainer = config.trainer
        on_cpu = trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not torch.cuda.is_available())
        if trainer.sync_batchnorm and on_cpu:
            rank_zero_warn("sync_batchnorm=True is ignored on CPU (SyncBatchNorm needs CUDA)")
            trainer.sync_batchnorm = False

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        settings = self._of_subcommand(self.config_init)
        trainer_settings = settings["trainer"]
        folder = self._run_folder(settings, trainer_settings)
        if folder is not None:
            kwargs["logger"] = self._logger_for(folder)
        ckpt_path = settings.get("ckpt_path")
        run = folder if folder is not None and folder.path is not None else None
        if run is None and ckpt_path not in (None, "last", "best"):
            run = run_of_checkpoint(ckpt_path)
        if self.subcommand != "fit" and run is not None:
            # Checkpoint callbacks write nothing outside fit, but an evaluation restores their state
            # from the checkpoint: pointed at the run's own folder, it reloads without complaint.
            for callback in trainer_settings.get("callbacks") or []:
                if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                    callback.dirpath = str(run.path / CHECKPOINTS)
        return super().instantiate_trainer(**kwargs)

    def _run_folder(self, settings: dict[str, Any], trainer_settings: dict[str, Any]) -> RunFolder | None:
        """The run this command writes into, with ``settings["ckpt_path"]`` resolved to a file where
        it names one of a run's checkpoints (None: a logger other than TensorBoard was configured)."""
        configured = trainer_settings.get("logger")
        if configured is False:
            return None
        if isinstance(configured, TensorBoardLogger):
            # The version as configured (None: the next free one), not the logger's resolved property.
            spec = self._of_subcommand(self.config).trainer.logger
            version = spec.init_args.get("version") if isinstance(spec, Namespace) else None
            version = f"version_{version}" if isinstance(version, int) else version
            default = RunFolder(Path(configured.save_dir), configured.name, version)
        elif configured in (None, True):
            root = Path(trainer_settings.get("default_root_dir") or Path.cwd())
            default = RunFolder(root / "lightning_logs", settings["name"])
        else:
            return None
        ckpt_path = settings.get("ckpt_path")
        if self.subcommand == "fit":
            return self._fit_folder(default, settings, trainer_settings, ckpt_path)
        run = run_of(ckpt_path, list(settings.get("config") or []))
        if run is not None and ckpt_path in ("last", "best"):
            settings["ckpt_path"] = str(run.checkpoint(ckpt_path))
        return run or default

    def _fit_folder(self, default: RunFolder, settings: dict[str, Any], trainer_settings: dict[str, Any],
                    ckpt_path: str | None) -> RunFolder:
        if ckpt_path is None:
            return default
        if ckpt_path == "last":
            run = default if default.version is not None else newest_run_with_last_checkpoint(default.save_dir,
                                                                                              default.experiment)
            if run is None or not (run.path / CHECKPOINTS / "last.ckpt").is_file():
                rank_zero_warn(f"--ckpt_path last: no run of {default.experiment!r} under {default.save_dir} has "
                               f"a last checkpoint; starting a new run")
                settings["ckpt_path"] = None
                return default
            settings["ckpt_path"] = str(run.checkpoint("last"))
        else:
            run = run_of_checkpoint(ckpt_path) or default
        progress = check_resumable(settings["ckpt_path"], trainer_settings.get("max_epochs"),
                                   trainer_settings.get("max_steps"))
        self._purge_step = progress.global_step
        rank_zero_info(f"resuming {run.path or 'a new run'} from {settings['ckpt_path']} "
                       f"(epoch {progress.completed_epochs}, global step {progress.global_step})")
        return run

    def _logger_for(self, folder: RunFolder) -> TensorBoardLogger:
        """A TensorBoard logger writing into ``folder`` (or its evaluation sub-folder); a configured
        TensorBoardLogger's save_dir, name and version are kept, its other options are not."""
        options: dict[str, Any] = {"default_hp_metric": False}  # the HParams tab gets real metrics at the end
        if self.subcommand == "fit" and self._purge_step is not None:
            # Events the interrupted process wrote after the checkpoint are hidden by TensorBoard.
            options["purge_step"] = self._purge_step
        sub_dir = SUBFOLDERS.get(self.subcommand)
        return TensorBoardLogger(str(folder.save_dir), name=folder.experiment, version=folder.version,
                                 sub_dir=sub_dir, **options)

    def before_fit(self) -> None:
        PROGRESS.running = True

    before_validate = before_test = before_predict = before_fit


def fill_classes_from_run(config: Namespace) -> None:
    """An image folder predicted with a run's checkpoint takes the run's classes, unless given."""
    data = config.get("data")
    if not isinstance(data, Namespace) or not str(data.get("class_path", "")).endswith("ImageFolderDataModule"):
        return
    if data.init_args.get("num_classes") is not None:
        return
    run = run_of(config.get("ckpt_path"), list(config.get("config") or []))
    hparams = run.path / "hparams.yaml" if run is not None and run.path is not None else None
    if hparams is None or not hparams.is_file():
        raise ValueError("ImageFolderDataModule needs --data.num_classes (and --data.class_names), or a run's "
                         "config.yaml / checkpoint whose hparams.yaml holds them")
    recorded = yaml.safe_load(hparams.read_text()) or {}
    data.init_args.num_classes = recorded.get("num_classes")
    data.init_args.class_names = recorded.get("class_names")


def cli_main(args: list[str] | None = None, run: bool = True) -> PatSegCLI:
    """Entry point of the ``pat-seg`` console script (``args=None`` reads ``sys.argv``)."""
    parser_kwargs: dict[str, Any] = {command: {"default_config_files": [DEFAULT_CONFIG],
                                               "formatter_class": PatSegHelpFormatter} for command in SUBCOMMANDS}
    parser_kwargs["formatter_class"] = PatSegHelpFormatter
    return PatSegCLI(
        SegmentationModule,
        SegmentationDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs=parser_kwargs,
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main(argv: list[str] | None = None) -> None:
    """``pat-seg COMMAND ...``: the four Lightning subcommands, and ``report`` / ``sweep`` / ``prepare``."""
    explicit = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    ignore_third_party_warnings()
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(top_level_help())
        sys.exit(0 if argv else 2)
    command = argv[0]
    if command in TOOLS:
        # `report` and `sweep` work on finished runs / grids of runs, `prepare` on a data set: not on one Trainer.
        import_module(f"pat_seg.{command}").main(argv[1:])
        return
    if command not in COMMANDS and not command.startswith("-"):
        sys.stderr.write(f"pat-seg: error: unknown command {command!r}; expected one of {', '.join(COMMANDS)}\n")
        sys.exit(2)
    with short_errors(command, PROGRESS):
        cli_main(None if explicit is None else argv)


if __name__ == "__main__":
    main()
