"""Prediction overlays and the confusion matrix in TensorBoard, each validation epoch.

The paper's Fig. 4 shows, per image, the input, its ground truth and each model's prediction side by
side; :class:`PredictionImages` logs exactly that for a fixed set of validation images, so the same
scenes can be compared across epochs and runs, with a legend of the class colours, and the
row-normalised confusion matrix of the whole validation split (rows = ground truth, as in
:mod:`pat_seg.metrics`) with class names on both axes. The panels are drawn as tensors; matplotlib
lays out the titles, names and legend around them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.utils import make_grid

from pat_seg.arguments import PositiveInt, check_number
from pat_seg.exceptions import ConfigurationError

IGNORE_COLOUR = (0.0, 0.0, 0.0)  # ignored pixels are black in ground truth panels
EMPTY_ROW_COLOUR = (0.6, 0.6, 0.6)  # a class absent from ground truth has no row to normalise


def class_palette(num_classes: int) -> Tensor:
    """``[num_classes, 3]`` RGB colours in [0, 1], well apart for neighbouring class indices.

    Hues step by the golden ratio (each new hue falls in the largest gap left so far);
    saturation and value alternate so that classes with close hues still differ in brightness.
    """
    check_number("num_classes", num_classes, at_least=1, integer=True)
    from matplotlib.colors import hsv_to_rgb  # imported on first use, as in _figure

    index = np.arange(num_classes, dtype=np.float64)
    hue = (index * (math.sqrt(5) - 1) / 2) % 1.0
    saturation = np.where(index % 2 == 0, 0.85, 0.55)
    value = np.where((index // 2) % 2 == 0, 0.95, 0.7)
    return torch.from_numpy(hsv_to_rgb(np.stack([hue, saturation, value], axis=-1))).float()


def colourise(labels: Tensor, palette: Tensor, ignore_index: int) -> Tensor:
    """``[H, W]`` class indices -> ``[3, H, W]`` RGB; ``ignore_index`` (and any out-of-range label) black."""
    valid = (labels >= 0) & (labels < palette.shape[0]) & (labels != ignore_index)
    rgb = palette[labels.clamp(0, palette.shape[0] - 1)]
    rgb[~valid] = torch.tensor(IGNORE_COLOUR)
    return rgb.permute(2, 0, 1)


def displayable(image: Tensor) -> Tensor:
    """``[C, H, W]`` network input -> ``[3, H, W]`` in [0, 1].

    Each image is stretched to its own min-max range because data modules normalise differently
    (the synthetic data is in [0, 1], real data may be mean/std normalised); one channel is grey.
    """
    image = image.detach().float().cpu()
    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else torch.zeros_like(image)


def prediction_grid(
    images: Tensor, targets: Tensor, predictions: Tensor, num_classes: int, ignore_index: int, gap: int = 2
) -> Tensor:
    """One row per image: ``image | ground truth | prediction`` (Fig. 4), ``gap`` white pixels apart.

    ``images [N, C, H, W]``, ``targets`` and ``predictions [N, H, W]``; returns ``[3, rows, cols]``.
    """
    if images.shape[0] != targets.shape[0] or targets.shape != predictions.shape:
        raise ConfigurationError(
            f"images {list(images.shape)}, targets {list(targets.shape)} and predictions "
            f"{list(predictions.shape)} must be [N, C, H, W], [N, H, W], [N, H, W]"
        )
    palette = class_palette(num_classes)
    panels = [
        panel
        for i in range(images.shape[0])
        for panel in (
            displayable(images[i]),
            colourise(targets[i].cpu(), palette, ignore_index),
            colourise(predictions[i].cpu(), palette, ignore_index),
        )
    ]
    grid = make_grid(torch.stack(panels), nrow=3, padding=gap, pad_value=1.0)
    # make_grid also pads the outer border; the figure's own margin is enough, so crop it.
    return grid[:, gap : grid.shape[1] - gap, gap : grid.shape[2] - gap]


def row_normalised(confmat: Tensor) -> Tensor:
    """Each ground-truth row as fractions of its pixels (float64); NaN rows for classes absent from it."""
    if confmat.ndim != 2 or confmat.shape[0] != confmat.shape[1]:
        raise ConfigurationError(f"confmat must be a square [L, L] matrix; got shape {list(confmat.shape)}")
    confmat = confmat.detach().double().cpu()
    totals = confmat.sum(1, keepdim=True)
    return torch.where(totals > 0, confmat / totals.clamp_min(1), torch.full_like(confmat, float("nan")))


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # imported on first use: plotting is not needed to train

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_to_image(figure: Any) -> Tensor:
    """A rendered matplotlib figure as a ``[3, H, W]`` float tensor in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255


