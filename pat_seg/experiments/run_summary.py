"""A finished run in one row of TensorBoard's HParams table: what it was, and what it reached.

Parameters: the loss and its arguments (``loss/temperature``, ``loss/gamma``, ...), the network and
its arguments, the data module, the seed of the run (``seed_everything``) and of the data module.
Metrics: the last validation mIoU and its head and tail parts, under ``hp/`` tags of their own (logged
once, at the end of fitting), so the table sorts runs by them.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from pat_seg.losses.description import LossDescription

# Arguments that name no property of the method (they come from the data or choose a code path).
NOT_SHOWN = {"self", "ignore_index", "class_counts", "class_presence", "num_classes", "in_channels", "implementation"}
FINAL_METRICS = {"val/miou": "hp/miou", "val/miou_head": "hp/miou_head", "val/miou_tail": "hp/miou_tail"}


def init_arguments(component: Any) -> dict[str, Any]:
    """The scalar ``__init__`` arguments of ``component`` that it keeps as attributes of the same name.

    A pat-seg loss names its identifying arguments in its ``description``; other components show
    every argument but those of :data:`NOT_SHOWN`.
    """
    description = getattr(type(component), "description", None)
    if isinstance(description, LossDescription):
        names = list(description.arguments(type(component)))
    else:
        names = [name for name in inspect.signature(type(component).__init__).parameters if name not in NOT_SHOWN]
    values = {}
    for name in names:
        if not hasattr(component, name):
            continue
        value = getattr(component, name)
        if value is None or isinstance(value, (bool, int, float, str)):
            values[name] = "None" if value is None else value
    return values


def hparams_summary(module: nn.Module, trainer: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """``(params, metrics)`` for ``logger.log_hyperparams`` at the end of fitting."""
    model, loss = module.model, module.loss
    params: dict[str, Any] = {"model": type(model).__name__, "loss": type(loss).__name__}
    params.update({f"loss/{key}": value for key, value in init_arguments(loss).items()})
    params.update({f"model/{key}": value for key, value in init_arguments(model).items()})
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        params["data"] = type(datamodule).__name__
        params["data/seed"] = int(getattr(datamodule, "seed", 0))
    params["seed"] = int(os.environ.get("PL_GLOBAL_SEED", "0"))
    metrics = {}
    for tag, hp_tag in FINAL_METRICS.items():
        value = trainer.callback_metrics.get(tag)
        if isinstance(value, Tensor):
            metrics[hp_tag] = float(value)
    return params, metrics


class RunSummary(Callback):
    """Logs :func:`hparams_summary` when fitting ends, for TensorBoard's HParams tab.

    ``on_train_end`` runs before the trainer finalises its loggers, which writes ``hparams.yaml``.
    """

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params, metrics = hparams_summary(pl_module, trainer)
        for logger in trainer.loggers:
            logger.log_hyperparams(params, metrics)
