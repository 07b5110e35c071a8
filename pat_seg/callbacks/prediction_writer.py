"""``pat-seg predict`` output: one label PNG per image, and on request a colour overlay beside it.

A label PNG holds class indices as pixel values (8-bit, or 16-bit for more than 255 classes), the
form the data sets' own label maps take, so it can be read back by any tool; ``ignore_index`` never
appears in a prediction. (A viewer shows values 0, 1, 2, ... out of 255 as near-black greys.) An
overlay paints each class in the colours of the TensorBoard images and carries their legend on its
right, one entry per class with its value in the label PNG, so a shared overlay explains itself and
no legend file can clash with an image's name.

Label maps go to ``labels/`` and overlays to ``overlays/``, each named after the input image when the
data module gives its name (``photo.jpg`` -> ``labels/photo.png`` and ``overlays/photo.png``;
``a/photo.jpg`` in the folder's subfolder ``a`` -> ``labels/a/photo.png``), else after its index in
the split (``labels/000042.png``). Two trees keyed by the same unique names never share a file,
whatever the images are called (``x.png`` beside ``x_overlay.png``), and neither holds the run's own
files (``config.yaml``, the events). Both lie in the trainer's log folder, which the CLI points at
the run's ``predictions/`` folder (``predictions_<folder>/`` for an image folder). Unreadable images
the data module skipped, and images whose output name the file system cannot hold (over 255 bytes),
are named as they come and counted in the summary, totalled over all processes; the others are written.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from functools import partial
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

from pat_seg.callbacks.predictions import class_names_of, class_palette, displayable, figure_to_image, legend_figure

log = logging.getLogger(__name__)
LABELS = "labels"  # sub-folder of the output folder holding the label maps
OVERLAYS = "overlays"  # and the one holding the overlays, under the same names


def label_image(labels: Tensor, num_classes: int) -> Image.Image:
    """``[H, W]`` class indices as a single-channel PNG image (mode L up to 255 classes, else I;16)."""
    array = labels.to(torch.int32).cpu().numpy()
    return Image.fromarray(array.astype("uint8" if num_classes <= 255 else "uint16"))  # modes L and I;16


def to_bytes(image: Tensor) -> Tensor:
    """``[3, H, W]`` in [0, 1] as uint8."""
    return (image * 255).round().to(torch.uint8)


def overlay_image(
    image: Tensor, labels: Tensor, num_classes: int, legend: Tensor | None = None, alpha: float = 0.5
) -> Image.Image:
    """The input image with each class painted in its palette colour (the TensorBoard images' colours),
    and ``legend`` (uint8 ``[3, h, w]``) to its right, top-aligned on white."""
    rgb = to_bytes(displayable(image))
    masks = labels.cpu()[None] == torch.arange(num_classes)[:, None, None]
    colours = [tuple(int(round(255 * c)) for c in colour) for colour in class_palette(num_classes).tolist()]
    painted = draw_segmentation_masks(rgb, masks, alpha=alpha, colors=colours)
    if legend is not None:
        (height, width), (legend_height, legend_width) = painted.shape[1:], legend.shape[1:]
        canvas = torch.full((3, max(height, legend_height), width + legend_width), 255, dtype=torch.uint8)
        canvas[:, :height, :width] = painted
        canvas[:, :legend_height, width:] = legend
        painted = canvas
    return Image.fromarray(painted.permute(1, 2, 0).numpy())


class PredictionWriter(BasePredictionWriter):
    """Write each predicted label map (and, with ``overlay=True``, a colour overlay) as PNG files.

    Args:
        overlay: also write ``overlays/<name>.png``: the image with the prediction painted over it and
            the legend of class colours beside it.
        output_dir: where to write (default: the trainer's log folder, ``<run>/predictions/``).
    """

    def __init__(self, overlay: bool = False, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.overlay = overlay
        self.output_dir = output_dir
        self.written = 0
        self.skipped = 0  # unreadable images
        self.too_long = 0  # images whose output names the file system cannot hold
        self.folder = Path(output_dir or ".")
        self.legend: Tensor | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = self.skipped = self.too_long = 0
        # Resolved here, once: trainer.log_dir is a broadcast every process must join, and under DDP
        # the processes write different numbers of batches.
        self.folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.overlay:  # drawn once, pasted beside every overlay
            names = class_names_of(pl_module, int(pl_module.num_classes))  # type: ignore[arg-type]  # an int attribute; LightningModule types unknown attributes as Tensor | Module
            self.legend = to_bytes(figure_to_image(legend_figure(names)))

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
        folder = self.folder
        for reason in batch.get("unreadable", ()):
            log.warning("%s; skipped it", reason)  # by the process that met it, under DDP too
            self.skipped += 1
        num_classes = int(pl_module.num_classes)  # type: ignore[arg-type]  # an int attribute; LightningModule types unknown attributes as Tensor | Module
        names, paths = batch.get("name"), batch.get("path")
        indices = batch.get("index")
        sizes = batch.get("original_size")
        for i, labels in enumerate(prediction):
            if names is not None:  # an image's path below its folder (pat_seg.data.image_folder.output_names)
                name = names[i]
            else:
                name = f"{int(indices[i] if indices is not None else batch_idx * len(prediction) + i):06d}"
            image = batch["image"][i]
            if sizes is not None and tuple(sizes[i].tolist()) != tuple(labels.shape):
                size = [int(s) for s in sizes[i].tolist()]
                labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
                image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            outputs: dict[Path, Callable[[], Image.Image]] = {
                folder / LABELS / f"{name}.png": partial(label_image, labels, num_classes)
            }
            if self.overlay:
                outputs[folder / OVERLAYS / f"{name}.png"] = partial(
                    overlay_image, image, labels, num_classes, self.legend
                )
            self._write(paths[i] if paths is not None else name, outputs)

    def _write(self, source: str, outputs: dict[Path, Callable[[], Image.Image]]) -> None:
        """Save each output (path -> the function drawing its image), or, when the file system cannot
        hold a name that long, none of them: the image is named in a warning and counted."""
        saved: list[Path] = []
        try:
            for path, draw in outputs.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                draw().save(path)
                saved.append(path)
        except OSError as error:
            if error.errno != errno.ENAMETOOLONG:
                raise
            for path in saved:  # the label map of an image whose overlay's path was too long
                path.unlink()
            log.warning("%s: its output name is too long for the file system (%s); skipped it", source, error.strerror)
            self.too_long += 1
            return
        self.written += 1

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Each process wrote its share of the split: the summary counts the files of all of them.
        counts = torch.tensor([self.written, self.skipped, self.too_long], device=pl_module.device)
        written, skipped, too_long = (int(n) for n in trainer.strategy.reduce(counts, reduce_op="sum").tolist())
        rank_zero_info(
            f"pat-seg predict: wrote {written} label maps to {self.folder / LABELS}"
            + (f" and overlays to {self.folder / OVERLAYS}" if self.overlay else "")
            + (f"; skipped {skipped} unreadable image(s), named above" if skipped else "")
            + (f"; skipped {too_long} image(s) whose output name is too long, named above" if too_long else "")
        )
