"""The ``pat-seg`` command: LightningCLI over :class:`SegmentationModule` and the data modules.

``pat-seg fit`` with no arguments trains on the embedded synthetic data with the defaults of
``pat_seg/configs/default.yaml``; ``--config`` files and flags override them. Where a command writes
(one folder per run, resumed in place, evaluations inside the run they evaluate) is planned by
:mod:`pat_seg.experiments.command_plan` before the Trainer exists.
"""

from __future__ import annotations

import logging
import sys
import warnings
from argparse import ArgumentError
from contextlib import ExitStack
from importlib import import_module
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from pat_seg.callbacks.prediction_writer import PredictionWriter
from pat_seg.cli.console_log import show_package_log
from pat_seg.cli.errors import configuration_error, explain_parse_error, project_error, short_errors
from pat_seg.cli.fit_summary import fit_summary
from pat_seg.cli.help import COMMANDS, PatSegHelpFormatter, top_level_help
from pat_seg.cli.prepare_hint import prepare_command
from pat_seg.cli.run_classes import classes_of_run
from pat_seg.cli.trainer_checks import check_trainer_options, explain_trainer_parse_error
from pat_seg.cli.warning_filters import ignore_third_party_warnings
from pat_seg.config_files import with_shipped_configs
from pat_seg.data.base import SegmentationDataModule
from pat_seg.data.disk import DiskDataModule
from pat_seg.data.image_folder import ImageFolderDataModule, predict_only
from pat_seg.exceptions import ConfigurationError
from pat_seg.experiments.checkpoint_files import SafeCheckpointIO
from pat_seg.experiments.command_plan import CommandPlan, CommandRequest, plan_command
from pat_seg.experiments.run_folder import HPARAMS, RunFolder, experiment_name, folder_name, run_of
from pat_seg.experiments.run_summary import RunSummary
from pat_seg.experiments.writable import check_writable
from pat_seg.module import SegmentationModule

DEFAULT_CONFIG = str(files("pat_seg") / "configs" / "default.yaml")
# Commands that are not one Trainer: `report` and `sweep` work on many runs, `prepare` on a data set.
TOOLS = {
    "report": "pat_seg.experiments.report_command",
    "sweep": "pat_seg.experiments.sweep",
    "prepare": "pat_seg.cli.prepare",
}


