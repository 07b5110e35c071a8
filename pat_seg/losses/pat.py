"""PAT: Pixel-wise Adaptive Training loss (paper Eq. 4 and Eq. 5; SPEC section 1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pat_seg.kernels import FUSED_DTYPES, check_cpu_implementation, triton_available, use_fused_cpu
from pat_seg.kernels.softmax_cross_entropy_cpu import fused_softmax_cross_entropy
from pat_seg.losses._pixel import pat_pixel_weights, per_image_class_counts, target_log_prob
from pat_seg.losses.base import PixelLoss

CLASS_REDUCTIONS = ("sum", "mean")
IMPLEMENTATIONS = ("auto", "eager", "triton", "cpu")


class PATLoss(PixelLoss):
    r"""Pixel-wise Adaptive Training loss.

    For image :math:`i`, valid pixel :math:`j` of true class :math:`l = y_{ij}`:

    .. math::
        \beta_{ij} = \exp\big((1 - p_t(ij) - \epsilon) / T\big) \qquad \text{(Eq. 5)}

        \mathcal{L} = \frac{1}{B} \sum_i \sum_j \beta_{ij} \, \frac{-\log p_t(ij)}{S_i^{y_{ij}}}
        \qquad \text{(Eq. 4)}

    where :math:`S_i^l` is the number of non-ignored pixels of class :math:`l` in image :math:`i`
    (Eq. 2). Every class present in an image thus contributes the weighted mean of its pixel losses,
    whatever its mask size; absent classes contribute nothing; an all-ignored image contributes 0 and
    still counts in :math:`B`.

    Args:
        temperature: ``T`` of Eq. 5 (the paper's best overall is 20). Larger ``T`` flattens the
            confidence weight towards 1.
        epsilon: ``eps`` of Eq. 5; shifts the weight down by ``exp(-eps/T)``.
        ignore_index: label of pixels that take no part.
        detach_weight: treat ``beta`` as a constant in the backward pass (the paper does not).
        class_reduction: ``"sum"`` over the classes of an image (Eq. 4) or ``"mean"`` (divide each
            image's sum by its number of present classes).
        implementation: ``"auto"`` (default) runs the fused Triton kernel of
            :mod:`pat_seg.kernels.pat_triton` for CUDA float32/bfloat16/float16 logits when Triton is
            installed, the fused C++ kernel of :mod:`pat_seg.kernels.softmax_cross_entropy_cpu` for CPU
            float32 logits when it builds here, and the eager PyTorch code otherwise; ``"eager"``
            always runs PyTorch; ``"triton"`` and ``"cpu"`` always run that kernel and raise
            ``ValueError`` where it cannot. All give the same value and gradient.

    Cost: one ``log_softmax``, one ``gather`` and one ``bincount`` -- O(B*L*H*W) like cross-entropy,
    and no one-hot target tensor.
    """

    def __init__(
        self,
        temperature: float = 20.0,
        epsilon: float = 0.0,
        ignore_index: int = 255,
        detach_weight: bool = False,
        class_reduction: str = "sum",
        implementation: str = "auto",
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be a finite number; got {epsilon!r}")
        if class_reduction not in CLASS_REDUCTIONS:
            raise ValueError(f"class_reduction must be one of {CLASS_REDUCTIONS}; got {class_reduction!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")
        if implementation == "cpu":
            check_cpu_implementation(implementation)
        if implementation == "triton" and not triton_available():
            raise ValueError("implementation='triton' needs the triton package, which is not installed")
        self.implementation = implementation
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.detach_weight = bool(detach_weight)
        self.class_reduction = class_reduction

    def _use_triton(self, logits: Tensor) -> bool:
        if self.implementation == "auto":
            return logits.is_cuda and logits.dtype in FUSED_DTYPES and triton_available()
        return self.implementation == "triton"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if not self._use_triton(logits):
            return super().forward(logits, target)
        # Imported here: Triton decides at import whether to compile for the GPU or interpret on the CPU.
        from pat_seg.kernels.pat_triton import fused_pat_loss

        # fused_pat_loss runs PixelLoss's input check (check_logits_target) before its kernel.
        return fused_pat_loss(
            logits,
            target,
            temperature=self.temperature,
            epsilon=self.epsilon,
            ignore_index=self.ignore_index,
            detach_weight=self.detach_weight,
            class_reduction=self.class_reduction,
        )

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        if use_fused_cpu(self.implementation, logits):  # "triton" never gets here (see forward)
            weights = pat_pixel_weights(target, self.ignore_index, logits.shape[1], self.class_reduction)
            return fused_softmax_cross_entropy(
                logits, target, self.ignore_index, class_weight=weights, normalize=False, pixel_function="pat",
                temperature=self.temperature, epsilon=self.epsilon, detach_weight=self.detach_weight,
            )
        batch, num_classes = logits.shape[:2]
        log_p_t, valid, index = target_log_prob(logits, target, self.ignore_index)

        p_t = log_p_t.exp()
        beta = torch.exp((1.0 - p_t - self.epsilon) / self.temperature)
        if self.detach_weight:
            beta = beta.detach()

        class_counts = per_image_class_counts(index, valid, num_classes)  # S_i^l, [B, L]
        mask_size = class_counts.gather(1, index.flatten(1)).view_as(index)  # S_i^{y_ij} per pixel
        per_pixel = (beta * -log_p_t / mask_size.clamp_min(1).to(log_p_t.dtype)).masked_fill(~valid, 0.0)
        per_image = per_pixel.flatten(1).sum(1)
        if self.class_reduction == "mean":
            present = (class_counts > 0).sum(1).clamp_min(1).to(per_image.dtype)
            per_image = per_image / present
        return per_image.sum() / batch

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, ignore_index={self.ignore_index}, "
            f"detach_weight={self.detach_weight}, class_reduction={self.class_reduction!r}, "
            f"implementation={self.implementation!r}"
        )
