"""A loss of your own for pat-seg, as docs/extending.md describes it (tests/test_own_classes.py trains with this file).

``FocalLoss`` is a focal loss (Lin et al. 2017) whose classes are weighted by the inverse square root of
their training pixel counts. For a valid pixel ``j`` with true class ``t``:

    term_j = w_t (1 - p_t)^power (-log p_t),        w_c = n_c^(-1/2) / mean_c'(n_c'^(-1/2))

where ``n_c`` is class ``c``'s pixel count over the training split (each clamped to >= 1), and the loss
is the mean of the terms over the valid pixels. pat-seg hands it the counts through the
``TakesClassCounts`` hook (``needs_class_counts``, ``class_counts``, ``set_class_counts``). Its class name
is pat-seg's on purpose: runs still tell the two apart (``my_loss.FocalLoss``, labelled ``PowerFocal``).

    PYTHONPATH=docs/examples pat-seg fit --model.loss my_loss.FocalLoss --model.loss.init_args.power=3
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from pat_seg.losses import reduce_pixel_terms, target_log_prob
from pat_seg.losses.description import LossDescription
from pat_seg.losses.pixel import float32_math


class FocalLoss(nn.Module):
    """``w_t (1 - p_t)^power (-log p_t)``, mean over the valid pixels; ``w`` from the training class counts.

    Args:
        power: the focusing exponent (focal loss's gamma), >= 0; 0 is weighted cross-entropy.
        class_counts: per-class training pixel counts; ``None``: pat-seg sets them from the data module.
        ignore_index: label of the pixels that take no part (pat-seg fills in the data module's).
        reduction: ``"mean"`` over the valid pixels, their ``"sum"``, or ``"none"`` (one term per pixel).
    """

    # The report's label "PowerFocal (p=3)"; the HParams row shows power (class_counts and ignore_index
    # come from the data, so they never tell two methods apart).
    description = LossDescription("PowerFocal", symbols={"power": "p"})
    # With class_counts and set_class_counts below: pat_seg.losses.hooks.TakesClassCounts.
    needs_class_counts = True
    class_weight: Tensor

    def __init__(
        self,
        power: float = 2.0,
        class_counts: list[float] | None = None,
        ignore_index: int = 255,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> None:
        super().__init__()
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power) or power < 0:
            raise ValueError(f"power must be a finite number >= 0; got {power!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
        self.power = float(power)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.class_counts: list[float] | None = None
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def set_class_counts(self, counts: list[float]) -> None:
        """Weigh the classes by ``counts`` (training pixels per class) from now on."""
        # A class absent from the training split weighs as a one-pixel class, not infinitely.
        inverse_root = torch.tensor(counts, dtype=torch.float64).clamp_min(1.0).rsqrt()
        # Not persistent: derived from the counts, which the run records (a checkpoint never disagrees).
        self.register_buffer("class_weight", inverse_root / inverse_root.mean(), persistent=False)
        self.class_counts = [float(count) for count in counts]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """The loss of ``logits`` ``[B, L, H, W]`` (any float dtype) against ``target`` ``[B, H, W]`` (integer)."""
        if self.class_counts is None:
            raise ValueError("FocalLoss needs class_counts: pass class_counts=[...] or train through pat-seg")
        if logits.shape[1] != len(self.class_counts):
            raise ValueError(f"{len(self.class_counts)} class_counts for logits of {logits.shape[1]} classes")
        with float32_math(logits):  # under mixed precision the math still runs in float32
            log_p_t, valid, index = target_log_prob(logits, target, self.ignore_index)
            weight = self.class_weight.to(log_p_t)[index]  # looked up by label: no one-hot tensor
            terms = weight * (1.0 - log_p_t.exp()).pow(self.power) * -log_p_t
            return reduce_pixel_terms(terms, valid, self.reduction)
