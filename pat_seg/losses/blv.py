"""Balanced Logit Variation (Wang et al., "Balancing Logit Variation for Long-tailed Semantic
Segmentation", CVPR 2023; SPEC section 2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pat_seg.losses._pixel import cross_entropy_over_valid
from pat_seg.losses.class_counts import ClassCountLoss

SAMPLE_BITS = 16  # random bits per noise element: 2**16 equiprobable quantiles


def clamped_half_normal_quantiles(sigma: float, bits: int = SAMPLE_BITS) -> Tensor:
    """``min(sigma * q_k, 1)`` at the mid-points ``(k + 1/2) / 2**bits`` of the half-normal's quantiles.

    The half-normal quantile at ``u`` is ``ndtri((1 + u) / 2)``; computed in float64.
    """
    levels = torch.arange(2**bits, dtype=torch.float64)
    quantiles = torch.special.ndtri(0.5 + 0.5 * (levels + 0.5) / 2**bits)
    return (sigma * quantiles).clamp_max(1.0)


class BLVLoss(ClassCountLoss):
    r"""BLV: cross-entropy on :math:`z_c + |e| \, f_c / \max_k f_k` in training.

    ``e ~ N(0, sigma)`` is drawn per element of the logits and clamped to ``[-1, 1]``;
    :math:`f_c = \log \sum_k n_k - \log n_c` makes the variation grow towards the tail classes, so
    their decision regions are enlarged during training (Wang et al. 2023, Eq. 5-6). The variation is
    training-only: in ``eval()`` the loss is plain cross-entropy on the raw logits.

    Sampling: ``min(|e|, 1)`` is drawn by inverse-transform sampling from 16 random bits per element
    (a table of the 65,536 mid-point quantiles of the clamped half-normal), using torch's generator,
    so ``torch.manual_seed`` / ``seed_everything`` reproduce it. On a CPU, ``torch.randn`` for every
    logit costs more than the whole cross-entropy forward and backward; 16 bits per element (four
    per random 64-bit word) and a table look-up take about half of that. The distribution differs
    from the continuous one only inside each 1/65,536 probability bin: its mean is off by 1e-7 at
    ``sigma = 0.1`` and by 1e-10 at ``sigma = 0.5`` (the tail beyond the last bin is cut at 4.4 sigma,
    which the clamp at 1 cuts anyway for ``sigma >= 0.23``).

    Args:
        class_counts: per-class pixel counts of the training split.
        sigma: standard deviation of ``e`` (the paper's table: 0.5); 0 gives cross-entropy.
        ignore_index: label of pixels that take no part.
    """

    variation_scale: Tensor
    variation_table: Tensor

    def __init__(self, class_counts: list[float] | None = None, sigma: float = 0.5, ignore_index: int = 255) -> None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be a finite number >= 0; got {sigma!r}")
        self.sigma = float(sigma)
        super().__init__(class_counts=class_counts, ignore_index=ignore_index)
        self.register_buffer("variation_table", clamped_half_normal_quantiles(self.sigma), persistent=False)

    def derive_from_counts(self, counts: Tensor) -> None:
        frequency_term = counts.sum().log() - counts.log()
        self.set_class_buffer("variation_scale", frequency_term / frequency_term.max())

    def sample_variation(self, like: Tensor) -> Tensor:
        """``min(|e|, 1)`` with ``e ~ N(0, sigma)``, one fresh draw per element of ``like`` (``[B, L, H, W]``)."""
        numel = like.numel()
        words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=like.device)
        words.random_(torch.iinfo(torch.int64).min, None)  # all 64 bits random (the default leaves the top 0)
        bits = words.view(torch.uint16)
        table = self.variation_table.to(device=like.device, dtype=like.dtype)
        variation = torch.empty_like(like, memory_format=torch.contiguous_format)
        flat = variation.view(-1)
        # index_select needs int32 indices; converting one [B, H, W]-sized chunk at a time keeps the
        # integer temporaries at the size of the target, never of the logits.
        chunk = max(1, numel // like.shape[1])
        for start in range(0, numel, chunk):
            levels = bits[start : start + chunk].to(torch.int32)
            torch.index_select(table, 0, levels, out=flat[start : start + chunk])
        return variation

    def logit_variation(self, logits: Tensor) -> Tensor:
        """The training offset ``min(|e|, 1) * f_c / max f``, fresh ``e ~ N(0, sigma)`` per element."""
        scale = self.variation_scale.to(device=logits.device, dtype=logits.dtype).view(1, -1, 1, 1)
        return self.sample_variation(logits).mul_(scale)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        offset = self.logit_variation(logits) if self.training and self.sigma > 0 else None
        return cross_entropy_over_valid(logits, target, self.ignore_index, logit_offset=offset)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, ignore_index={self.ignore_index}"
