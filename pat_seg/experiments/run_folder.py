"""A run on disk: its folder layout and its identity (no torch: the report and the sweep read it too).

A run is ``<save_dir>/<experiment>/<version>/`` (``lightning_logs/cityscapes_pat/version_0``): the
experiment name is ``--name``, else the stem of the first ``--config`` file, else ``default``.
Everything a run produces lives in its folder: TensorBoard events, ``config.yaml``, ``hparams.yaml``,
``checkpoints/``; ``pat-seg test|validate|predict`` given one of the run's checkpoints write into
``<run>/test/``, ``<run>/validate/`` and ``<run>/predictions/`` (the test split), or, predicting a
folder of the user's own images, ``<run>/predictions_<folder name>/`` (:func:`evaluation_subfolder`).

What a run *is* comes from its saved ``config.yaml``, not from its folder's name: two configs are the
same experiment when they agree in everything but seeds and logging plumbing (:func:`experiment_identity`),
and a command may continue a run only when they also agree in the seeds (:func:`resume_identity`):
only the training budget may grow.

A run stays inside its save dir: the experiment name and the version are each one folder name
(:func:`folder_name`), and a ``fit`` without ``--ckpt_path`` never writes into a run folder that
holds files already (:func:`refuse_existing_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pat_seg.exceptions import ConfigurationError
from pat_seg.table_text import holds_control_character

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
CONFIG = "config.yaml"
HPARAMS = "hparams.yaml"
# Sub-folder of a run that each evaluation subcommand writes into (predict: on the data set's test split).
SUBFOLDERS = {"test": "test", "validate": "validate", "predict": "predictions"}
DEFAULT_EXPERIMENT = "default"

# Config keys (dotted; a key covers everything below it) that vary between repeats of one experiment.
SEED_KEYS = ("seed_everything", "data.init_args.seed")
# Config keys that change where and how a run is logged or resumed, not what it computes.
PLUMBING = (
    "name",
    "ckpt_path",
    "config",
    "predictions",
    "trainer.logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.callbacks",
    "trainer.log_every_n_steps",
    "trainer.enable_checkpointing",
    "trainer.num_sanity_val_steps",
    "data.init_args.root",
    "data.init_args.prepared_dir",
    "data.init_args.num_workers",
    "data.init_args.pin_memory",
    "data.init_args.persistent_workers",
    "data.init_args.eval_batch_size",
    "model.num_classes",
    "model.ignore_index",
    "model.class_names",
    "model.model.init_args.num_classes",
)  # and each loss's own (its description's not_identifying; pat_seg.experiments.class_identity.loss_plumbing)
# Config keys added after runs were saved, with the value a run saved without them is read with (their
# default), so that it stays the same experiment as a run saved with it. lr_scheduler_interval: such runs
# used the built-in cosine schedule, which steps per optimizer step whatever the interval says.
ADDED_KEYS = {"model.lr_scheduler_interval": "epoch"}
# The training budget: a resumed run may be given more of it.
BUDGET_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")
# The longest file or folder name, in bytes, of the common file systems (ext4, XFS, APFS, tmpfs).
NAME_MAX = 255


class ResumeError(ConfigurationError):
    """A run or checkpoint cannot be continued or evaluated the way the command asks."""


@dataclass(frozen=True)
class RunFolder:
    """``<save_dir>/<experiment>/<version>``; ``version`` is ``None`` for a new run (next ``version_N``)."""

    save_dir: Path
    experiment: str
    version: str | None = None

    @property
    def path(self) -> Path | None:
        return None if self.version is None else self.save_dir / self.experiment / self.version

    @classmethod
    def of_logger(cls, save_dir: Path, name: str, version: str | int | None) -> RunFolder:
        """The run a TensorBoard logger's ``save_dir``, ``name`` and configured ``version`` name (an
        int ``N`` is Lightning's ``version_N``), each of the two names checked by :func:`folder_name`."""
        experiment = folder_name(name, "the logger's name (--trainer.logger.init_args.name)")
        if isinstance(version, int):
            version = f"version_{version}"
        if version is not None:
            version = folder_name(version, "the logger's version (--trainer.logger.init_args.version)")
        return cls(save_dir, experiment, version)

    @classmethod
    def at(cls, run: Path) -> RunFolder:
        """The run whose folder is ``run``."""
        return cls(run.parent.parent, run.parent.name, run.name)

    @property
    def checkpoints(self) -> Path:
        return self.save_dir / self.experiment / str(self.version) / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    def saved_config(self) -> dict[str, Any] | None:
        """The ``config.yaml`` the run saved (None: a new run, or one that never got that far)."""
        path = self.path / CONFIG if self.path is not None else None
        if path is None or not path.is_file():
            return None
        return yaml.safe_load(path.read_text()) or {}


