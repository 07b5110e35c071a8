"""A finished run in one row of TensorBoard's HParams table, and in its ``hparams.yaml``.

Parameters: the network and its constructor arguments (``model/base_channels``, ...), the loss and the
arguments that identify it (``loss/temperature``, ..., from its description), the data module, and the
seeds (``seed`` for ``seed_everything``, ``data/seed``). They are read from the run's config, as
``pat-seg report`` reads them. Metrics: the last validation mIoU and its head and tail parts, under
``hp/`` tags of their own (logged once, at the end of fitting), so the table sorts runs by them.

TensorBoard takes the table's columns from one run's ``_hparams_/experiment`` declaration (the first
it reads) and ignores the others'. So every run declares every column pat-seg can produce
(:func:`declared_columns`); a run leaves the columns of other losses and networks empty.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from google.protobuf import struct_pb2
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch import Tensor

from pat_seg.atomic_files import write_atomically
from pat_seg.experiments.class_identity import class_name, described, resolve
from pat_seg.experiments.run_folder import HPARAMS, SEED_KEYS, flatten
from pat_seg.experiments.run_status import SUMMARY
from pat_seg.experiments.runs import class_and_args
from pat_seg.losses import BEYOND_PAPER_LOSSES, PAPER_LOSSES
from pat_seg.losses.description import FROM_THE_DATA
from pat_seg.models import PAPER_MODELS

# Arguments that name no property of the method (they come from the data or choose a code path).
NOT_SHOWN = {*FROM_THE_DATA, "num_classes", "in_channels"}
FINAL_METRICS = {"val/miou": "hp/miou", "val/miou_head": "hp/miou_head", "val/miou_tail": "hp/miou_tail"}
SEED_COLUMNS = dict(zip(("seed", "data/seed"), SEED_KEYS))
LAST_VALIDATION = "pat_seg_last_validation"  # checkpoint key: the last validation's FINAL_METRICS values


def shown_arguments(node: Any) -> tuple[str, dict[str, Any]]:
    """``(class name, arguments the table shows)`` of a config's ``class_path`` node.

    A loss with a ``description`` (pat-seg's, or a user's own) shows the arguments its description says
    identify a run; any other class every argument but those of :data:`NOT_SHOWN`. The name is the
    class's (:func:`~pat_seg.experiments.class_identity.class_name`: with its module where it is not
    pat-seg's but one of pat-seg's has that name).
    """
    path, args = class_and_args(node)
    cls, description = resolve(path), described(path)
    if cls is not None and description is not None:
        names = list(description.arguments(cls))
    else:
        names = [arg for arg in args if arg not in NOT_SHOWN]
    return class_name(path) if path else "", {arg: args[arg] for arg in names if arg in args}


def hparams_summary(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """``(parameters, metrics)`` of a run: its saved ``config`` and the trainer's ``callback_metrics``."""
    model = config.get("model") or {}
    params: dict[str, Any] = {}
    for kind, node in (("model", model.get("model")), ("loss", model.get("loss")), ("data", config.get("data"))):
        name, args = shown_arguments(node)
        params[kind] = name
        if kind != "data":
            params.update({f"{kind}/{arg}": value for arg, value in args.items()})
    flat = flatten(dict(config))
    params.update({column: flat.get(key) for column, key in SEED_COLUMNS.items()})
    final = {hp: float(value) for tag, hp in FINAL_METRICS.items() if isinstance(value := metrics.get(tag), Tensor)}
    return params, final


def column_type(value: Any) -> api_pb2.DataType:
    """The column type a value fills: TensorBoard prints every number to 5 significant digits (seed 0
    as 0.0000, depth 4 as 4.0000), so only floats are numbers; integers, None and lists are text."""
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    return api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, float) else api_pb2.DATA_TYPE_STRING


def declared_columns() -> dict[str, api_pb2.DataType]:
    """Every parameter column pat-seg can produce, typed by its argument's default: the networks of
    :data:`PAPER_MODELS` and every loss pat-seg ships, with the data module and the seeds."""
    columns = dict.fromkeys(("model", "loss", "data", *SEED_COLUMNS), api_pb2.DATA_TYPE_STRING)
    for kind, classes in (("loss", (*PAPER_LOSSES, *BEYOND_PAPER_LOSSES)), ("model", PAPER_MODELS)):
        for cls in classes:
            defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
            _, shown = shown_arguments({"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": defaults})
            columns.update({f"{kind}/{arg}": column_type(default) for arg, default in shown.items()})
    return columns