class PatSegCLI(LightningCLI):
    """LightningCLI with pat-seg's argument links, run folders and resume in place."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        # The data module's class count and ignore index reach the module, the network and the loss,
        # so a config never repeats them.
        for source, targets in {
            "data.num_classes": ("model.num_classes", "model.model.init_args.num_classes"),
            "data.ignore_index": ("model.ignore_index", "model.loss.init_args.ignore_index"),
        }.items():
            for target in targets:
                parser.link_arguments(source, target, apply_on="instantiate")
        # Always on the trainer; it acts in `pat-seg predict` only (--predictions.overlay=true for overlays).
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--name",
            type=str | None,
            default=None,
            help="experiment name: runs go to lightning_logs/<name>/version_N (default: the first --config "
            "file's name without .yaml, or 'default')",
        )

    # Lightning offers no public switch for this: the one private LightningCLI method pat-seg overrides
    # (tests/test_lightning_private_api.py fails by name if a Lightning release removes it).
    def _parse_ckpt_path(self) -> None:
        """Nothing. LightningCLI would re-parse the checkpoint's hyperparameters as ``model.*`` options, but
        num_classes and ignore_index are link targets (set from the data module), which a parser may not
        be given. The config defines the module; the checkpoint supplies its weights."""

    def parse_arguments(self, parser: Any, args: Any) -> None:
        from_argv = False
        self.command_line: list[str] | None = None  # the command and its options, when given as a list
        # The command's arguments, kept to say where a value was set (a flag, or a --config file's line).
        self.argv: list[str] = []
        if not isinstance(args, (dict, Namespace)):
            # A --config that is no file here names a shipped config (pat_seg.config_files).
            given = self.command_line = list(sys.argv[1:] if args is None else args)
            resolved = with_shipped_configs(given)
            self.argv = resolved
            if resolved != given:
                from_argv, args = args is None, resolved
        try:
            with warnings.catch_warnings():
                if from_argv:  # sys.argv's own arguments as a list: LightningCLI would warn of both
                    warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
                super().parse_arguments(parser, args)
        except ArgumentError as error:
            argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
            trainer_value = explain_trainer_parse_error(str(error), argv, [DEFAULT_CONFIG])
            raise (trainer_value or explain_parse_error(error, argv, option_strings(parser, argv))) from error

    def _of_subcommand(self, container: Any) -> Any:
        """The part of a config for this subcommand (the whole config when built with ``run=False``)."""
        return container[self.subcommand] if self.subcommand else container

    def before_instantiate_classes(self) -> None:
        config = self._of_subcommand(self.config)
        check_trainer_options(config.trainer, getattr(self, "argv", []), [DEFAULT_CONFIG])
        if self.subcommand not in (None, "predict"):
            refuse_image_folder(config, self.subcommand)
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

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as error:
            rejection = configuration_error(error)
            if rejection is None:
                raise
            raise rejection from error
        # A data module that reads prepared splits names the command that prepares them in its messages:
        # this command's own options.
        command = self.command_line
        if isinstance(self.datamodule, DiskDataModule) and command and command[0] in ("fit", "validate", "test"):
            self.datamodule.prepare_command = prepare_command(command[1:])

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        size = getattr(self.datamodule, "size", None)
        if size is not None and isinstance(self.model, SegmentationModule):  # before the trainer, any folder or file
            self.model.check_input_size(int(size[0]), int(size[-1]), given="the data module's size is")
        settings = self._of_subcommand(self.config_init)
        trainer_settings = settings["trainer"]
        config = self._config_to_save()
        plan = plan_command(
            CommandRequest(
                subcommand=str(self.subcommand or "fit"),
                ckpt_path=settings.get("ckpt_path"),
                run=self._logged_run(settings, trainer_settings),
                config_files=[str(path) for path in settings.get("config") or []],
                config=config,
                max_epochs=trainer_settings.get("max_epochs"),
                max_steps=trainer_settings.get("max_steps"),
                image_folder=self.datamodule.root if isinstance(self.datamodule, ImageFolderDataModule) else None,
            )
        )
        if plan.state is not None:
            check_weights_fit(self.model, plan.state, plan.checkpoint)
        callbacks = one_or_many(trainer_settings.get("callbacks"))
        check_writable(folders_written(plan, str(self.subcommand or "fit"), callbacks))
        for message in plan.warnings:
            rank_zero_warn(message)
        for message in plan.notes:
            rank_zero_info(message)
        settings["ckpt_path"] = str(plan.checkpoint) if plan.checkpoint is not None else None
        if plan.run is not None:
            kwargs["logger"] = self._run_logger(trainer_settings.get("logger"), plan)
        kwargs["plugins"] = with_safe_checkpoints(trainer_settings.get("plugins"), plan)
        if self.subcommand == "fit":
            kwargs["callbacks"] = [*callbacks, RunSummary(config)]
        elif plan.run is not None and plan.run.path is not None:
            # Checkpoint callbacks write nothing outside fit, but an evaluation restores their state
            # from the checkpoint: pointed at the run's own folder, it reloads without complaint.
            for callback in callbacks:
                if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                    callback.dirpath = str(plan.run.checkpoints)
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError) as error:
            # A combination the per-option checks (pat_seg.cli.trainer_checks) do not know: Lightning's
            # own words, without its traceback. Nothing has been written yet.
            if project_error(error) is not None:
                raise
            raise ConfigurationError(f"the Trainer rejects its options: {error}") from error

    def _run_logger(self, configured: Any, plan: CommandPlan) -> TensorBoardLogger:
        """The TensorBoard logger of the planned run: the configured logger's class and options
        (``log_graph``, ``prefix``, ``flush_secs``, ...), writing into the run's folder.

        The HParams tab gets real metrics at the end (:class:`RunSummary`), so no ``hp_metric``;
        TensorBoard hides the events that a resumed run's interrupted process wrote after its
        checkpoint (``purge_step``).
        """
        assert plan.run is not None
        logger_class, options = TensorBoardLogger, {}
        spec = self._of_subcommand(self.config).trainer.logger
        if isinstance(configured, TensorBoardLogger) and isinstance(spec, Namespace):
            logger_class, options = type(configured), spec.init_args.as_dict()
        planned = {
            "save_dir": str(plan.run.save_dir),
            "name": plan.run.experiment,
            "version": plan.run.version,
            "sub_dir": plan.subfolder,
            "default_hp_metric": False,
            "purge_step": plan.purge_step,
        }
        return logger_class(**{**options, **planned})

    def after_test(self) -> None:
        """Say where the metrics went: the run's ``test/`` (or ``validate/``) folder."""
        if self.trainer.logger is not None:
            rank_zero_info(f"pat-seg {self.subcommand}: metrics written to {self.trainer.log_dir}")

    after_validate = after_test

    def after_fit(self) -> None:
        """End with one line: the run folder, its final validation metrics and its best checkpoint."""
        rank_zero_info(fit_summary(self.trainer))

    def _config_to_save(self) -> dict[str, Any]:
        """The config as this command would save it in its run's ``config.yaml``."""
        parser = self._parser(self.subcommand)
        return yaml.safe_load(parser.dump(self._of_subcommand(self.config), skip_none=False)) or {}

    def _logged_run(self, settings: dict[str, Any], trainer_settings: dict[str, Any]) -> RunFolder | None:
        """The run folder the configured logger points at (None: a logger other than TensorBoard, or none)."""
        configured = trainer_settings.get("logger")
        if isinstance(configured, TensorBoardLogger):
            # The version as configured (None: the next free one), not the logger's resolved property.
            spec = self._of_subcommand(self.config).trainer.logger
            version = spec.init_args.get("version") if isinstance(spec, Namespace) else None
            return RunFolder.of_logger(Path(configured.save_dir), configured.name, version)
        if configured in (None, True):
            root = Path(trainer_settings.get("default_root_dir") or Path.cwd())
            return RunFolder(root / "lightning_logs", settings["name"])
        if isinstance(configured, CSVLogger):
            # Not a run pat-seg plans, but its name and version are folders inside its save dir too.
            spec = self._of_subcommand(self.config).trainer.logger
            for key in ("name", "version"):
                value = spec.init_args.get(key) if isinstance(spec, Namespace) else None
                if isinstance(value, str):
                    folder_name(value, f"the logger's {key} (--trainer.logger.init_args.{key})")
        return None