def evaluation_subfolder(subcommand: str, image_folder: Path | None = None, run: Path | None = None) -> str:
    """The sub-folder of ``run`` that ``subcommand`` writes into. Predictions of an image folder go to
    ``predictions_<its name>``, so they never overwrite the test split's files or ``config.yaml``; when
    that folder holds another image folder's predictions (``a/photos`` then ``b/photos``), to
    ``predictions_<name>_2``, ``_3``, ... (predicting the same folder again replaces its outputs)."""
    if subcommand != "predict" or image_folder is None:
        return SUBFOLDERS[subcommand]
    base, suffix = f"{SUBFOLDERS[subcommand]}_{image_folder.resolve().name or 'images'}", 1
    while run is not None:
        name = base if suffix == 1 else f"{base}_{suffix}"
        saved = run / name / CONFIG
        if not saved.is_file():
            return name
        root = ((yaml.safe_load(saved.read_text()) or {}).get("data") or {}).get("init_args", {}).get("root")
        if root is not None and Path(root).expanduser().resolve() == image_folder.resolve():
            return name
        suffix += 1
    return base


def experiment_name(explicit: str | None, config_files: list[Any]) -> str:
    """``--name`` if given, else the stem of the first ``--config`` file, else ``default``; a
    :class:`ConfigurationError` when it is no folder name (:func:`folder_name`)."""
    if explicit is not None:
        return folder_name(explicit, "--name")
    if not config_files:
        return DEFAULT_EXPERIMENT
    where = f"the experiment name taken from --config {config_files[0]} (give --name to choose another)"
    return folder_name(Path(str(config_files[0])).stem, where)


def folder_name(value: object, what: str) -> str:
    """``value`` as the name of one folder inside the save dir, the only place a run may write.

    A name with ``/`` or ``\\``, ``..``, an absolute path or an empty name would put the run somewhere
    else (``--name ../../x`` writes beside the project); a control character (a newline) would also
    break the scripts and tables that name the run; a name starting with ``.`` is a hidden folder,
    whose runs ``pat-seg report`` never counts; and no file system takes a name over
    :data:`NAME_MAX` bytes. Raises :class:`ConfigurationError` naming ``what`` and the value.
    """
    text = str(value)
    reason = None
    if not text:
        reason = "it is empty"
    elif holds_control_character(text):
        reason = "it holds a control character (a newline, a tab, NUL)"
    elif "/" in text or "\\" in text:
        reason = "it holds a path separator"
    elif text.startswith("."):
        reason = "it starts with '.' ('..' leaves the save dir; a hidden folder's runs are never reported)"
    elif len(text.encode("utf-8", "surrogateescape")) > NAME_MAX:
        reason = f"it is {len(text.encode('utf-8', 'surrogateescape'))} bytes long, over the {NAME_MAX} of a file name"
    if reason is not None:
        raise ConfigurationError(
            f"{what} {text!r} cannot name a run folder: {reason}. It must be one folder name inside the "
            f"save dir, e.g. 'cityscapes_pat' or 'seed-0'"
        )
    return text


