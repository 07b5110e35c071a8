"""Balanced Logit Variation (Wang et al., "Balancing Logit Variation for Long-tailed Semantic
Segmentation", CVPR 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from pat_seg.arguments import NonNegativeFloat, check_number
from pat_seg.losses.base import Reduction
from pat_seg.losses.class_counts import ClassCountLoss
from pat_seg.losses.description import LossDescription
from pat_seg.losses.pixel import class_view, cross_entropy_terms


class BLVLoss(ClassCountLoss):
    r"""BLV: cross-entropy on :math:`z_c + |e| \, f_c / \max_k f_k` in training.

    ``e ~ N(0, sigma)`` is drawn per element of the logits and clamped to ``[-1, 1]``;
    :math:`f_c = \log \sum_k n_k - \log n_c` makes the variation grow towards the tail classes, so
    their decision regions are enlarged during training (Wang et al. 2023, Eq. 5-6). The variation is
    training-only: in ``eval()`` the loss is plain cross-entropy on the raw logits.

    Sampling: one ``torch.randn`` draw per element from torch's generator on the logits' device, so
    ``torch.manual_seed`` / ``seed_everything`` reproduce it. Drawing one normal per logit is most of
    this loss's cost over cross-entropy (docs/benchmarks.md).

    Args:
        class_counts: per-class pixel counts of the training split.
        sigma: standard deviation of ``e`` (the paper's table: 0.5); 0 gives cross-entropy.
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"`` (over valid pixels), ``"sum"`` or ``"none"`` (docs/losses.md).
    """

    description = LossDescription("BLV", symbols={"sigma": "sigma"})

    variation_scale: Tensor

    def __init__(
        self,
        class_counts: list[float] | None = None,
        sigma: NonNegativeFloat = 0.5,
        ignore_index: int | None = 255,
        reduction: Reduction = "mean",
    ) -> None:
        self.sigma = check_number("sigma", sigma, at_least=0)
        super().__init__(class_counts=class_counts, ignore_index=ignore_index, reduction=reduction)

    def derive_from_counts(self, counts: Tensor) -> None:
        frequency_term = counts.sum().log() - counts.log()
        self.set_class_buffer("variation_scale", frequency_term / frequency_term.max())

    def sample_variation(self, like: Tensor) -> Tensor:
        """``min(|e|, 1)`` with ``e ~ N(0, sigma)``, one fresh draw per element of ``like`` (``[B, L, *spatial]``)."""
        noise = torch.randn(like.shape, dtype=like.dtype, device=like.device)
        return noise.mul_(self.sigma).abs_().clamp_max_(1.0)

    def logit_variation(self, logits: Tensor) -> Tensor:
        """The training offset ``min(|e|, 1) * f_c / max f``, fresh ``e ~ N(0, sigma)`` per element."""
        scale = class_view(self.variation_scale.to(device=logits.device, dtype=logits.dtype), logits)
        return self.sample_variation(logits).mul_(scale)

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        offset = self.logit_variation(logits) if self.training and self.sigma > 0 else None
        return cross_entropy_terms(logits, target, self.ignore_index, logit_offset=offset)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, {super().extra_repr()}"
