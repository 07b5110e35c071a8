"""Cross-entropy, the reference every other loss is compared with (docs/losses.md)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pat_seg.losses.base import PixelLoss
from pat_seg.losses.description import LossDescription


class CrossEntropyLoss(PixelLoss):
    """Mean of ``-log p_t`` over non-ignored pixels, with ``F.cross_entropy`` semantics.

    Unlike ``F.cross_entropy(reduction="mean")`` a batch whose pixels are all ignored gives 0, not NaN.

    Args:
        ignore_index: label of pixels that take no part.
    """

    description = LossDescription("CE")

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        total = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        num_valid = (target != self.ignore_index).sum().clamp_min(1)
        return total / num_valid.to(total.dtype)
