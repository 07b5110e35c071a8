"""Segmentation metrics from one confusion matrix accumulated over a whole split (paper Table 3: mIoU, pixel
accuracy, Dice error).

The confusion matrix is a torchmetrics state, so under DDP it is summed across processes before any
ratio is taken; per-batch averages (the authors' metric) would weight batches instead of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from pat_seg.exceptions import ConfigurationError


def iou_per_class(confmat: Tensor) -> Tensor:
    """``TP / (TP + FP + FN)`` per class from a ``[L, L]`` matrix (rows = ground truth); NaN where the
    union is empty (the class occurs in neither ground truth nor prediction)."""
    confmat = confmat.double()
    tp = confmat.diagonal()
    union = confmat.sum(0) + confmat.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def dice_per_class(confmat: Tensor) -> Tensor:
    """``2TP / (2TP + FP + FN)`` per class; NaN where the class occurs nowhere."""
    confmat = confmat.double()
    tp = confmat.diagonal()
    denom = confmat.sum(0) + confmat.sum(1)
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))


def pixel_accuracy(confmat: Tensor) -> Tensor:
    """Correct valid pixels / valid pixels (0 when there are none)."""
    confmat = confmat.double()
    return confmat.diagonal().sum() / confmat.sum().clamp_min(1)


def tail_classes(class_counts: Sequence[float], fraction: float = 1 / 3) -> list[int]:
    """The rarest ``ceil(fraction * L)`` classes by training pixel count (ties broken by index)."""
    count = max(1, math.ceil(fraction * len(class_counts) - 1e-9))
    order = sorted(range(len(class_counts)), key=lambda c: (class_counts[c], c))
    return sorted(order[:count])


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Confusion-matrix metric that reports mIoU, per-class IoU, pixel accuracy, Dice and head/tail mIoU.

    ``update(preds [B, H, W] long, target [B, H, W] long)``; ``compute()`` returns a flat dict of
    float tensors keyed ``miou``, ``pixel_accuracy``, ``mean_dice``, ``dice_error``, ``iou/<class name>``
    and, when training class counts are known, ``miou_head`` and ``miou_tail`` (tail = rarest third).

    Example:
        One image of three classes whose last column is ignored. Class 0 has 1 of its 2 pixels right
        (IoU 1/2); class 1 is predicted on 3 pixels, 1 of them its own (IoU 1/3); class 2 is missed
        (IoU 0). So mIoU is (1/2 + 1/3 + 0) / 3 = 5/18 and pixel accuracy 2/4:

        >>> import torch
        >>> from pat_seg.metrics import SegmentationMetrics
        >>> metrics = SegmentationMetrics(num_classes=3, class_names=["sky", "road", "car"])
        >>> metrics.update(torch.tensor([[[0, 1, 2], [1, 1, 0]]]), torch.tensor([[[0, 0, 255], [1, 2, 255]]]))
        >>> result = metrics.compute()
        >>> [round(result[key].item(), 4) for key in ("iou/sky", "iou/road", "iou/car", "miou", "pixel_accuracy")]
        [0.5, 0.3333, 0.0, 0.2778, 0.5]
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        class_counts: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ConfigurationError(f"got {len(self.class_names)} class names for num_classes={num_classes}")
        self.set_class_counts(class_counts)
        self.computed_confmat: Tensor | None = None  # the (process-summed) matrix of the last compute()

    def set_class_counts(self, class_counts: Sequence[float] | None) -> None:
        """Define the head/tail split from training pixel counts (None: no head/tail metrics)."""
        if class_counts is not None and len(class_counts) != self.num_classes:
            raise ConfigurationError(f"got {len(class_counts)} class counts for num_classes={self.num_classes}")
        self.tail = tail_classes(list(class_counts)) if class_counts is not None else None

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        # torchmetrics has summed the state over processes before calling compute: keep that matrix
        # for callbacks that draw it, instead of syncing a second time.
        confmat = self.computed_confmat = self.confmat.detach().clone()
        iou = iou_per_class(confmat)
        dice = dice_per_class(confmat)
        # Means over the classes present (NaN entries skipped; NaN when no class is present).
        result = {
            "miou": torch.nanmean(iou),
            "pixel_accuracy": pixel_accuracy(confmat),
            "mean_dice": torch.nanmean(dice),
            "dice_error": 1 - torch.nanmean(dice),
        }
        if self.tail is not None:
            is_tail = torch.zeros(self.num_classes, dtype=torch.bool, device=iou.device)
            is_tail[self.tail] = True
            result["miou_head"] = torch.nanmean(iou[~is_tail])
            result["miou_tail"] = torch.nanmean(iou[is_tail])
        for name, value in zip(self.class_names, iou):
            result[f"iou/{name}"] = value
        return {key: value.float() for key, value in result.items()}
