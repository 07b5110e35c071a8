"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

The softmax form over the L classes, as the PAT paper compares it (docs/losses.md), not the
per-class sigmoid form of ``torchvision.ops.sigmoid_focal_loss``."""

from __future__ import annotations

import torch
from torch import Tensor

from pat_seg.arguments import NonNegativeFloat, check_number
from pat_seg.losses.base import PixelLoss, Reduction
from pat_seg.losses.description import LossDescription
from pat_seg.losses.pixel import lookup_class, target_log_prob


def focal_terms(
    logits: Tensor, target: Tensor, ignore_index: int | None, gamma: float, class_weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""``(terms, valid)``: :math:`-w_t (1 - p_t)^\gamma \log p_t` per pixel (``w = 1`` without weights).

    ``1 - p_t`` is ``-expm1(log p_t)``, exact for confident pixels where ``1 - exp`` cancels. It is
    clamped to the smallest normal float so that the gradient of ``x^gamma`` at ``x = 0`` (a pixel
    with ``p_t = 1``, or an ignored pixel, whose ``log p_t`` is set to 0) is 0 and not ``0 * inf``.
    """
    log_p_t, valid, index = target_log_prob(logits, target, ignore_index)
    per_pixel = -log_p_t
    if gamma != 0:
        one_minus_p_t = (-torch.expm1(log_p_t)).clamp_min(torch.finfo(log_p_t.dtype).tiny)
        per_pixel = per_pixel * one_minus_p_t.pow(gamma)
    if class_weight is not None:
        per_pixel = per_pixel * lookup_class(class_weight, index, per_pixel)
    return per_pixel, valid


class FocalLoss(PixelLoss):
    r"""Focal loss: :math:`-\alpha_t (1 - p_t)^\gamma \log p_t` per valid pixel, by default their mean.

    Lin et al. 2017, Eq. 5. ``gamma = 0`` with no ``alpha`` is cross-entropy.

    Args:
        gamma: focusing parameter (the paper's table uses 2).
        alpha: optional per-class weights ``alpha_c`` (one per class, used as given).
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"`` (over valid pixels), ``"sum"`` or ``"none"`` (docs/losses.md).
    """

    description = LossDescription("Focal", symbols={"gamma": "gamma"})

    def __init__(
        self,
        gamma: NonNegativeFloat = 2.0,
        alpha: list[NonNegativeFloat] | None = None,
        ignore_index: int | None = 255,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        self.gamma = check_number("gamma", gamma, at_least=0)
        self.alpha: Tensor | None
        if alpha is None:
            self.register_buffer("alpha", None)
        else:
            if not list(alpha):
                raise ValueError("alpha must be None or a list of per-class weights (one per class); got []")
            values = [check_number(f"alpha[{c}]", a, at_least=0) for c, a in enumerate(alpha)]
            self.register_buffer("alpha", torch.tensor(values, dtype=torch.float64))

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if self.alpha is not None and self.alpha.numel() != logits.shape[1]:
            raise ValueError(f"alpha has {self.alpha.numel()} weights but the logits have {logits.shape[1]} classes")
        return focal_terms(logits, target, self.ignore_index, self.gamma, self.alpha)

    def extra_repr(self) -> str:
        alpha = None if self.alpha is None else self.alpha.tolist()
        return f"gamma={self.gamma}, alpha={alpha}, {super().extra_repr()}"
