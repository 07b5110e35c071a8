"""The last line of ``pat-seg fit``: where the run is, how it ended on validation, its best checkpoint."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

# The split-wide validation numbers, in the order docs/metrics.md lists them (per-class IoUs left out).
SUMMARY_METRICS = ("miou", "miou_head", "miou_tail", "pixel_accuracy", "mean_dice", "loss")


def final_validation_metrics(callback_metrics: dict[str, Any]) -> dict[str, float]:
    """``{"miou": ..., ...}``: the :data:`SUMMARY_METRICS` of the last validation that ran."""
    values = {name: callback_metrics.get(f"val/{name}") for name in SUMMARY_METRICS}
    return {name: float(value) for name, value in values.items() if isinstance(value, Tensor) and value.numel() == 1}


def best_checkpoint(callbacks: list[Any]) -> str | None:
    """The best checkpoint a monitoring :class:`ModelCheckpoint` kept, else the last one any wrote."""
    checkpoints = [callback for callback in callbacks if isinstance(callback, ModelCheckpoint)]
    for callback in checkpoints:
        if callback.monitor is not None and callback.best_model_path:
            return str(callback.best_model_path)
    return next((str(callback.last_model_path) for callback in checkpoints if callback.last_model_path), None)


def fit_summary(trainer: Any) -> str:
    """``pat-seg fit: run DIR; val miou 0.4123, ...; best checkpoint FILE`` (each part says when it is missing)."""
    run = trainer.log_dir if trainer.logger is not None else None
    metrics = final_validation_metrics(dict(trainer.callback_metrics))
    scores = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()) or "none (validation did not run)"
    best = best_checkpoint(list(trainer.callbacks)) or "none written"
    return f"pat-seg fit: run {run or 'not logged'}; final val {scores}; best checkpoint {best}"
