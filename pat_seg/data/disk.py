"""Shared logic of the data modules that read a data set from disk (Cityscapes, NYUv2, Oxford Pet).

A :class:`DiskDataModule` takes the data set's ``root``, the protocol ``size`` and the augmentation
settings; its subclass lists the samples of a split (:meth:`DiskDataModule.build_samples`) and names
the protocol options that change the labels (:meth:`DiskDataModule.protocol_options`), which key the
on-disk cache of class counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from pat_seg.data.base import SegmentationDataModule, class_counts_cache_path
from pat_seg.data.io import LabelTable, check_same_size, read_label_image, read_rgb
from pat_seg.data.transforms import SegmentationTransform, check_size
from pat_seg.exceptions import ConfigurationError

PairTransform = Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]]


def seeded_split(count: int, fractions: list[float], seed: int) -> list[list[int]]:
    """Split ``range(count)`` at random (seeded) into parts of the given fractions, each sorted.

    Part ``k`` gets ``round(fractions[k] * count)`` indices for every part but the first, which takes
    the rest; every part must end up non-empty. The same ``(count, fractions, seed)`` gives the same
    parts on every machine (numpy's PCG64).
    """
    sizes = [round(f * count) for f in fractions[1:]]
    sizes.insert(0, count - sum(sizes))
    if any(f <= 0 for f in fractions) or any(size < 1 for size in sizes):
        raise ConfigurationError(f"cannot split {count} samples into fractions {fractions}: a part would be empty")
    order = np.random.default_rng(seed).permutation(count)
    bounds = np.cumsum([0, *sizes])
    return [sorted(order[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]


class SegmentationSamples(Dataset):
    """One split's samples: a subclass reads sample ``i`` as numpy arrays, this class checks and transforms.

    Subclasses implement ``__len__`` and :meth:`load`; ``__getitem__`` returns
    ``{"image": float [3, H, W], "target": long [H, W], "index": i}`` after ``transform``.
    """

    def __init__(self, transform: PairTransform) -> None:
        self.transform = transform

    def load(self, index: int) -> tuple[np.ndarray | Tensor, np.ndarray]:  # pragma: no cover - abstract
        """``(image, label)`` of sample ``index``: the image as numpy ``[H, W, 3]`` or tensor ``[3, H, W]``
        (uint8, or float in [0, 1]), the label ``[H, W]`` in the data set's classes (a
        :class:`~pat_seg.data.io.LabelTable`'s dtype); what :class:`SegmentationTransform` takes."""
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image, target = self.transform(*self.load(index))  # type: ignore[arg-type]  # the transform takes a tensor image too
        return {"image": image, "target": target, "index": index}


class ImageLabelFiles(SegmentationSamples):
    """Samples stored as one image file and one single-channel label PNG each (Cityscapes, Oxford Pet).

    ``samples`` lists ``(image path, label path, table mapping the label file's values to classes)``.
    """

    def __init__(self, samples: list[tuple[Path, Path, LabelTable]], transform: PairTransform) -> None:
        super().__init__(transform)
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Tensor, np.ndarray]:
        image_path, label_path, labels = self.samples[index]
        image = read_rgb(image_path)
        raw = read_label_image(label_path)
        check_same_size(image.shape[-2:], raw.shape[:2], str(image_path), str(label_path))
        return image, labels(raw, str(label_path))


class DiskDataModule(SegmentationDataModule):
    """Base of the data modules that read ``root``: transforms per split and the class-counts cache.

    Args:
        root: the data set's directory, in its publisher's layout.
        size: ``(height, width)`` of every sample (the protocol size).
        augment: random scale, crop and flip on the training split (evaluation splits only resize).
        scale_range: range of the random scale, relative to ``size``.
        loader_settings: ``batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``eval_batch_size``, ``seed`` of :class:`~pat_seg.data.base.SegmentationDataModule`.
    """

    def __init__(
        self,
        root: str,
        size: tuple[int, int],
        augment: bool = True,
        scale_range: tuple[float, float] = (0.5, 2.0),
        **loader_settings: Any,
    ) -> None:
        super().__init__(**loader_settings)
        self.root = Path(root).expanduser()
        self.size = check_size(size)
        self.augment = augment
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        SegmentationTransform(self.size, train=True, scale_range=self.scale_range)  # validates early

    def set_classes(self, class_names: list[str], ignore_index: int) -> None:
        """Set ``class_names``, ``num_classes`` and ``ignore_index``, which must not be a class index."""
        if 0 <= ignore_index < len(class_names):
            raise ConfigurationError(f"ignore_index {ignore_index} collides with a class index in [0, {len(class_names) - 1}]")
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.ignore_index = ignore_index

    # --- what subclasses provide -------------------------------------------------------------
    def build_samples(self, split: str, transform: PairTransform) -> SegmentationSamples:  # pragma: no cover
        raise NotImplementedError

    def protocol_options(self) -> dict[str, Any]:
        """Options that change labels or splits; they key the class-counts cache."""
        return {}

    # --- shared logic ------------------------------------------------------------------------
    def transform(self, train: bool) -> SegmentationTransform:
        return SegmentationTransform(self.size, train, self.ignore_index, self.scale_range)

    def build_dataset(self, split: str) -> Dataset:
        if split not in ("train", "val", "test"):
            raise ConfigurationError(f"split must be 'train', 'val' or 'test'; got {split!r}")
        return self.build_samples(split, self.transform(train=split == "train" and self.augment))

    def counting_dataset(self) -> Dataset:
        # Counts at the protocol size without random augmentation: the same numbers on every run.
        return self.build_samples("train", self.transform(train=False))

    def class_counts_cache_file(self) -> Path:
        key = {"data_module": type(self).__name__, "size": list(self.size), **self.protocol_options()}
        return class_counts_cache_path(self.root, key)
