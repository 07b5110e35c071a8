"""Prediction overlays and the confusion matrix in TensorBoard, each validation epoch.

The paper's Fig. 4 shows, per image, the input, its ground truth and each model's prediction side by
side; :class:`PredictionImages` logs exactly that for a fixed set of validation images, so the same
scenes can be compared across epochs and runs, and the row-normalised confusion matrix of the whole
validation split (rows = ground truth, as in :mod:`pat_seg.metrics`) as a heat map. Both are plain image
tensors (no plotting library), cheap enough to be on by default.
"""

from __future__ import annotations

import math
import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

IGNORE_COLOUR = (0.0, 0.0, 0.0)  # ignored pixels are black in ground truth panels
EMPTY_ROW_COLOUR = (0.6, 0.6, 0.6)  # a class absent from ground truth has no row to normalise
HEAT_COLOUR = torch.tensor([0.03, 0.19, 0.42])  # colour of a fraction of 1 (0 is white)


def class_palette(num_classes: int) -> Tensor:
    """``[num_classes, 3]`` RGB colours in [0, 1], well apart for neighbouring class indices.

    Hues step by the golden ratio (each new hue falls in the largest gap left so far);
    saturation and value alternate so that classes with close hues still differ in brightness.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    index = torch.arange(num_classes, dtype=torch.float64)
    hue = (index * (math.sqrt(5) - 1) / 2) % 1.0
    saturation = torch.where(index % 2 == 0, 0.85, 0.55)
    value = torch.where((index // 2) % 2 == 0, 0.95, 0.7)
    return _hsv_to_rgb(hue, saturation, value).float()


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """Standard HSV -> RGB: ``v - v*s*clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6h) mod 6``."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype)
    k = (n + hue[:, None] * 6) % 6
    return value[:, None] - value[:, None] * saturation[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


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


def prediction_grid(images: Tensor, targets: Tensor, predictions: Tensor, num_classes: int, ignore_index: int,
                    gap: int = 2) -> Tensor:
    """One row per image: ``image | ground truth | prediction`` (Fig. 4), ``gap`` white pixels apart.

    ``images [N, C, H, W]``, ``targets`` and ``predictions [N, H, W]``; returns ``[3, rows, cols]``.
    """
    if images.shape[0] != targets.shape[0] or targets.shape != predictions.shape:
        raise ValueError(f"images {list(images.shape)}, targets {list(targets.shape)} and predictions "
                         f"{list(predictions.shape)} must be [N, C, H, W], [N, H, W], [N, H, W]")
    palette = class_palette(num_classes)
    n, _, h, w = images.shape
    grid = torch.ones(3, n * h + (n - 1) * gap, 3 * w + 2 * gap)
    for i in range(n):
        top = i * (h + gap)
        panels = (displayable(images[i]), colourise(targets[i].cpu(), palette, ignore_index),
                  colourise(predictions[i].cpu(), palette, ignore_index))
        for j, panel in enumerate(panels):
            left = j * (w + gap)
            grid[:, top:top + h, left:left + w] = panel
    return grid


def confusion_matrix_image(confmat: Tensor, cell: int = 16) -> Tensor:
    """Row-normalised confusion matrix (rows = ground truth) as a ``[3, L*cell, L*cell]`` heat map.

    A cell holding the fraction ``f`` of its ground-truth class is ``(1 - f) * white + f * dark blue``;
    rows of classes absent from the ground truth are grey. A class-colour strip (the palette of the
    prediction panels) runs along the top and the left so rows and columns can be told apart.
    """
    if confmat.ndim != 2 or confmat.shape[0] != confmat.shape[1]:
        raise ValueError(f"confmat must be a square [L, L] matrix; got shape {list(confmat.shape)}")
    if cell < 2:
        raise ValueError(f"cell must be >= 2 pixels; got {cell}")
    confmat = confmat.detach().double().cpu()
    totals = confmat.sum(1, keepdim=True)
    fraction = (confmat / totals.clamp_min(1)).float()
    heat = 1 - fraction[..., None] * (1 - HEAT_COLOUR)  # [L, L, 3]
    heat[(totals[:, 0] == 0)] = torch.tensor(EMPTY_ROW_COLOUR)
    size = confmat.shape[0]
    strip = max(1, cell // 3)
    image = torch.ones(3, strip + size * cell, strip + size * cell)
    image[:, strip:, strip:] = heat.repeat_interleave(cell, 0).repeat_interleave(cell, 1).permute(2, 0, 1)
    colours = class_palette(size).repeat_interleave(cell, 0).T  # [3, L*cell]
    image[:, :strip, strip:] = colours[:, None, :]
    image[:, strip:, :strip] = colours[:, :, None]
    return image


class PredictionImages(L.Callback):
    """Log ``val/predictions`` (Fig. 4 rows) and ``val/confusion_matrix`` to TensorBoard.

    Args:
        num_images: validation images shown, evenly spaced over the split and fixed for the run.
        every_n_epochs: log every n-th validation epoch.
        confusion_matrix: also log the row-normalised confusion matrix (needs the module's
            ``confusion_matrices``, which :class:`~pat_seg.module.SegmentationModule` keeps).
        min_height: small images are enlarged (nearest neighbour) to at least this many pixels.
    """

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1, confusion_matrix: bool = True,
                 min_height: int = 128) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1; got {num_images}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1; got {every_n_epochs}")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.confusion_matrix = confusion_matrix
        self.min_height = min_height
        self._batch: tuple[Tensor, Tensor] | None = None

    def _fixed_batch(self, trainer: L.Trainer) -> tuple[Tensor, Tensor] | None:
        """The same validation images every epoch (read once, kept on the CPU)."""
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            dataset = getattr(loader, "dataset", None)
            if dataset is None or len(dataset) == 0:
                return None
            count = min(self.num_images, len(dataset))
            indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
            samples = [dataset[i] for i in indices]
            self._batch = (torch.stack([s["image"] for s in samples]), torch.stack([s["target"] for s in samples]))
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
        num_classes = int(getattr(pl_module, "num_classes"))
        ignore_index = int(getattr(pl_module, "ignore_index", 255))
        images: dict[str, Tensor] = {}
        batch = self._fixed_batch(trainer)
        if batch is not None:
            image, target = batch
            was_training = pl_module.training
            pl_module.eval()
            logits = pl_module(image.to(device=pl_module.device, dtype=pl_module.dtype))
            pl_module.train(was_training)
            grid = prediction_grid(image, target, logits.argmax(1).cpu(), num_classes, ignore_index)
            images["val/predictions"] = self._enlarge(grid, image.shape[-2])
        confmat = getattr(pl_module, "confusion_matrices", {}).get("val")
        if self.confusion_matrix and confmat is not None:
            images["val/confusion_matrix"] = confusion_matrix_image(confmat, cell=max(4, 256 // confmat.shape[0]))
        for writer in writers:
            for tag, picture in images.items():
                writer.add_image(tag, picture.clamp(0, 1), global_step=trainer.global_step)

    def _enlarge(self, grid: Tensor, height: int) -> Tensor:
        factor = max(1, math.ceil(self.min_height / height))
        return grid.repeat_interleave(factor, 1).repeat_interleave(factor, 2) if factor > 1 else grid