def refuse_existing_run(run: RunFolder | None) -> None:
    """Refuse a new ``fit`` (no ``--ckpt_path``) into ``run`` when its folder already holds files.

    A second fit there would replace the run's ``config.yaml``, ``hparams.yaml`` and ``last.ckpt``
    and leave the first run's best checkpoint and TensorBoard events beside its own: one folder
    holding two runs that no report can tell apart. A new run (``version`` None) gets a fresh folder.
    """
    if run is None or run.path is None or not run.path.is_dir() or not any(run.path.iterdir()):
        return
    raise ResumeError(
        f"run folder {run.path} exists already; a new fit would overwrite its config.yaml and checkpoints "
        f"and mix its events with the new run's. Continue it with --ckpt_path last, give another --name "
        f"or --trainer.logger.init_args.version, or delete the folder"
    )


def run_of_checkpoint(checkpoint: str | Path) -> RunFolder | None:
    """The run a checkpoint file belongs to (``<save_dir>/<experiment>/<version>/checkpoints/x.ckpt``)."""
    path = Path(checkpoint).resolve()
    if path.parent.name != CHECKPOINTS or len(path.parents) < 4:
        return None
    return RunFolder.at(path.parent.parent)


def run_of_config(config_file: str | Path) -> RunFolder | None:
    """The run whose saved ``config.yaml`` this is (a ``config.yaml`` beside a ``checkpoints/`` folder)."""
    path = Path(str(config_file)).resolve()
    if path.name != CONFIG or not (path.parent / CHECKPOINTS).is_dir():
        return None
    return RunFolder.at(path.parent)


def run_of(ckpt_path: str | None, config_files: list[Any]) -> RunFolder | None:
    """The run a command refers to: the one holding its checkpoint file, else the one whose
    ``config.yaml`` it was given (``--ckpt_path last|best`` then name that run's checkpoints)."""
    run = run_of_checkpoint(ckpt_path) if ckpt_path not in (None, "last", "best") else None
    for config_file in config_files:
        run = run or run_of_config(config_file)
    return run


def runs_with_last_checkpoint(save_dir: Path, experiment: str) -> list[RunFolder]:
    """The runs of ``experiment`` that hold a ``checkpoints/last.ckpt``, the last written first."""
    candidates = sorted(
        (save_dir / experiment).glob(f"*/{CHECKPOINTS}/{LAST}"), key=lambda path: path.stat().st_mtime, reverse=True
    )
    return [RunFolder.at(path.parent.parent) for path in candidates]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"trainer.max_epochs": 12, ...}`` (lists stay values)."""
    if not isinstance(node, dict):
        return {prefix: node} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def yaml_value(value: Any) -> str:
    """A config value as YAML writes it inline (``null``, ``1000.0``, ``[5, 10]``, ``small``): what one
    command-line flag or one CSV field holds, and ``yaml.safe_load`` reads back."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def covered(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether dotted ``key`` is one of ``prefixes`` or lies below one."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def experiment_identity(
    config: dict[str, Any], defaults: dict[str, Any] | None = None, plumbing: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The flattened config without seeds and plumbing: equal for repeats of one experiment.

    ``defaults``: dotted keys filled in where the config lacks them (a switch added after a run was
    saved); ``plumbing``: more keys that do not identify (the loss's, from its description).
    """
    flat = {**ADDED_KEYS, **(defaults or {}), **flatten(config)}
    return {key: value for key, value in flat.items() if not covered(key, SEED_KEYS + PLUMBING + plumbing)}


def resume_identity(config: dict[str, Any], plumbing: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flattened config without plumbing and budget: what a command must share with the run it continues."""
    flat = {**ADDED_KEYS, **flatten(config)}
    return {key: value for key, value in flat.items() if not covered(key, PLUMBING + BUDGET_KEYS + plumbing)}


def identity_differences(saved: dict[str, Any], requested: dict[str, Any], plumbing: tuple[str, ...] = ()) -> list[str]:
    """``key: saved -> requested`` for each identifying key on which two configs disagree."""
    old, new = resume_identity(saved, plumbing), resume_identity(requested, plumbing)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
