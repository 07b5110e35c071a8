"""The private Lightning and torch APIs pat-seg relies on: fail by name when a release drops one."""

from __future__ import annotations

import inspect

from lightning.pytorch.cli import LightningCLI

from pat_seg.cli import PatSegCLI


def test_lightning_cli_still_has_parse_ckpt_path() -> None:
    # PatSegCLI overrides it so that resuming does not re-parse a checkpoint's hyperparameters into
    # the link targets num_classes / ignore_index. If it is gone, the override silently does nothing.
    method = getattr(LightningCLI, "_parse_ckpt_path", None)
    assert callable(method), "lightning.pytorch.cli.LightningCLI._parse_ckpt_path no longer exists"
    assert list(inspect.signature(method).parameters) == ["self"], (
        f"LightningCLI._parse_ckpt_path changed its signature to {inspect.signature(method)}"
    )
    assert PatSegCLI._parse_ckpt_path is not method


def test_torch_summary_writer_still_has_get_file_writer() -> None:
    # RunSummary writes TensorBoard's hparams summaries through it, as Lightning's own log_hyperparams does.
    from torch.utils.tensorboard import SummaryWriter

    method = getattr(SummaryWriter, "_get_file_writer", None)
    assert callable(method), "torch.utils.tensorboard.SummaryWriter._get_file_writer no longer exists"
    assert list(inspect.signature(method).parameters) == ["self"]


def test_lightning_still_hands_a_cli_built_module_its_config_through_given_hyperparameters() -> None:
    # SegmentationModule keeps its network and loss configs as hyperparameters (load_from_checkpoint
    # rebuilds them) only when LightningCLI built it, which it tells by this context variable. Built by
    # LightningCLI's own instantiator (fed a config as a CLI holds it), the module must keep the config;
    # built in Python, it must keep no objects.
    from contextvars import ContextVar
    from types import SimpleNamespace

    from lightning.pytorch.cli import _InstantiatorFn
    from lightning.pytorch.core.mixins import hparams_mixin

    from pat_seg.losses import CrossEntropyLoss
    from pat_seg.models import UNet
    from pat_seg.module import SegmentationModule

    variable = getattr(hparams_mixin, "_given_hyperparameters", None)
    assert isinstance(variable, ContextVar), "lightning's hparams_mixin._given_hyperparameters is gone"
    network = {"class_path": "pat_seg.models.UNet", "init_args": {"num_classes": 3, "base_channels": 4, "depth": 1}}
    loss = {"class_path": "pat_seg.losses.CrossEntropyLoss", "init_args": {"ignore_index": 255}}
    cli = SimpleNamespace(_dump_config=lambda: None, config_dump={"model": {"model": network, "loss": loss}})
    built = _InstantiatorFn(cli=cli, key="model")(  # type: ignore[arg-type]  # the parts of a LightningCLI it reads
        SegmentationModule,
        model=UNet(3, base_channels=4, depth=1),
        loss=CrossEntropyLoss(),
        num_classes=3,
        applied_instantiation_links={},
    )
    assert built.hparams["model"] == network and built.hparams["loss"] == loss
    assert built.hparams["_instantiator"] == "lightning.pytorch.cli.instantiate_module"
    plain = SegmentationModule(UNet(3, base_channels=4, depth=1), CrossEntropyLoss(), num_classes=3)
    assert "model" not in plain.hparams and "loss" not in plain.hparams
