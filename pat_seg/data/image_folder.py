"""Your own images, for ``pat-seg predict``: every JPEG/PNG in a folder, any size, no labels.

    pat-seg predict --config lightning_logs/cityscapes_pat/version_0/config.yaml --ckpt_path best \\
        --data ImageFolderDataModule --data.root photos/

The run's classes (number and names) come from the run when ``num_classes`` is not given (the CLI
reads them from the run's ``hparams.yaml``). Images are read as RGB floats in [0, 1], as the model
gets every pat-seg data module's images, optionally resized to the size the model was trained at; the
prediction writer returns each label map to the image's own size. An image that cannot be read is
skipped, not fatal: its batch carries the reason under ``"unreadable"`` and the prediction writer
names it and counts it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms.v2 import functional as F

from pat_seg.arguments import check_number
from pat_seg.data.base import SegmentationDataModule
from pat_seg.data.io import DatasetLayoutError, read_rgb
from pat_seg.data.transforms import check_size
from pat_seg.exceptions import ConfigurationError

SUFFIXES = (".jpg", ".jpeg", ".png")


def output_names(paths: list[Path], root: Path) -> list[str]:
    """Each image's name for its outputs: its path below ``root`` without the suffix (``a/x.jpg`` ->
    ``a/x``), so images of different subfolders never share one; ``x.jpg`` and ``x.png`` side by side
    keep their suffixes apart (``x_jpg``, ``x_png``)."""
    stems = [path.relative_to(root).with_suffix("").as_posix() for path in paths]
    shared = {stem for stem, count in Counter(stems).items() if count > 1}  # one pass: folders hold thousands
    return [f"{stem}_{path.suffix[1:]}" if stem in shared else stem for stem, path in zip(stems, paths)]


class ImageFolder(Dataset):
    """Sample ``i``: ``{"image": float [3, H, W], "path": str, "name": str, "original_size": (H0, W0),
    "index": i}``, or for a file that cannot be read ``{"path": str, "index": i, "unreadable": the reason}``.
    ``name`` is what the prediction writer names its outputs after (:func:`output_names`)."""

    def __init__(self, paths: list[Path], size: tuple[int, int] | None = None, root: Path | None = None) -> None:
        self.paths = paths
        self.size = size
        self.names = output_names(paths, root) if root is not None else [path.stem for path in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            image = read_rgb(path)  # uint8 [3, H, W]
        except ConfigurationError as unreadable:  # one broken file must not end the prediction of a folder
            return {"path": str(path), "index": index, "unreadable": str(unreadable)}
        original_size = tuple(image.shape[-2:])
        image = F.to_dtype(image, torch.float32, scale=True)
        if self.size is not None and original_size != self.size:
            image = F.resize(image, list(self.size), antialias=True)
        name, size = self.names[index], torch.tensor(original_size)
        return {"image": image, "path": str(path), "name": name, "original_size": size, "index": index}


def collate_readable(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The readable samples as one batch, with the unreadable ones' reasons under ``"unreadable"``
    (a batch of unreadable files only has no ``"image"``: the module predicts nothing for it)."""
    readable = [sample for sample in samples if "unreadable" not in sample]
    batch: dict[str, Any] = default_collate(readable) if readable else {}
    batch["unreadable"] = [sample["unreadable"] for sample in samples if "unreadable" in sample]
    return batch


class ImageFolderDataModule(SegmentationDataModule):
    """Unlabelled images of a folder (recursively), served as the prediction split.

    Args:
        root: the folder.
        num_classes / class_names: the trained model's classes (filled in from the run by the CLI).
        ignore_index: the label value reserved for "no class" in written label maps.
        size: ``(height, width)`` to resize to before the network (None: each image at its own size,
            predicted one at a time).
        loader_settings: those of :class:`~pat_seg.data.base.SegmentationDataModule`; prediction
            batches hold ``eval_batch_size`` images (default ``batch_size``) with a ``size``, else one.
    """

    def __init__(
        self,
        root: str,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        ignore_index: int = 255,
        size: tuple[int, int] | None = None,
        **loader_settings: Any,
    ) -> None:
        super().__init__(**loader_settings)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetLayoutError(f"{self.root} is not a folder; expected a folder of .jpg/.png images")
        self.num_classes = check_number(
            "num_classes", num_classes, at_least=2, integer=True, note="the trained model's number of classes"
        )
        self.class_names = list(class_names) if class_names else [str(c) for c in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ConfigurationError(f"got {len(self.class_names)} class names for num_classes={self.num_classes}")
        self.ignore_index = int(ignore_index)
        self.size = None if size is None else check_size(size)
        if self.size is None:
            self.eval_batch_size = 1  # images of different sizes cannot share a batch
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        if not self.paths:
            raise DatasetLayoutError(f"{self.root} holds no .jpg/.jpeg/.png images")

    def build_dataset(self, split: str) -> Dataset:
        if split != "test":
            raise ConfigurationError(
                f"ImageFolderDataModule holds unlabelled images: it serves `pat-seg predict`, not the {split!r} split"
            )
        return ImageFolder(self.paths, self.size, self.root)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size, collate_fn=collate_readable)

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise ConfigurationError(predict_only(stage))
        super().setup(stage)


def predict_only(command: str) -> str:
    """Why ``command`` (``fit``, ``test``, ...) cannot run on an :class:`ImageFolderDataModule`, and what to use."""
    return (
        f"ImageFolderDataModule holds unlabelled images: it serves `pat-seg predict` only, not `{command}`.\n"
        "To train or evaluate on your own images and masks, use --data SegmentationFolderDataModule "
        "(pat_seg.data.SegmentationFolderDataModule: an image folder and a mask folder, docs/datasets.md)"
    )
