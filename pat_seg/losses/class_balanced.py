"""Class-Balanced loss and CB-Focal (Cui et al., "Class-Balanced Loss Based on Effective Number of
Samples", CVPR 2019).

CB-Focal is the softmax focal loss with CB weights; the CB paper's own focal variant is sigmoid per
class (docs/losses.md)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pat_seg.arguments import HalfOpenUnitInterval, NonNegativeFloat, check_number
from pat_seg.losses.base import PixelLoss, Reduction
from pat_seg.losses.class_counts import ClassCountLoss
from pat_seg.losses.description import LossDescription
from pat_seg.losses.focal import focal_terms
from pat_seg.losses.pixel import cross_entropy_terms


def check_beta(beta: float | None) -> float | None:
    """``b`` of the effective number (Cui et al. Eq. 8) in [0, 1), or None for the default ``1 - 1/N``."""
    return None if beta is None else check_number("beta", beta, at_least=0, below=1, note="or None: 1 - 1/N")


def class_balanced_weights(counts: Tensor, beta: float | None = None) -> Tensor:
    r"""Cui et al. Eq. 8 weights :math:`w_c = (1 - b) / (1 - b^{n_c})`, normalised to sum to ``L``.

    ``counts`` are float64 per-class pixel counts. ``beta=None`` uses :math:`b = 1 - 1/N` with ``N``
    the total count: with pixel counts (millions per class) the paper's ``b = 0.9999`` saturates
    every effective number at :math:`1/(1-b)` and makes all weights equal. ``1 - b^n`` is computed
    as ``-expm1(n * log1p(-(1 - b)))``, which keeps its digits when ``b`` is within 1e-9 of 1.
    """
    counts = counts.to(torch.float64)
    one_minus_beta = 1.0 / float(counts.sum()) if beta is None else 1.0 - beta
    log_beta = math.log1p(-one_minus_beta) if one_minus_beta < 1 else -math.inf
    weights = one_minus_beta / -torch.expm1(counts * log_beta)  # 1 / effective number
    return weights * (counts.numel() / weights.sum())


class ClassBalancedLoss(ClassCountLoss):
    r"""Class-balanced cross-entropy: :math:`-w_t \log p_t` per valid pixel, by default their mean.

    ``w`` from :func:`class_balanced_weights` (Cui et al. 2019, Eq. 8, normalised to sum to ``L``).
    The mean is over valid pixels, not divided by the sum of the pixels' weights (which would undo
    the re-weighting of the loss scale).

    Args:
        class_counts: per-class pixel counts of the training split (given by the data module when
            trained through pat-seg).
        beta: ``b`` of the effective number; ``None`` = ``1 - 1/N``, ``N`` the total pixel count.
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"`` (over valid pixels), ``"sum"`` or ``"none"`` (docs/losses.md).
    """

    # b = 1 - 1/N is the method as pat-seg runs it (docs/losses.md); any other b (the paper's 0.9999)
    # is named in the label, so such runs never pool with the default ones in a report.
    description = LossDescription("CB", switches={"beta": (None, "b={value}")})

    class_weight: Tensor

    def __init__(
        self,
        class_counts: list[float] | None = None,
        beta: HalfOpenUnitInterval | None = None,
        ignore_index: int | None = 255,
        reduction: Reduction = "mean",
    ) -> None:
        self.beta = check_beta(beta)
        super().__init__(class_counts=class_counts, ignore_index=ignore_index, reduction=reduction)

    def derive_from_counts(self, counts: Tensor) -> None:
        self.set_class_buffer("class_weight", class_balanced_weights(counts, self.beta))

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return cross_entropy_terms(logits, target, self.ignore_index, self.class_weight)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, {super().extra_repr()}"


class ClassBalancedFocalLoss(ClassBalancedLoss):
    r"""CB-Focal: :math:`-w_t (1 - p_t)^\gamma \log p_t` per valid pixel (by default their mean), ``w`` as in CB."""

    description = LossDescription("CBFocal", switches={"beta": (None, "b={value}")})

    def __init__(
        self,
        class_counts: list[float] | None = None,
        beta: HalfOpenUnitInterval | None = None,
        gamma: NonNegativeFloat = 2.0,
        ignore_index: int | None = 255,
        reduction: Reduction = "mean",
    ) -> None:
        self.gamma = check_number("gamma", gamma, at_least=0)
        super().__init__(class_counts=class_counts, beta=beta, ignore_index=ignore_index, reduction=reduction)

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return focal_terms(logits, target, self.ignore_index, self.gamma, self.class_weight)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, {PixelLoss.extra_repr(self)}"
