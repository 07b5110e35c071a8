"""Balanced Softmax (Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS
2020)."""

from __future__ import annotations

from torch import Tensor

from pat_seg.losses.base import Reduction
from pat_seg.losses.class_counts import ClassCountLoss
from pat_seg.losses.description import LossDescription
from pat_seg.losses.pixel import class_view, cross_entropy_terms


class BalancedSoftmaxLoss(ClassCountLoss):
    r"""Balanced Softmax: cross-entropy on :math:`z_c + \log n_c` in training (Ren et al. 2020, Eq. 4).

    Adding the log prior of each class to its logit makes the softmax estimate the class-balanced
    posterior; ``n_c`` are the training pixel counts, clamped to >= 1. The shift applies in training
    only: in ``eval()`` the loss is plain cross-entropy on the raw logits, which are also what the
    metrics see.

    Only the Balanced Softmax half of BMS is implemented. The Meta Sampler (a learned, meta-optimised
    re-sampling of training *images* by class) does not transfer to pixels: every image holds many
    classes, so sampling images cannot set per-class pixel rates, and the paper under reproduction
    does not use it either.

    Args:
        class_counts: per-class pixel counts of the training split (given by the data module when
            trained through pat-seg).
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"`` (over valid pixels), ``"sum"`` or ``"none"`` (docs/losses.md).
    """

    description = LossDescription("BMS")

    log_prior: Tensor

    def __init__(
        self, class_counts: list[float] | None = None, ignore_index: int | None = 255, reduction: Reduction = "mean"
    ) -> None:
        super().__init__(class_counts=class_counts, ignore_index=ignore_index, reduction=reduction)

    def derive_from_counts(self, counts: Tensor) -> None:
        self.set_class_buffer("log_prior", counts.log())

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        offset = class_view(self.log_prior, logits) if self.training else None
        return cross_entropy_terms(logits, target, self.ignore_index, logit_offset=offset)
