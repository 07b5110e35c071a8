"""Base class of the pixel losses: the input check, the reduction and the float32 contract in one place."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from pat_seg.arguments import check_choice
from pat_seg.losses.checks import check_ignore_index, check_logits_target
from pat_seg.losses.pixel import float32_math, reduce_pixel_terms, upcast

# "mean" is each loss's own reduction (the paper's), "sum" the sum of the "none" terms.
Reduction = Literal["mean", "sum", "none"]


class PixelLoss(nn.Module):
    """A loss over ``logits [B, L, *spatial]`` and ``target [B, *spatial]`` with an ``ignore_index``.

    Subclasses implement :meth:`pixel_terms` on upcast (float32/float64) logits; this class checks the
    input first (:func:`~pat_seg.losses.checks.check_logits_target`), so a bad label raises
    ``ValueError`` before any kernel runs, disables autocast so the math stays in float32 under
    mixed precision, and reduces the terms (:func:`~pat_seg.losses.pixel.reduce_pixel_terms`).

    Args:
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"`` (the loss of docs/losses.md), ``"sum"`` (the sum of the per-pixel
            terms) or ``"none"`` (the terms, shaped like the target, 0 at ignored pixels).
    """

    # Whether "mean" divides the sum of the terms by the number of valid pixels. A loss whose terms
    # already carry its own normalisation (PAT, paper Eq. 4) sets this to False.
    mean_over_valid_pixels = True

    def __init__(self, ignore_index: int | None = 255, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_choice("reduction", reduction, Reduction)

    def forward(self, logits: Tensor, target: Tensor, check_labels: bool = True) -> Tensor:
        """The loss of ``logits`` against ``target``, reduced as ``reduction`` says.

        ``check_labels=False`` skips the label-range check (a reduction over the target, and a host
        sync on CUDA) for a caller that has already checked the batch; shapes are checked always.
        """
        check_logits_target(logits, target, self.ignore_index, check_labels)
        with float32_math(logits):
            return self.compute(upcast(logits), target)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        terms, valid = self.pixel_terms(logits, target)
        return reduce_pixel_terms(terms, valid, self.reduction, self.mean_over_valid_pixels)

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """``(terms, valid)``: each pixel's loss term ``[B, *spatial]`` and the mask of valid pixels."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
