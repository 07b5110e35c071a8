"""The LightningModule that trains any pat-seg model with any pat-seg loss."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn
from torch.utils.data import default_collate
from torchmetrics.aggregation import MeanMetric

from pat_seg.arguments import check_choice, check_number
from pat_seg.exceptions import ConfigurationError
from pat_seg.experiments.checkpoint_files import checkpoint_globals, read_checkpoint
from pat_seg.losses import PixelLoss
from pat_seg.losses.hooks import TakesClassCounts, TakesClassPresence, TakesEpoch, check_hooks
from pat_seg.metrics import SegmentationMetrics
from pat_seg.models import SegmentationNetwork
from pat_seg.models.base import min_input_size
from pat_seg.validation import check_batch

# The __init__ arguments that are objects (classes and their arguments in a config).
BUILT_FROM_CONFIG = ("model", "loss", "optimizer", "lr_scheduler")
# When a configured lr_scheduler steps: after every epoch (as LightningCLI steps one) or every optimizer step.
SchedulerInterval = Literal["epoch", "step"]


def unimported_classes(node: Any) -> list[str]:
    """The dotted ``class_path`` values anywhere in ``node`` (a config or a checkpoint's hyperparameters)
    whose module is not imported: loading them would import it, running its code."""
    if isinstance(node, list):
        return [path for item in node for path in unimported_classes(item)]
    if not isinstance(node, dict):
        return []
    found = [path for value in node.values() for path in unimported_classes(value)]
    path = node.get("class_path")
    if isinstance(path, str) and "." in path and path.rpartition(".")[0] not in sys.modules:
        found.append(path)
    return found


def check_optimizer(optimizer: OptimizerCallable) -> None:
    """Refuse an optimizer argument its class refuses (a negative ``lr``: torch's ``ValueError``) now, by
    building the optimizer once on a stand-in parameter, and not when training starts, after the run's
    folder exists. Any other error is left to the real build, which has the network's parameters."""
    try:
        optimizer([nn.Parameter(torch.zeros(1))])
    except ValueError as error:
        raise ConfigurationError(f"optimizer: {error}") from None
    except Exception:  # noqa: BLE001 - e.g. an optimizer that needs a process group: judged when built
        pass


def _images_to_channels_last(model: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the network's input image in channels-last memory format, like its weights."""
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


class SegmentationModule(L.LightningModule):
    """Semantic segmentation: ``model`` gives logits, ``loss`` trains them, metrics judge ``argmax``.

    Args:
        model: network mapping ``[B, C, H, W]`` images to ``[B, num_classes, H, W]`` logits: one of
            :mod:`pat_seg.models` (by name, e.g. ``UNet``) or any ``nn.Module`` class path.
        loss: a :mod:`pat_seg.losses` loss (``forward(logits, target) -> scalar``; by name, e.g.
            ``PATLoss``) or any ``nn.Module`` class path with that call. The hooks of
            :mod:`pat_seg.losses.hooks` give a loss the training class counts or presence at setup and
            each epoch's number (docs/extending.md).
        optimizer: optimizer factory; the default ``torch.optim.Adam`` uses lr 1e-3, as the authors.
        lr_scheduler: scheduler factory (``--model.lr_scheduler StepLR``). ``None`` (default) with
            ``cosine_annealing=True`` anneals the learning rate to 0 by cosine over the whole run (every
            optimizer step), as the authors.
        lr_scheduler_interval: when a configured ``lr_scheduler`` steps: after every ``"epoch"`` (the
            default, as LightningCLI steps one) or every optimizer ``"step"``. The default cosine
            schedule always steps per optimizer step.
        cosine_annealing: use the default cosine schedule when ``lr_scheduler`` is None.
        num_classes / ignore_index: linked from the data module by the CLI.
        class_names: names used in per-class metric tags (default: the data module's).
        channels_last: keep the network's weights and the input images in channels-last memory
            format (faster convolutions with tensor cores under mixed precision).
        compile_model: compile the network's forward with ``torch.compile`` when the trainer sets
            the model up (in place: checkpoints keep the plain parameter names).
    """

    def __init__(
        self,
        model: SegmentationNetwork | nn.Module,
        loss: PixelLoss | nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: SchedulerInterval = "epoch",
        cosine_annealing: bool = True,
        num_classes: int = 9,
        ignore_index: int = 255,
        class_names: list[str] | None = None,
        channels_last: bool = False,
        compile_model: bool = False,
    ) -> None:
        super().__init__()
        check_number("num_classes", num_classes, at_least=2, integer=True)
        check_choice("lr_scheduler_interval", lr_scheduler_interval, SchedulerInterval)
        check_optimizer(optimizer)
        check_hooks(loss)
        if isinstance(loss, PixelLoss) and loss.reduction == "none":
            raise ConfigurationError(
                f"{type(loss).__name__}(reduction='none') returns a loss per pixel; training needs one number "
                f"per step: use reduction='mean' (the default) or 'sum'"
            )
        # Built by LightningCLI, the hyperparameters are the module's config as the CLI saves it: network,
        # loss, optimizer and scheduler as class paths and init args (plain values, which a weights-only
        # checkpoint holds), from which load_from_checkpoint rebuilds them. Built in Python, those four are
        # objects that a weights-only checkpoint cannot hold: they are left out (load_from_checkpoint then
        # takes them as arguments).
        configured = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=[] if configured else list(BUILT_FROM_CONFIG))
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self._channels_last_hook: Any = None
        # The data module's class names, when the module was given none (see hparams_initial).
        self._data_class_names: list[str] | None = None
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index, class_names)
        self.test_metrics = SegmentationMetrics(num_classes, ignore_index, class_names)
        # Loss means over images, as sums and counts reduced over processes: exact under DDP, where
        # Lightning's own epoch mean would average the per-process means.
        self.mean_losses = nn.ModuleDict({f"{split}_loss": MeanMetric() for split in ("train", "val", "test")})
        # The last split-wide confusion matrix per prefix ("val", "test"), for callbacks that draw it.
        self.confusion_matrices: dict[str, Tensor] = {}

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> SegmentationModule:
        """The module of a ``pat-seg fit`` checkpoint, network and loss rebuilt from its hyperparameters.

        As Lightning's ``load_from_checkpoint``, with nothing from the file able to run code: it is read
        with ``torch.load(weights_only=True)`` (``weights_only=False`` is refused), and the classes its
        hyperparameters name are taken only from modules already imported: ``import mymod`` before
        reloading a run of ``--model.loss mymod.MyLoss``. ``kwargs`` replace hyperparameters
        (``model=..., loss=...`` for a checkpoint of a module built in Python, which holds neither).
        """
        if weights_only is False:
            raise ConfigurationError("pat-seg never loads a checkpoint with weights_only=False (it could run code)")
        local = isinstance(checkpoint_path, (str, Path))
        if local and "://" in str(checkpoint_path):
            raise ConfigurationError(f"{checkpoint_path}: download the checkpoint and load the local file")
        # The hyperparameters, read first (a file memory-mapped: no second copy of the weights; a file
        # object is left where it was, for Lightning to read again), with the allow-list every
        # pat-seg reader uses and a named error for a file that would run code.
        checkpoint = read_checkpoint(checkpoint_path)
        hyper_parameters = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY) or {}
        named = {key: value for key, value in hyper_parameters.items() if key not in kwargs}
        missing = sorted(set(unimported_classes(named)))
        if missing:
            modules = sorted({path.rpartition(".")[0] for path in missing})
            raise ConfigurationError(
                f"checkpoint {checkpoint_path} names {', '.join(missing)}, from modules not imported yet; "
                f"reloading imports no module a file names (that would run its code): import {', '.join(modules)} first"
            )
        with checkpoint_globals():  # Lightning's own torch.load(weights_only=True), the same allow-list
            loaded = super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only=True, **kwargs
            )
        assert isinstance(loaded, SegmentationModule)
        # Rebuilt outside LightningCLI, the module kept none of the classes' configs: put them back, so that
        # its own checkpoints reload the same way.
        loaded.hparams.update({key: value for key, value in named.items() if key not in loaded.hparams})
        return loaded

    @property
    def hparams_initial(self) -> AttributeDict:
        """The hyperparameters Lightning logs (hparams.yaml), with ``class_names`` filled in from the data
        module when the module was given none: Lightning logs them after :meth:`setup`, and would
        otherwise overwrite the names :meth:`record_hparams` recorded with the argument's ``None``."""
        initial = super().hparams_initial
        names = getattr(self, "_data_class_names", None)  # None before __init__ has set it
        datamodule = getattr(self._trainer, "datamodule", None)
        # A data module that saved its own class_names is logged beside these: Lightning refuses a key
        # whose two values differ, so its value is left to stand alone.
        if "class_names" in getattr(datamodule, "hparams_initial", {}):
            return initial
        if initial.get("class_names") is None and names is not None:
            initial["class_names"] = list(names)
        return initial

    def record_hparams(self, **values: Any) -> None:
        """Record values that are not ``__init__`` arguments in every logger's hyperparameters (hparams.yaml).

        ``self.hparams`` is left alone: it goes into checkpoints, and LightningCLI parses a checkpoint's
        hyperparameters back as ``__init__`` arguments when resuming, where unknown keys would be rejected.
        """
        for logger in self.loggers:
            logger.log_hyperparams(values)

    # --- setup: class names and counts come from the data module ---------------------------------
    def setup(self, stage: str) -> None:
        recorded: dict[str, Any] = {
            "model_name": type(self.model).__name__,
            "loss_name": type(self.loss).__name__,
            "loss_repr": repr(self.loss),
        }
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            self.record_hparams(**recorded)
            return
        size = getattr(datamodule, "size", None)
        if size is not None:  # the protocol size of every batch: refused before any work
            self.check_input_size(int(size[0]), int(size[-1]), given="the data module's size is")
        data_classes = getattr(datamodule, "num_classes", self.num_classes)
        if data_classes != self.num_classes:
            raise ConfigurationError(
                f"the data module has {data_classes} classes but the module was built with "
                f"num_classes={self.num_classes}"
            )
        names = getattr(datamodule, "class_names", None)
        if names is not None and self.hparams.get("class_names") is None:
            for metrics in (self.val_metrics, self.test_metrics):
                metrics.class_names = list(names)
            self._data_class_names = list(names)
        recorded["class_names"] = list(self.val_metrics.class_names)
        if stage == "fit" and self._summary_counts_flops() and hasattr(datamodule, "dataset"):
            # The model summary counts FLOPs on this input (one validation image); without one it prints 0.
            # Loaders yield images as stored (uint8, pat_seg.data.base): the network gets what the data
            # module's transfer hook makes of them, float32 at the evaluation size.
            batch = datamodule.on_after_batch_transfer(default_collate([datamodule.dataset("val")[0]]), 0)
            self.example_input_array = torch.zeros_like(batch["image"])
        # Prediction needs no class statistics (and an unlabelled image folder has none).
        if stage != "predict" and hasattr(datamodule, "class_statistics"):
            statistics = self._shared_class_statistics(datamodule)
            counts = [int(c) for c in statistics.pixels]
            recorded.update(
                class_counts=counts, class_image_counts=list(statistics.images), num_train_images=statistics.num_images
            )
            for metrics in (self.val_metrics, self.test_metrics):
                metrics.set_class_counts(counts)
            # The statistics hooks of pat_seg.losses.hooks (docs/extending.md): counts given to the loss win.
            if (
                isinstance(self.loss, TakesClassCounts)
                and self.loss.needs_class_counts
                and self.loss.class_counts is None
            ):
                self.loss.set_class_counts([float(count) for count in counts])
            if (
                isinstance(self.loss, TakesClassPresence)
                and self.loss.needs_class_presence
                and self.loss.class_presence is None
            ):
                self.loss.set_class_presence(statistics.presence)
        self.record_hparams(**recorded)  # one call: a logger with a default hp_metric writes one per call

    def _summary_counts_flops(self) -> bool:
        """Whether the trainer prints a model summary that would count FLOPs on an example input: not
        without a summary, and not with ``compile_model`` (one more shape would be one more compilation)."""
        if self.example_input_array is not None or self.hparams["compile_model"] or not self.trainer.is_global_zero:
            return False
        return any(isinstance(callback, ModelSummary) for callback in getattr(self.trainer, "callbacks", []))

    def _shared_class_statistics(self, datamodule: Any) -> Any:
        """Training class statistics computed on rank 0 and broadcast, so every process holds the same."""
        statistics = datamodule.class_statistics if self.trainer.is_global_zero else None
        statistics = self.trainer.strategy.broadcast(statistics, src=0)
        if not self.trainer.is_global_zero:
            datamodule.class_statistics = statistics
        return statistics

    def configure_model(self) -> None:
        # Called by every fit/validate/test: convert and hook once.
        if self.hparams["channels_last"] and self._channels_last_hook is None:
            self.model.to(memory_format=torch.channels_last)
            self._channels_last_hook = self.model.register_forward_pre_hook(_images_to_channels_last)
        if self.hparams["compile_model"]:
            self.model.compile()  # nn.Module.compile: same parameters and state-dict keys

    def on_train_epoch_start(self) -> None:
        # Losses with an epoch-dependent schedule (LDAM's deferred re-weighting) read the epoch here.
        if isinstance(self.loss, TakesEpoch):
            self.loss.set_epoch(self.current_epoch)

    # --- steps ------------------------------------------------------------------------------------
    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)

    def check_input_size(self, height: int, width: int, given: str) -> None:
        """Refuse images smaller than the network accepts (``min_input_size``), naming both sizes."""
        smallest = min_input_size(self.model)
        if min(height, width) < smallest:
            raise ConfigurationError(
                f"{type(self.model).__name__} needs images of at least {smallest}x{smallest} pixels (its "
                f"pooling stages halve the sides); {given} {height}x{width}: "
                f"give the data a larger size or the network fewer stages"
            )

    def _logits(self, image: Tensor) -> Tensor:
        # Images of their own size (no protocol size) are checked as they come, before a raw torch error.
        self.check_input_size(image.shape[-2], image.shape[-1], given="got an image of")
        logits = self.model(image)
        if logits.shape[1] != self.num_classes or logits.shape[-2:] != image.shape[-2:]:
            raise ConfigurationError(
                f"model output has shape {list(logits.shape)}; expected [B, {self.num_classes}, "
                f"{image.shape[-2]}, {image.shape[-1]}] (num_classes at the input resolution)"
            )
        return logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        image, target = check_batch(batch, self.num_classes, self.ignore_index, batch_idx)
        loss = self._loss(self._logits(image), target)
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=image.shape[0])
        self._log_mean_loss("train", loss, image.shape[0])
        return loss

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        # check_batch was this step's label check: a pat-seg loss skips its own (a host sync on CUDA).
        if isinstance(self.loss, PixelLoss):
            return self.loss(logits, target, check_labels=False)
        return self.loss(logits, target)

    def _log_mean_loss(self, split: str, loss: Tensor, batch_size: int) -> None:
        mean = self.mean_losses[f"{split}_loss"]
        assert isinstance(mean, MeanMetric)
        mean.update(loss.detach(), weight=batch_size)
        # A torchmetrics object: Lightning computes it (synced) at the epoch's end and resets it.
        self.log(f"{split}/loss_epoch" if split == "train" else f"{split}/loss", mean, on_step=False, on_epoch=True)

    def _evaluation_step(
        self, batch: dict[str, Tensor], metrics: SegmentationMetrics, prefix: str, batch_idx: int
    ) -> None:
        image, target = check_batch(batch, self.num_classes, self.ignore_index, batch_idx)
        logits = self._logits(image)
        loss = self._loss(logits, target)
        self._log_mean_loss(prefix, loss, image.shape[0])
        metrics.update(logits.argmax(1), target)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, self.val_metrics, "val", batch_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluation_step(batch, self.test_metrics, "test", batch_idx)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if "image" not in batch:  # every file of the batch was unreadable (pat_seg.data.image_folder)
            return torch.empty(0, dtype=torch.long, device=self.device)
        image = batch["image"]
        self.check_input_size(image.shape[-2], image.shape[-1], given="got an image of")
        return self.model(image).argmax(1)

    def _log_metrics(self, metrics: SegmentationMetrics, prefix: str) -> None:
        results = metrics.compute()  # synced over processes: one confusion matrix for the split
        miou = results.pop("miou")
        # The values are already equal on every process; "max" over processes returns them bit for bit
        # (a mean could round) and tells Lightning they are synced.
        self.log(f"{prefix}/miou", miou, prog_bar=True, sync_dist=True, reduce_fx="max")
        self.log_dict({f"{prefix}/{key}": value for key, value in results.items()}, sync_dist=True, reduce_fx="max")
        if metrics.computed_confmat is not None:  # summed over processes, like the numbers
            self.confusion_matrices[prefix] = metrics.computed_confmat
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    # --- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is not None:
            scheduler, interval = self.scheduler_factory(optimizer), self.lr_scheduler_interval
        elif self.hparams["cosine_annealing"]:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler, interval = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), "step"
        else:
            return optimizer
        schedule: dict[str, Any] = {"scheduler": scheduler, "interval": interval}
        monitor = getattr(scheduler, "monitor", None)  # LightningCLI's ReduceLROnPlateau names the metric it watches
        if monitor:
            schedule["monitor"] = monitor
        return {"optimizer": optimizer, "lr_scheduler": schedule}