def cell(value: Any, data_type: api_pb2.DataType) -> struct_pb2.Value:
    """``value`` as a cell of a column of ``data_type`` (text where it is not of the column's kind)."""
    if data_type == api_pb2.DATA_TYPE_BOOL and isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if data_type == api_pb2.DATA_TYPE_FLOAT64 and isinstance(value, (int, float)) and not isinstance(value, bool):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=str(value))


def hparams_summaries(params: Mapping[str, Any]) -> list[summary_pb2.Summary]:
    """TensorBoard's experiment (:func:`declared_columns` and any other column of ``params``: a
    network or loss of the user's own), session start and session end summaries for one run."""
    columns = declared_columns()
    columns.update({name: column_type(value) for name, value in params.items() if name not in columns})
    infos = [api_pb2.HParamInfo(name=name, type=data_type) for name, data_type in columns.items()]
    for info in infos:
        if info.type == api_pb2.DATA_TYPE_BOOL:  # both values listed: the tab filters them by checkbox
            info.domain_discrete.extend([False, True])
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in FINAL_METRICS.values()],
    )
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())  # no group name: one row per run
    for name, value in params.items():
        start.hparams[name].CopyFrom(cell(value, columns[name]))
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    data = {
        metadata.EXPERIMENT_TAG: plugin_data_pb2.HParamsPluginData(experiment=experiment),
        metadata.SESSION_START_INFO_TAG: plugin_data_pb2.HParamsPluginData(session_start_info=start),
        metadata.SESSION_END_INFO_TAG: plugin_data_pb2.HParamsPluginData(session_end_info=end),
    }
    return [
        summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content))]
        )
        for tag, content in data.items()
    ]


class RunSummary(Callback):
    """Writes the run's HParams row and adds it to ``hparams.yaml`` (under ``summary``) when fitting ends.

    ``config``: the run's config as saved in its ``config.yaml``.

    The final metrics are those of the last validation, as the trainer holds them. A run resumed from
    a checkpoint written after its last validation (``--ckpt_path last``) does not validate again, so
    the values of the last validation are kept in this callback's checkpointed state and used when the
    trainer holds none: the summary of a resumed run is the uninterrupted run's.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.validated: dict[str, float] = {}  # the last validation's FINAL_METRICS tags

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {tag: trainer.callback_metrics.get(tag) for tag in FINAL_METRICS}
        self.validated = {tag: float(value) for tag, value in values.items() if isinstance(value, Tensor)}

    # A checkpoint key of its own rather than callback state: evaluations (``pat-seg test``) load the
    # checkpoint without this callback, and Lightning warns of every callback state nobody loads.
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[LAST_VALIDATION] = dict(self.validated)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self.validated = {str(tag): float(value) for tag, value in (checkpoint.get(LAST_VALIDATION) or {}).items()}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        current = dict(trainer.callback_metrics)
        if not any(tag in current for tag in FINAL_METRICS):  # resumed after its last validation
            current.update({tag: torch.tensor(value) for tag, value in self.validated.items()})
        params, metrics = hparams_summary(self.config, current)
        step = trainer.global_step
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics)
                continue
            logger.log_metrics(metrics, step)
            writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams writes them
            for summary in hparams_summaries(params):
                writer.add_summary(summary, step)
            add_to_hparams_yaml(logger, {"step": step, "parameters": params, "metrics": metrics})


def add_to_hparams_yaml(logger: TensorBoardLogger, summary: dict[str, Any]) -> None:
    """Rewrite the logger's ``hparams.yaml`` whole, with ``summary`` under its own key (Lightning writes
    the file only while it does not exist, so a summary logged at the end would not reach it)."""
    logger.hparams[SUMMARY] = summary
    text = yaml.dump(dict(logger.hparams)).encode()  # the serializer Lightning uses without omegaconf
    write_atomically(Path(logger.log_dir) / HPARAMS, lambda file: file.write(text), remove_leftovers=True)
