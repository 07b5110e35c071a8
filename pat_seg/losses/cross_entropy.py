"""Cross-entropy, the reference every other loss is compared with (docs/losses.md)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pat_seg.losses.base import PixelLoss
from pat_seg.losses.description import LossDescription

# F.cross_entropy's own default; used when nothing is ignored (the labels were checked to be classes).
_TORCH_IGNORE_INDEX = -100


class CrossEntropyLoss(PixelLoss):
    """``-log p_t`` per valid pixel, with ``F.cross_entropy`` semantics (mean over valid pixels by default).

    Unlike ``F.cross_entropy(reduction="mean")`` a batch whose pixels are all ignored gives 0, not NaN.

    Args:
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (docs/losses.md).
    """

    description = LossDescription("CE")

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        ignore_index = _TORCH_IGNORE_INDEX if self.ignore_index is None else self.ignore_index
        if self.reduction == "none":
            return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
        total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
        if self.reduction == "sum":
            return total
        num_valid = target.numel() if self.ignore_index is None else (target != self.ignore_index).sum().clamp_min(1)
        return total / num_valid