def confusion_matrix_figure(confmat: Tensor, class_names: Sequence[str]) -> Any:
    """The row-normalised matrix with class names on both axes, "ground truth" rows, "prediction" columns.

    Each cell is coloured by the fraction of its row's pixels (printed in the cell up to 30 classes);
    rows of classes absent from the ground truth are left grey.
    """
    fractions = row_normalised(confmat)
    size = fractions.shape[0]
    if len(class_names) != size:
        raise ConfigurationError(f"got {len(class_names)} class names for a {size}x{size} confusion matrix")
    side = max(4.0, 0.35 * size + 2.0)
    figure = _figure(side + 1.0, side)
    axes = figure.add_subplot()
    axes.set_facecolor(EMPTY_ROW_COLOUR)
    shown = np.ma.masked_invalid(fractions.numpy())
    image = axes.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = list(range(size))
    axes.set_xticks(ticks, labels=list(class_names), rotation=90)
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title("confusion matrix (each row sums to 1)")
    if size <= 30:
        for row in range(size):
            for col in range(size):
                value = fractions[row, col].item()
                if not math.isnan(value) and value >= 0.005:
                    axes.text(
                        col,
                        row,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.5 else "black",
                    )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return figure


def class_names_of(pl_module: L.LightningModule, num_classes: int) -> list[str]:
    """The module's class names (its metrics', set from the data module), else ``"0"``, ``"1"``, ..."""
    metrics = getattr(pl_module, "val_metrics", None)
    return list(getattr(metrics, "class_names", None) or [str(c) for c in range(num_classes)])


def legend_handles(class_names: Sequence[str], ignore_index: int | None = None) -> list[Any]:
    """One patch of its palette colour per class, named; with ``ignore_index``, a black one for ignored pixels."""
    from matplotlib.patches import Patch

    palette = class_palette(len(class_names)).tolist()
    handles = [Patch(color=colour, label=name) for colour, name in zip(palette, class_names)]
    if ignore_index is not None:
        handles.append(Patch(facecolor=IGNORE_COLOUR, edgecolor="grey", label=f"ignored ({ignore_index})"))
    return handles


def legend_figure(class_names: Sequence[str], rows: int = 30) -> Any:
    """The class colours alone, each named after its value in a label PNG (``2 road``), in columns of
    at most ``rows`` entries: the legend drawn beside each prediction overlay."""
    labels = [f"{index} {name}" for index, name in enumerate(class_names)]
    rows = min(rows, len(labels))
    columns = math.ceil(len(labels) / rows)
    figure = _figure(columns * (0.6 + 0.07 * max(map(len, labels))), 0.2 * rows + 0.2)
    figure.legend(handles=legend_handles(labels), loc="center", ncols=columns, fontsize=8, frameon=False)
    return figure