def is_image_folder(config: Namespace) -> bool:
    """Whether ``config``'s data module is an :class:`ImageFolderDataModule`."""
    data = config.get("data")
    return isinstance(data, Namespace) and str(data.get("class_path", "")).endswith("ImageFolderDataModule")


def refuse_image_folder(config: Namespace, command: str) -> None:
    """Stop ``pat-seg COMMAND`` (any but ``predict``) on an image folder before anything is built or
    written, naming the data module to train on one's own data instead."""
    if is_image_folder(config):
        raise ConfigurationError(predict_only(command))


def fill_classes_from_run(config: Namespace) -> None:
    """An image folder predicted with a run's checkpoint takes the run's classes, unless given."""
    if not is_image_folder(config) or config.data.init_args.get("num_classes") is not None:
        return
    run = run_of(config.get("ckpt_path"), list(config.get("config") or []))
    hparams = run.path / HPARAMS if run is not None and run.path is not None else None
    if run is None or hparams is None or not hparams.is_file():
        raise ConfigurationError(
            "ImageFolderDataModule needs --data.num_classes (and --data.class_names), or a run's "
            "config.yaml / checkpoint whose hparams.yaml holds them"
        )
    recorded = yaml.safe_load(hparams.read_text()) or {}
    config.data.init_args.num_classes = recorded.get("num_classes")
    # hparams.yaml keeps the module's own class_names argument (None when the data module named the
    # classes): then the names come from the data module the run was trained with.
    config.data.init_args.class_names = recorded.get("class_names") or classes_of_run(run, recorded.get("num_classes"))


def check_weights_fit(module: Any, state: dict[str, Any], checkpoint: Path | None) -> None:
    """Refuse a checkpoint whose weights do not fit the configured network, before anything is written."""
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    saved = {name: tuple(getattr(value, "shape", ())) for name, value in (state.get("state_dict") or {}).items()}
    if not getattr(module, "strict_loading", True) or saved == expected:
        return
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    reshaped = [
        f"{name} {saved[name]} vs {expected[name]}"
        for name in sorted(set(saved) & set(expected))
        if saved[name] != expected[name]
    ]
    details = [
        f"{label}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        if names
    ]
    raise ConfigurationError(
        f"checkpoint {checkpoint} does not fit the configured network "
        f"({type(getattr(module, 'model', module)).__name__}): "
        + "; ".join(details)
        + "\ngive the config the checkpoint was trained with (its run's config.yaml)"
    )


def folders_written(plan: CommandPlan, subcommand: str, callbacks: list[Any]) -> list[tuple[Path, str]]:
    """The folders ``plan`` writes into, with what goes there: the run (or, for a new run, the folder its
    ``version_N`` is made in), a fit's checkpoint folders, an evaluation's sub-folder of the run."""
    folders: list[tuple[Path, str]] = []
    run = plan.run
    if run is not None:
        if run.path is None:
            folders.append((run.save_dir / run.experiment, "the new run (--trainer.default_root_dir)"))
        elif plan.subfolder is not None:
            folders.append((run.path / plan.subfolder, f"pat-seg {subcommand}'s results"))
        else:
            folders.append((run.path, "the run"))
            if subcommand == "fit":
                folders.append((run.checkpoints, "the run's checkpoints"))
    if subcommand == "fit":
        folders += [
            (Path(callback.dirpath), f"{type(callback).__name__}'s checkpoints (its dirpath)")
            for callback in callbacks
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None
        ]
    return folders


