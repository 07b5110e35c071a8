"""Base class of the pixel losses: the input check and the float32 contract in one place."""

from __future__ import annotations

from torch import Tensor, nn

from pat_seg.losses._pixel import float32_math, upcast
from pat_seg.losses.checks import check_logits_target


class PixelLoss(nn.Module):
    """A loss over ``logits [B, L, H, W]`` and ``target [B, H, W]`` with an ``ignore_index``.

    Subclasses implement :meth:`compute` on upcast (float32/float64) logits; this class checks the
    input first (:func:`~pat_seg.losses.checks.check_logits_target`), so a bad label raises
    ``ValueError`` before any kernel runs, and disables autocast so the math stays in float32 under
    mixed precision.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        check_logits_target(logits, target, self.ignore_index)
        with float32_math(logits):
            return self.compute(upcast(logits), target)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