def prediction_figure(grid: Tensor, class_names: Sequence[str], ignore_index: int) -> Any:
    """The ``image | ground truth | prediction`` grid with column titles and a legend of class colours."""
    height, width = grid.shape[1:]
    scale = 3.0 / max(width, 1) * 2.5  # about 2.5 inches a panel
    figure = _figure(width * scale + 2.4, max(height * scale, 0.3 * len(class_names)) + 0.6)
    axes = figure.add_subplot()
    axes.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    axes.set_xticks([width / 6, width / 2, 5 * width / 6], labels=["image", "ground truth", "prediction"])
    axes.xaxis.tick_top()
    axes.set_yticks([])
    handles = legend_handles(class_names, ignore_index)
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return figure


class PredictionImages(L.Callback):
    """Log ``val/predictions`` (Fig. 4 rows) and ``val/confusion_matrix`` to TensorBoard.

    Args:
        num_images: validation images shown, evenly spaced over the split and fixed for the run.
        every_n_epochs: log every n-th validation epoch.
        confusion_matrix: also log the row-normalised confusion matrix (needs the module's
            ``confusion_matrices``, which :class:`~pat_seg.module.SegmentationModule` keeps).
        min_height: small images are enlarged (nearest neighbour) to at least this many pixels.
    """

    def __init__(
        self,
        num_images: PositiveInt = 4,
        every_n_epochs: PositiveInt = 1,
        confusion_matrix: bool = True,
        min_height: PositiveInt = 128,
    ) -> None:
        super().__init__()
        self.num_images = check_number("num_images", num_images, at_least=1, integer=True)
        self.every_n_epochs = check_number("every_n_epochs", every_n_epochs, at_least=1, integer=True)
        self.confusion_matrix = confusion_matrix
        self.min_height = check_number("min_height", min_height, at_least=1, integer=True)
        self._batch: tuple[Tensor, Tensor] | None = None

    def _fixed_batch(self, trainer: L.Trainer) -> tuple[Tensor, Tensor] | None:
        """The same validation images every epoch, as the network gets them (read once, kept on the CPU)."""
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            dataset = getattr(loader, "dataset", None)
            if dataset is None or len(dataset) == 0:
                return None
            count = min(self.num_images, len(dataset))
            indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
            batch = default_collate([dataset[i] for i in indices])
            # Samples come as stored (uint8 images, pat_seg.data.base); the data module's transfer hook
            # makes them the float32 images and long targets the network and the panels take.
            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is not None:
                batch = datamodule.on_after_batch_transfer(batch, 0)
            self._batch = (batch["image"], batch["target"])
        return self._batch

    @torch.no_grad()
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end runs after the module's on_validation_epoch_end has stored the matrix.
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        writers = [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not writers:
            return
        num_classes = int(pl_module.num_classes)  # type: ignore[arg-type]  # an int attribute; LightningModule types unknown attributes as Tensor | Module
        ignore_index = int(getattr(pl_module, "ignore_index", 255))
        class_names = class_names_of(pl_module, num_classes)
        images: dict[str, Tensor] = {}
        batch = self._fixed_batch(trainer)
        if batch is not None:
            image, target = batch
            was_training = pl_module.training
            pl_module.eval()
            logits = pl_module(image.to(device=pl_module.device, dtype=pl_module.dtype))  # type: ignore[arg-type]  # a torch.dtype at run time
            pl_module.train(was_training)
            grid = self._enlarge(
                prediction_grid(image, target, logits.argmax(1).cpu(), num_classes, ignore_index), image.shape[-2]
            )
            images["val/predictions"] = figure_to_image(prediction_figure(grid, class_names, ignore_index))
        confmat = getattr(pl_module, "confusion_matrices", {}).get("val")
        if self.confusion_matrix and confmat is not None:
            images["val/confusion_matrix"] = figure_to_image(confusion_matrix_figure(confmat, class_names))
        for writer in writers:
            for tag, picture in images.items():
                writer.add_image(tag, picture.clamp(0, 1), global_step=trainer.global_step)

    def _enlarge(self, grid: Tensor, height: int) -> Tensor:
        factor = max(1, math.ceil(self.min_height / height))
        return grid.repeat_interleave(factor, 1).repeat_interleave(factor, 2) if factor > 1 else grid