def one_or_many(configured: Any) -> list[Any]:
    """A trainer option that takes one object or a list of them (callbacks, plugins), as a list."""
    return [] if configured is None else list(configured) if isinstance(configured, (list, tuple)) else [configured]


def with_safe_checkpoints(configured: Any, plan: CommandPlan) -> list[Any]:
    """The trainer's plugins with :class:`SafeCheckpointIO` reading and writing its checkpoints."""
    plugins = one_or_many(configured)
    if any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        raise ConfigurationError(
            "pat-seg reads and writes checkpoints itself (safe loading, atomic saves): "
            "remove the CheckpointIO from --trainer.plugins"
        )
    opened = (plan.checkpoint, plan.state) if plan.checkpoint is not None and plan.state is not None else None
    return [*plugins, SafeCheckpointIO(opened)]


def option_strings(parser: Any, argv: list[str]) -> list[str]:
    """The options the command in ``argv`` accepts (its subcommand's parser, when it has one)."""
    subcommands = getattr(parser, "_subcommands_action", None)
    if subcommands is not None and argv and argv[0] in subcommands.choices:
        parser = subcommands.choices[argv[0]]
    return [option for option in getattr(parser, "_option_string_actions", {}) if option.startswith("--")]


# No abbreviated options (--trainer.max_epoch is not --trainer.max_epochs), and a parse error is raised
# (explained by pat_seg.cli.errors) instead of jsonargparse printing the usage before it; `pat-seg
# prepare` parses with the same settings.
STRICT_PARSING: dict[str, Any] = {"formatter_class": PatSegHelpFormatter, "allow_abbrev": False, "exit_on_error": False}


def cli_main(args: list[str] | None = None, run: bool = True, cli_class: type[PatSegCLI] = PatSegCLI) -> PatSegCLI:
    """Entry point of the ``pat-seg`` console script (``args=None`` reads ``sys.argv``); ``cli_class``:
    a subclass that stops part-way (:mod:`pat_seg.cli.saved_config`)."""
    parser_kwargs: dict[str, Any] = {
        command: {"default_config_files": [DEFAULT_CONFIG], **STRICT_PARSING} for command in PatSegCLI.subcommands()
    }
    parser_kwargs.update(STRICT_PARSING)
    return cli_class(
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


def run_quietly(args: list[str]) -> PatSegCLI:
    """``pat-seg ARGS`` from Python (a notebook) with the console's messages left out of its output.

    Lightning's info lines ("GPU available", "Seed set", the class table) are held back for the call,
    the warnings the command ignores are ignored, and the host's own ``sys.argv`` (a kernel's flags) is
    hidden from LightningCLI, which would warn about it. Warnings and errors of the run still show.
    """
    ignore_third_party_warnings()
    with ExitStack() as restore:  # each change below is undone when the command ends, however it ends
        for logger in map(logging.getLogger, ("lightning.pytorch", "lightning.fabric")):
            restore.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.WARNING)
        restore.callback(setattr, sys, "argv", sys.argv)
        sys.argv = sys.argv[:1]
        return cli_main(args)


def main(argv: list[str] | None = None) -> None:
    """``pat-seg COMMAND ...``: the four Lightning subcommands, and ``report`` / ``sweep`` / ``prepare``."""
    args = list(sys.argv[1:] if argv is None else argv)
    ignore_third_party_warnings()
    show_package_log()
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(top_level_help())
        sys.exit(0 if args else 2)
    command = args[0]
    if command in TOOLS:
        import_module(TOOLS[command]).main(args[1:])
        return
    if command not in COMMANDS and not command.startswith("-"):
        sys.stderr.write(f"pat-seg: error: unknown command {command!r}; expected one of {', '.join(COMMANDS)}\n")
        sys.exit(2)
    with short_errors(command):
        # None: LightningCLI reads sys.argv itself (given arguments and a sys.argv as well, it warns).
        cli_main(None if argv is None else args)
    release_process_group()


def release_process_group() -> None:
    """Destroy the DDP process group a finished command leaves behind (Lightning does not).

    Left to interpreter shutdown, gloo's worker threads can be torn down after the objects they hold,
    and the process then ends in SIGABRT ("terminate called without an active exception") although
    its work was done and written; torchrun reports that as a failed node. Destroying the group here,
    while the interpreter is whole, is the shutdown torch.distributed documents. Local to the process:
    no collective, so a rank never waits on another here.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
