"""Cross-entropy, the reference every other loss is compared with (SPEC section 2, row CE)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pat_seg.kernels import check_cpu_implementation, use_fused_cpu
from pat_seg.kernels.softmax_cross_entropy_cpu import fused_softmax_cross_entropy
from pat_seg.losses.base import PixelLoss


class CrossEntropyLoss(PixelLoss):
    """Mean of ``-log p_t`` over non-ignored pixels, with ``F.cross_entropy`` semantics.

    Unlike ``F.cross_entropy(reduction="mean")`` a batch whose pixels are all ignored gives 0, not NaN.

    Args:
        ignore_index: label of pixels that take no part.
        implementation: ``"auto"`` (default) runs the fused C++ kernel of
            :mod:`pat_seg.kernels.softmax_cross_entropy_cpu` for CPU float32 logits when it builds here
            (one pass over the logits for loss and gradient) and ``F.cross_entropy`` otherwise;
            ``"eager"`` always PyTorch; ``"cpu"`` always the kernel (``ValueError`` where it cannot run).
    """

    def __init__(self, ignore_index: int = 255, implementation: str = "auto") -> None:
        super().__init__(ignore_index=ignore_index)
        self.implementation = check_cpu_implementation(implementation)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        if use_fused_cpu(self.implementation, logits):
            return fused_softmax_cross_entropy(logits, target, self.ignore_index)
        total = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        num_valid = (target != self.ignore_index).sum().clamp_min(1)
        return total / num_valid.to(total.dtype)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, implementation={self.implementation!r}"
