"""Callbacks that keep long runs safe: stop (or skip) on a non-finite loss, checkpoint on interruption.

Interruption: Ctrl-C sends SIGINT; clusters send SIGTERM (and SLURM, with ``--signal``, SIGUSR1) some
time before killing a job. :class:`PreemptionCheckpoint` holds each until the run is at a point that
a resume continues exactly (docs/distributed.md), stops it there through Lightning's SIGTERM path
(every process in step), writes ``last.ckpt`` where ``pat-seg fit ... --ckpt_path last`` looks for
it, and exits with 128 + the signal's number. :class:`StepCheckpoint` writes ``last.ckpt`` every N
steps, at such points only.
"""

from __future__ import annotations

import logging
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


def validation_may_follow(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether the trainer may validate right after training batch ``batch_idx``: the epoch's last batch,
    or a multiple of ``val_check_batch`` (``val_check_interval``). Erring towards yes only moves a save
    or a stop to the end of that validation or epoch."""
    epoch_loop = trainer.fit_loop.epoch_loop
    if epoch_loop.batch_progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches:
        return True
    every = trainer.val_check_batch
    if not isinstance(every, int) or every < 1:
        return False
    return (batch_idx + 1) % every == 0 or (trainer.fit_loop.total_batch_idx + 1) % every == 0


def budget_reached(trainer: L.Trainer) -> bool:
    """Whether the optimizer steps of the budget (``max_steps``) are all taken."""
    return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps


def final_epoch(trainer: L.Trainer) -> bool:
    """Whether the epoch under way is the budget's last (``max_epochs``)."""
    return (
        trainer.max_epochs is not None and trainer.max_epochs >= 0 and trainer.current_epoch + 1 >= trainer.max_epochs
    )


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps and when training ends.

    Lightning's ``ModelCheckpoint(every_n_train_steps=N, save_last=True)`` alone skips the final
    steps when the run length is not a multiple of N; the end of training is saved here (also when
    it coincides with a multiple of N: one extra write per run buys not depending on when Lightning
    last saved).

    A step after which the trainer validates (an epoch's last) is saved when that validation ends
    (or, where none runs, when the epoch ends) instead of at once: Lightning resumes a checkpoint
    written between an epoch's last step and its validation past that validation, counting the epoch
    as done, so the epoch would never be validated -- the final epoch's validation, whose metrics are
    the run's result, included. The budget's last step is saved by the end of training only.
    """

    def __init__(self, every_n_train_steps: PositiveInt = 50, dirpath: str | None = None) -> None:
        every_n_train_steps = check_number("every_n_train_steps", every_n_train_steps, at_least=1, integer=True)
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True)
        self.every_n_train_steps = every_n_train_steps
        self._deferred = False  # a step's save waits for the end of the validation that follows it

    @property
    def last_checkpoint_path(self) -> Path:
        """``<dirpath>/last.ckpt``, where ``--ckpt_path last`` looks."""
        if self.dirpath is None:
            raise RuntimeError("StepCheckpoint has no directory before the trainer sets it up")
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if budget_reached(trainer):
            # on_train_end saves it, after the summary: a checkpoint at the budget is never resumed, so
            # one written here and killed before that end would leave a run that can never finish.
            return
        if validation_may_follow(trainer, batch_idx):
            self._deferred = self._deferred or trainer.global_step % self.every_n_train_steps == 0
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self._save_deferred(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # At the end of the final epoch Lightning would resume a checkpoint as finished without ever
        # reaching the end of training (no summary): on_train_end saves it instead, moments later.
        if not final_epoch(trainer):
            self._save_deferred(trainer)

    def _save_deferred(self, trainer: L.Trainer) -> None:
        # At the budget's last step, on_train_end saves (a checkpoint at the budget is not resumed).
        if self._deferred and not budget_reached(trainer):
            self._save(trainer)
        self._deferred = False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:  # type: ignore[attr-defined]  # set in Trainer.__init__, not declared
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.last_checkpoint_path, weights_only=False)
        self.last_model_path = str(self.last_checkpoint_path)


# What each stop signal's first arrival says; a second Ctrl-C raises KeyboardInterrupt at once.
STOPPING = (
    "stopping after the current training step (or the validation under way or after it), then saving "
    "last.ckpt; press Ctrl-C again to stop at once without saving"
)


class PreemptionCheckpoint(L.Callback):
    """Stop on SIGINT (Ctrl-C), SIGTERM and ``signals`` (default SIGUSR1) where a resume is exact: write
    ``last.ckpt`` and exit with 128 + the signal's number and a line saying how to continue.

    The signal is held until the optimizer step under way has finished, or, where a validation follows
    that step or is under way, until that validation has finished: Lightning resumes a checkpoint
    written between an epoch's last step and its validation past the validation, and one written inside
    a validation with only part of it, so the epoch's metrics would be lost or wrong. The stop then goes
    through Lightning's SIGTERM path, which stops every process in step after that point, and
    ``last.ckpt`` goes to the directory of the first ``ModelCheckpoint`` with ``save_last`` (where
    ``pat-seg fit ... --ckpt_path last`` finds it), else ``<default_root_dir>/checkpoints``. A run whose
    budget ends at that point is let finish (a checkpoint at the budget cannot be continued). A second
    Ctrl-C stops at once, writing nothing (``last.ckpt`` stays the previous one). Outside training (data
    preparation, the sanity check) the signals act as they do without this callback. Under SLURM with
    auto-requeue Lightning owns SIGUSR1 (save + requeue) and this callback leaves it alone.
    """

    def __init__(self, signals: list[str] | None = None) -> None:
        names = ["SIGUSR1"] if signals is None else list(signals)
        for name in names:
            if not isinstance(getattr(signal, name, None), signal.Signals):
                raise ConfigurationError(f"unknown signal {name!r}; expected a name such as 'SIGUSR1' or 'SIGUSR2'")
        self.signals = [signal.Signals[name] for name in names]
        self._previous: dict[signal.Signals, Any] = {}
        self.requested: signal.Signals | None = None
        self.saved_path: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its SIGTERM handler (which this one wraps).
        if threading.current_thread() is not threading.main_thread():
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
        self.requested = None
        for signum in dict.fromkeys([signal.SIGINT, signal.SIGTERM, *self.signals]):
            if signum != requeue:
                self._previous[signum] = signal.signal(signum, self._hold)

    def _hold(self, signum: int, frame: Any) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum)
            log.warning("%s: %s", self.requested.name, STOPPING)
        elif signum == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt

    def _stop(self, trainer: L.Trainer) -> None:
        """Hand the held signal to Lightning's SIGTERM handler: every process stops after this point."""
        lightning = self._previous.get(signal.SIGTERM)
        if callable(lightning):
            lightning(signal.SIGTERM, None)
        else:  # no handler of Lightning's (not the main thread, or a platform without SIGTERM handling)
            raise SIGTERMException

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.requested is not None and not validation_may_follow(trainer, batch_idx) and not budget_reached(trainer):
            self._stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.requested is None or trainer.sanity_checking or budget_reached(trainer):
            return
        epoch_ends = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if not (epoch_ends and final_epoch(trainer)):
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.requested is not None and not final_epoch(trainer) and not budget_reached(trainer):
            self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.requested is not None:
            log.warning("%s: the run reached the end of its budget before it could stop", self.requested.name)
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
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
        training = bool(self._previous)
        self._restore()
        if not isinstance(exception, SIGTERMException):
            return
        signum = self.requested or signal.SIGTERM
        exception.code = 128 + signum  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
        if not training or trainer.sanity_checking:
            return  # stopped outside training (Lightning's own handler): no consistent state to save
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = str(path)
        if trainer.is_global_zero:
            log.warning(
                "pre-empted by %s at global step %d (epoch %d): saved %s; continue with: %s",
                signum.name,
                trainer.global_step,
                trainer.current_epoch,
                path,
                continue_command(trainer, path),
            )


def continue_command(trainer: L.Trainer, checkpoint: Path) -> str:
    """The command that continues the run: its saved ``config.yaml`` and ``--ckpt_path last``."""
    config = Path(trainer.log_dir) / "config.yaml" if trainer.log_dir else None
    if config is not None and config.is_file():
        return f"pat-seg fit --config {config} --ckpt_path last"
    return f"pat-seg fit <the same --config files and flags> --ckpt_path {checkpoint}"
