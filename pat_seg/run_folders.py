"""Where a ``pat-seg`` command writes: one folder per run, named for the experiment.

A run is ``<save_dir>/<experiment>/<version>/`` (``lightning_logs/cityscapes_pat/version_0``): the
experiment name is ``--name``, else the stem of the first ``--config`` file, else ``default``.
Everything a run produces lives in its folder: TensorBoard events, ``config.yaml``, ``hparams.yaml``,
``checkpoints/``; ``pat-seg test|validate|predict`` given one of the run's checkpoints write into
``<run>/test/``, ``<run>/validate/`` and ``<run>/predictions/``; ``pat-seg fit --ckpt_path last`` (or a
checkpoint inside a run) continues in that run's folder, and TensorBoard is told to drop whatever the
interrupted process logged after the checkpoint, so the curves stay one line without repeated steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
# Sub-folder of a run that each evaluation subcommand writes into.
SUBFOLDERS = {"test": "test", "validate": "validate", "predict": "predictions"}
DEFAULT_EXPERIMENT = "default"


class ResumeError(ValueError):
    """A checkpoint cannot be used the way the command asks (missing, or past the run's budget)."""


@dataclass(frozen=True)
class RunFolder:
    """``<save_dir>/<experiment>/<version>``; ``version`` is ``None`` for a new run (next ``version_N``)."""

    save_dir: Path
    experiment: str
    version: str | None = None

    @property
    def path(self) -> Path | None:
        return None if self.version is None else self.save_dir / self.experiment / self.version

    def checkpoint(self, which: str) -> Path:
        """``last`` -> ``checkpoints/last.ckpt``; ``best`` -> the best checkpoint recorded by the run."""
        folder = self.save_dir / self.experiment / str(self.version) / CHECKPOINTS
        last = folder / "last.ckpt"
        if which == "last":
            if not last.is_file():
                raise ResumeError(f"{last} does not exist: run {folder.parent} has no last checkpoint")
            return last
        best = best_checkpoint(folder)
        if best is None:
            raise ResumeError(f"run {folder.parent} records no best checkpoint in {folder} "
                              f"(give --ckpt_path last or a checkpoint file)")
        return best


def experiment_name(explicit: str | None, config_files: list[Any]) -> str:
    """``--name`` if given, else the stem of the first ``--config`` file, else ``default``."""
    if explicit:
        return str(explicit)
    return Path(str(config_files[0])).stem if config_files else DEFAULT_EXPERIMENT


def run_of_checkpoint(checkpoint: str | Path) -> RunFolder | None:
    """The run a checkpoint file belongs to (``<save_dir>/<experiment>/<version>/checkpoints/x.ckpt``)."""
    path = Path(checkpoint).resolve()
    if path.parent.name != CHECKPOINTS or len(path.parents) < 4:
        return None
    run = path.parent.parent
    return RunFolder(run.parent.parent, run.parent.name, run.name)


def run_of_config(config_file: str | Path) -> RunFolder | None:
    """The run whose saved ``config.yaml`` this is (a ``config.yaml`` beside a ``checkpoints/`` folder)."""
    path = Path(str(config_file)).resolve()
    if path.name != "config.yaml" or not (path.parent / CHECKPOINTS).is_dir():
        return None
    run = path.parent
    return RunFolder(run.parent.parent, run.parent.name, run.name)


def run_of(ckpt_path: str | None, config_files: list[Any]) -> RunFolder | None:
    """The run a command refers to: the one holding its checkpoint file, else the one whose
    ``config.yaml`` it was given (``--ckpt_path last|best`` then name that run's checkpoints)."""
    run = run_of_checkpoint(ckpt_path) if ckpt_path not in (None, "last", "best") else None
    for config_file in config_files:
        run = run or run_of_config(config_file)
    return run


def newest_run_with_last_checkpoint(save_dir: Path, experiment: str) -> RunFolder | None:
    """The run of ``experiment`` whose ``checkpoints/last.ckpt`` was written last."""
    candidates = list((save_dir / experiment).glob(f"*/{CHECKPOINTS}/last.ckpt"))
    if not candidates:
        return None
    newest = max(candidates, key=lambda path: path.stat().st_mtime)
    return RunFolder(save_dir, experiment, newest.parent.parent.name)


def best_checkpoint(folder: Path) -> Path | None:
    """The ``best_model_path`` the run's ``ModelCheckpoint`` recorded in ``last.ckpt``, if it still exists."""
    last = folder / "last.ckpt"
    if not last.is_file():
        return None
    state = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    for key, value in state.get("callbacks", {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path"):
            best = Path(value["best_model_path"])
            candidate = best if best.is_file() else folder / best.name  # a run folder moved as a whole
            if candidate.is_file():
                return candidate
    return None


@dataclass(frozen=True)
class CheckpointProgress:
    """How far the run of a checkpoint got: epochs completed and optimizer steps taken."""

    completed_epochs: int
    global_step: int


def checkpoint_progress(checkpoint: str | Path) -> CheckpointProgress:
    """Read the progress counters of a Lightning checkpoint (memory-mapped: weights are not read)."""
    if not Path(checkpoint).is_file():
        raise ResumeError(f"checkpoint {checkpoint} does not exist")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    epochs = state.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    # Lightning restores current_epoch from the completed-epoch counter, not from state["epoch"].
    return CheckpointProgress(int(epochs.get("completed", state.get("epoch", 0))), int(state.get("global_step", 0)))


def check_resumable(checkpoint: str | Path, max_epochs: int | None, max_steps: int | None) -> CheckpointProgress:
    """The checkpoint's progress, or :class:`ResumeError` if the budget ended before it."""
    progress = checkpoint_progress(checkpoint)
    if max_epochs is not None and max_epochs >= 0 and max_epochs < progress.completed_epochs:
        raise ResumeError(
            f"cannot resume {checkpoint}: it has completed {progress.completed_epochs} epochs (global step "
            f"{progress.global_step}) but --trainer.max_epochs={max_epochs}; give max_epochs >= "
            f"{progress.completed_epochs} to continue it"
        )
    if max_steps is not None and max_steps >= 0 and max_steps < progress.global_step:
        raise ResumeError(
            f"cannot resume {checkpoint}: it is at global step {progress.global_step} but "
            f"--trainer.max_steps={max_steps}; give max_steps >= {progress.global_step} to continue it"
        )
    return progress
