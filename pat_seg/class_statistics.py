"""Per-class statistics of label maps: pixels per class and images per class (torch only, no Lightning).

The class-count losses (:class:`~pat_seg.losses.ClassBalancedLoss`, LDAM, BMS, BLV) take the pixel
counts of the training split; the image counts (how many label maps hold each class) tell a class
that is rare because it is small from one that is rare because it is seldom present, and give
``PATLoss(presence_exponent=...)`` its ``class_presence``. Any iterable of
label maps feeds them: a dataset, a ``DataLoader`` (``batched=True``), a list of arrays.

    from pat_seg.class_statistics import class_statistics
    stats = class_statistics(train_set, num_classes=21, ignore_index=255)
    loss = ClassBalancedLoss(class_counts=stats.pixels)

The same per-sample histogram gives PAT its mask sizes ``S_i^l`` (paper Eq. 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pat_seg.arguments import check_number
from pat_seg.exceptions import ConfigurationError


def per_sample_class_counts(index: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """Number of valid pixels of each class in each sample, ``[B, L]``, by one histogram.

    ``index`` holds labels in ``[0, num_classes)`` wherever ``valid``; its first dimension indexes
    samples and the rest (an image's ``H, W``, a volume's ``D, H, W``) are counted together. This is
    ``S_i^l`` of paper Eq. 2. Invalid pixels are routed to an extra overflow bin that is dropped, so
    no boolean indexing is needed; the histogram is an ``index_add_`` into a table of known size rather
    than ``bincount``, which on CUDA reads the largest index back to the host.
    """
    batch = index.shape[0]
    index, valid = index.reshape(batch, -1), valid.reshape(batch, -1)
    sample_offset = torch.arange(batch, device=index.device).view(batch, 1) * num_classes
    flat = torch.where(valid, index + sample_offset, torch.full_like(index, batch * num_classes)).reshape(-1)
    counts = torch.zeros(batch * num_classes + 1, dtype=torch.long, device=index.device)
    counts.index_add_(0, flat, torch.ones((), dtype=torch.long, device=index.device).expand(flat.numel()))
    return counts[: batch * num_classes].view(batch, num_classes)


@dataclass(frozen=True)
class ClassStatistics:
    """What :func:`class_statistics` counted.

    Attributes:
        pixels: valid pixels of each class over all label maps (``class_counts`` of the losses).
        images: label maps holding at least one valid pixel of each class.
        num_images: label maps seen.
    """

    pixels: list[int]
    images: list[int]
    num_images: int

    @property
    def presence(self) -> list[float]:
        r"""``images[l] / num_images``: the share :math:`\pi_l` of label maps holding class ``l``
        (``class_presence`` of the presence-corrected Eq. 4, docs/losses.md)."""
        return [count / max(self.num_images, 1) for count in self.images]


def label_tensor(item: Any, position: int) -> Tensor:
    """The label map of one item: a tensor or array (a PIL image too), a sample dict's ``"target"``,
    or the last element of an ``(image, target)`` tuple, as an integer tensor on the CPU."""
    if isinstance(item, Mapping):
        if "target" not in item:
            raise ConfigurationError(f"item {position} is a mapping without a 'target' key (keys: {sorted(item)})")
        item = item["target"]
    elif isinstance(item, tuple):
        item = item[-1]
    if isinstance(item, Tensor):
        labels = item
    else:
        import numpy as np  # arrays and PIL images only; torch needs no numpy otherwise

        labels = torch.as_tensor(np.array(item))  # a copy: PIL hands out read-only buffers
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ConfigurationError(f"label map {position} must hold integer class labels; got dtype {labels.dtype}")
    return labels.detach().cpu()


def class_statistics(
    label_maps: Iterable[Any],
    num_classes: int,
    ignore_index: int | None = 255,
    batched: bool = False,
) -> ClassStatistics:
    """Pixels and images per class over ``label_maps``, in one pass.

    Args:
        label_maps: an iterable or a map-style dataset of label maps of any shape (``[H, W]``,
            ``[D, H, W]``, ...); each item a tensor, an array or PIL image, a sample dict with a
            ``"target"``, or an ``(image, target)`` tuple.
        num_classes: number of classes ``L``; every label that is not ``ignore_index`` must lie in
            ``[0, L)``, or a ``ValueError`` names it and its label map.
        ignore_index: label of pixels that are not counted; ``None``: every pixel is counted.
        batched: each item holds several label maps along its first dimension (a ``DataLoader``'s
            batch); label maps are then numbered across batches.

    Example:
        Two 2x2 label maps; the first has an ignored pixel. Class 0 covers 2 + 4 pixels in both maps,
        class 1 one pixel of the first, class 2 nothing:

        >>> import torch
        >>> from pat_seg.class_statistics import class_statistics
        >>> maps = [torch.tensor([[0, 0], [1, 255]]), torch.tensor([[0, 0], [0, 0]])]
        >>> stats = class_statistics(maps, num_classes=3, ignore_index=255)
        >>> stats.pixels, stats.images, stats.num_images
        ([6, 1, 0], [2, 1, 0], 2)
        >>> stats.presence
        [1.0, 0.5, 0.0]
    """
    check_number("num_classes", num_classes, at_least=1, integer=True)
    if not hasattr(label_maps, "__iter__") and hasattr(label_maps, "__getitem__") and hasattr(label_maps, "__len__"):
        # A map-style dataset: items 0 .. len - 1 (Python's fallback iteration would run until an
        # IndexError that a generated dataset may never raise).
        dataset = label_maps
        label_maps = (dataset[index] for index in range(len(dataset)))  # type: ignore[arg-type]  # hasattr(__len__) above
    pixels = torch.zeros(num_classes, dtype=torch.long)
    images = torch.zeros(num_classes, dtype=torch.long)
    seen = 0
    for item in label_maps:
        labels = label_tensor(item, seen).long()
        maps = labels if batched else labels.unsqueeze(0)
        if maps.dim() == 0:
            raise ConfigurationError(
                f"batched=True needs items with a batch dimension; item at label map {seen} is a scalar"
            )
        valid = torch.ones_like(maps, dtype=torch.bool) if ignore_index is None else maps != ignore_index
        bad = valid & ((maps < 0) | (maps >= num_classes))
        if bool(bad.any()):
            first = int(bad.reshape(maps.shape[0], -1).any(1).nonzero()[0, 0])
            value = int(maps[first][bad[first]][0])
            allowed = "" if ignore_index is None else f" or ignore_index {ignore_index}"
            raise ConfigurationError(
                f"label {value} found in label map {seen + first}; expected class indices in "
                f"[0, {num_classes - 1}]{allowed}"
            )
        per_map = per_sample_class_counts(maps.clamp(0, num_classes - 1), valid, num_classes)
        pixels += per_map.sum(0)
        images += (per_map > 0).sum(0)
        seen += maps.shape[0]
    return ClassStatistics(pixels=pixels.tolist(), images=images.tolist(), num_images=seen)


def count_classes(
    label_maps: Iterable[Any], num_classes: int, ignore_index: int | None = 255, batched: bool = False
) -> list[int]:
    """Valid pixels of each class over ``label_maps`` (the ``class_counts`` of the losses); see :func:`class_statistics`."""
    return class_statistics(label_maps, num_classes, ignore_index, batched).pixels


def count_images_per_class(
    label_maps: Iterable[Any], num_classes: int, ignore_index: int | None = 255, batched: bool = False
) -> list[int]:
    """Label maps holding each class (at least one valid pixel); see :func:`class_statistics`."""
    return class_statistics(label_maps, num_classes, ignore_index, batched).images


__all__ = ["ClassStatistics", "class_statistics", "count_classes", "count_images_per_class", "per_sample_class_counts"]
