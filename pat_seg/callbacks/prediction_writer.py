"""``pat-seg predict`` output: one label PNG per image, and on request a colour overlay beside it.

A label PNG holds class indices as pixel values (8-bit, or 16-bit for more than 255 classes), the
form the data sets' own label maps take, so it can be read back by any tool; ``ignore_index`` never
appears in a prediction. Files are named after the input image when the data module gives its path
(``photo.jpg`` -> ``photo.png``, ``photo_overlay.png``), else after its index in the split
(``000042.png``). They go to the trainer's log folder, which the CLI points at ``<run>/predictions/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torchvision.utils import draw_segmentation_masks

from pat_seg.callbacks.predictions import class_palette, displayable


def label_image(labels: Tensor, num_classes: int) -> Image.Image:
    """``[H, W]`` class indices as a single-channel PNG image (mode L up to 255 classes, else I;16)."""
    array = labels.to(torch.int32).cpu().numpy()
    return Image.fromarray(array.astype("uint8" if num_classes <= 255 else "uint16"))  # modes L and I;16


def overlay_image(image: Tensor, labels: Tensor, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The input image with each class painted in its palette colour (the TensorBoard images' colours)."""
    rgb = (displayable(image) * 255).round().to(torch.uint8)
    masks = labels.cpu()[None] == torch.arange(num_classes)[:, None, None]
    colours = [tuple(int(round(255 * c)) for c in colour) for colour in class_palette(num_classes).tolist()]
    painted = draw_segmentation_masks(rgb, masks, alpha=alpha, colors=colours)
    return Image.fromarray(painted.permute(1, 2, 0).numpy())


class PredictionWriter(BasePredictionWriter):
    """Write each predicted label map (and, with ``overlay=True``, a colour overlay) as PNG files.

    Args:
        overlay: also write ``<name>_overlay.png``: the image with the prediction painted over it.
        output_dir: where to write (default: the trainer's log folder, ``<run>/predictions/``).
    """

    def __init__(self, overlay: bool = False, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.overlay = overlay
        self.output_dir = output_dir
        self.written = 0

    def folder(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = 0
        self.folder(trainer).mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        folder = self.folder(trainer)
        num_classes = int(pl_module.num_classes)  # type: ignore[arg-type]  # an int attribute; LightningModule types unknown attributes as Tensor | Module
        paths = batch.get("path")
        indices = batch.get("index")
        sizes = batch.get("original_size")
        for i, labels in enumerate(prediction):
            if paths is not None:
                name = Path(paths[i]).stem
            else:
                name = f"{int(indices[i] if indices is not None else batch_idx * len(prediction) + i):06d}"
            image = batch["image"][i]
            if sizes is not None and tuple(sizes[i].tolist()) != tuple(labels.shape):
                size = [int(s) for s in sizes[i].tolist()]
                labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
                image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            label_image(labels, num_classes).save(folder / f"{name}.png")
            if self.overlay:
                overlay_image(image, labels, num_classes).save(folder / f"{name}_overlay.png")
            self.written += 1

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank_zero_info(
            f"pat-seg predict: wrote {self.written} label maps"
            f"{' and overlays' if self.overlay else ''} to {self.folder(trainer)}"
        )
