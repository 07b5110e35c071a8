"""Callbacks that keep long runs safe: stop (or skip) on a non-finite loss, checkpoint on pre-emption.

Pre-emption: clusters send SIGTERM (and SLURM, with ``--signal``, SIGUSR1) some time before killing
a job. Lightning already turns SIGTERM into a clean stop after the current batch, in step on every
process; :class:`PreemptionCheckpoint` routes the extra signals to that path and writes ``last.ckpt``
where ``pat-seg fit ... --ckpt_path last`` looks for it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from pat_seg.arguments import NonNegativeInt, PositiveInt, check_choice, check_number
from pat_seg.exceptions import ConfigurationError, RunFailure

log = logging.getLogger(__name__)

# What NonFiniteLossGuard does on a NaN or Inf training loss: stop the run, or skip the batch.
NonFiniteAction = Literal["stop", "skip"]


class NonFiniteLossError(RunFailure):
    """The training loss became NaN or Inf."""


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold a NaN or Inf."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


class NonFiniteLossGuard(L.Callback):
    """Stop the run, or skip the batch, when the training loss is NaN or Inf; never checkpoint NaN weights.

    The loss is checked before ``backward``, so the weights are untouched when the run stops. The
    decision is agreed by all processes (one boolean all-reduce per step), so DDP ranks never diverge.

    Args:
        action: ``"stop"`` raises :class:`NonFiniteLossError` naming the step and batch; ``"skip"``
            drops the batch's gradients (the optimizer then leaves every parameter alone) and logs a
            warning. With gradient accumulation the whole accumulated step is dropped.
        max_skipped: with ``"skip"``, stop anyway after this many skipped batches (a diverged run
            would otherwise skip forever).
    """

    def __init__(self, action: NonFiniteAction = "stop", max_skipped: NonNegativeInt = 100) -> None:
        self.action = check_choice("action", action, NonFiniteAction)
        self.max_skipped = check_number("max_skipped", max_skipped, at_least=0, integer=True)
        self.skipped = 0
        self._batch_idx = -1
        self._drop_gradients = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        finite = trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss.detach()).all()), all=True)
        if finite:
            return
        where = (
            f"non-finite training loss {loss.detach().float().item()} (on at least one process) at global step "
            f"{trainer.global_step}, epoch {trainer.current_epoch}, batch {self._batch_idx}"
        )
        if self.action == "stop" or self.skipped >= self.max_skipped:
            raise NonFiniteLossError(f"{where}; the weights were not updated with it")
        self.skipped += 1
        self._drop_gradients = True
        log.warning("%s: skipping the batch (%d skipped so far)", where, self.skipped)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._drop_gradients:
            # Parameters whose .grad is None are left alone by torch optimizers (no step, no moments).
            for parameter in pl_module.parameters():
                parameter.grad = None
            self._drop_gradients = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = non_finite_tensors(checkpoint["state_dict"])
        if bad:
            raise NonFiniteLossError(
                f"refusing to write a checkpoint at global step {trainer.global_step}: "
                f"{len(bad)} tensors hold NaN/Inf, e.g. {bad[:3]}"
            )

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps and when training ends.

    Lightning's ``ModelCheckpoint(every_n_train_steps=N, save_last=True)`` alone skips the final
    steps when the run length is not a multiple of N; the end of training is saved here (also when
    it coincides with a multiple of N: one extra write per run buys not depending on when Lightning
    last saved).
    """

    def __init__(self, every_n_train_steps: PositiveInt = 50, dirpath: str | None = None) -> None:
        every_n_train_steps = check_number("every_n_train_steps", every_n_train_steps, at_least=1, integer=True)
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True)

    @property
    def last_checkpoint_path(self) -> Path:
        """``<dirpath>/last.ckpt``, where ``--ckpt_path last`` looks."""
        if self.dirpath is None:
            raise RuntimeError("StepCheckpoint has no directory before the trainer sets it up")
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:  # type: ignore[attr-defined]  # set in Trainer.__init__, not declared
            trainer.save_checkpoint(self.last_checkpoint_path, weights_only=False)
            self.last_model_path = str(self.last_checkpoint_path)


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM (and ``signals``, default SIGUSR1), finish the batch, write ``last.ckpt`` and exit.

    The checkpoint goes to the directory of the first ``ModelCheckpoint`` with ``save_last`` (where
    ``--ckpt_path last`` finds it), else ``<default_root_dir>/checkpoints``. Under SLURM with
    auto-requeue Lightning owns SIGUSR1 (save + requeue) and this callback leaves it alone.
    """

    def __init__(self, signals: list[str] | None = None) -> None:
        names = ["SIGUSR1"] if signals is None else list(signals)
        for name in names:
            if not isinstance(getattr(signal, name, None), signal.Signals):
                raise ConfigurationError(f"unknown signal {name!r}; expected a name such as 'SIGUSR1' or 'SIGUSR2'")
        self.signals = [signal.Signals[name] for name in names]
        self._previous: dict[signal.Signals, Any] = {}
        self.saved_path: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        # Multi-process strategies expose their cluster environment; a single-device run under SLURM
        # gets Lightning's default SLURM environment, which requeues on SIGUSR1.
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if environment is None and SLURMEnvironment.detect():
            environment = SLURMEnvironment()
        requeue = (
            environment.requeue_signal
            if isinstance(environment, SLURMEnvironment) and environment.auto_requeue
            else None
        )
        for signum in self.signals:
            if signum == requeue:
                continue
            self._previous[signum] = signal.signal(signum, self._forward_as_sigterm)

    @staticmethod
    def _forward_as_sigterm(signum: int, frame: Any) -> None:
        # Lightning's SIGTERM handler stops every rank in step after the current batch.
        os.kill(os.getpid(), signal.SIGTERM)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                return (
                    Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
                )
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = str(path)
        log.warning("pre-empted at global step %d: saved %s", trainer.global_step, path)
