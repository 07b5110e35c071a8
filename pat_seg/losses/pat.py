"""PAT: Pixel-wise Adaptive Training loss (paper Eq. 4 and Eq. 5; docs/losses.md)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pat_seg.class_statistics import per_sample_class_counts
from pat_seg.kernels import triton_available
from pat_seg.losses._pixel import float32_math, target_log_prob, valid_mask_and_index
from pat_seg.losses.base import PixelLoss
from pat_seg.losses.checks import check_logits_target

CLASS_REDUCTIONS = ("sum", "mean")
IMPLEMENTATIONS = ("auto", "eager", "triton")
# "image_class": paper Eq. 4 (each class's pixel terms divided by its mask size in that image);
# "pixel": the mean over the batch's valid pixels, cross-entropy's reduction (Eq. 4 switched off).
NORMALIZATIONS = ("image_class", "pixel")


def pat_weight_table(
    index: Tensor,
    valid: Tensor,
    num_classes: int,
    normalization: str,
    class_reduction: str,
    dtype: torch.dtype,
) -> Tensor:
    r"""PAT's normalisation as a ``[B, L]`` table ``w``: pixel ``j`` of image ``i`` is weighted by ``w[i, y_ij]``.

    - ``normalization="image_class"`` (paper Eq. 4): :math:`w_{il} = 1 / (B \, S_i^l)`, so each class
      present in an image contributes the mean of its pixel terms and the batch is averaged over its
      ``B`` images. With ``class_reduction="mean"`` each row is further divided by ``K_i``, the
      number of classes present in that image.
    - ``normalization="pixel"``: :math:`w_{il} = 1 / V` for every entry, ``V`` the number of valid
      pixels in the batch (at least 1): the mean over valid pixels, as cross-entropy reduces. No
      histogram is needed, and ``V`` stays on the device (no host sync).

    The PyTorch code of :class:`PATLoss` and the Triton kernel read the same table, so both paths
    normalise identically whichever option is chosen.
    """
    if normalization == "pixel":
        inverse = 1.0 / valid.sum().clamp_min(1).to(dtype)  # 1 / V, a 0-d tensor
        return inverse.expand(index.shape[0], num_classes)
    counts = per_sample_class_counts(index, valid, num_classes).to(dtype)  # S_i^l
    weights = 1.0 / (index.shape[0] * counts.clamp_min(1.0))
    if class_reduction == "mean":
        weights = weights / (counts > 0).sum(1, keepdim=True).clamp_min(1).to(dtype)  # K_i
    return weights


class PATLoss(PixelLoss):
    r"""Pixel-wise Adaptive Training loss, and the two ablations that switch off one ingredient each.

    For image :math:`i`, valid pixel :math:`j` of true class :math:`l = y_{ij}`:

    .. math::
        \beta_{ij} = \exp\big((1 - p_t(ij) - \epsilon) / T\big) \qquad \text{(Eq. 5)}

        \mathcal{L} = \frac{1}{B} \sum_i \sum_j \beta_{ij} \, \frac{-\log p_t(ij)}{S_i^{y_{ij}}}
        \qquad \text{(Eq. 4)}

    where :math:`S_i^l` is the number of non-ignored pixels of class :math:`l` in image :math:`i`
    (Eq. 2). Every class present in an image thus contributes the weighted mean of its pixel losses,
    whatever its mask size; absent classes contribute nothing; an all-ignored image contributes 0 and
    still counts in :math:`B`.

    The paper applies both ingredients together. To measure what each one does alone:

    - ``confidence_weight=False`` sets :math:`\beta_{ij} = 1` (Eq. 5 off; ``temperature`` and
      ``epsilon`` are then unused): :math:`\frac{1}{B} \sum_i \sum_j -\log p_t(ij) / S_i^{y_{ij}}`.
    - ``normalization="pixel"`` replaces Eq. 4's division by :math:`B \, S_i^{y_{ij}}` with the
      mean over the batch's :math:`V` valid pixels, as cross-entropy does:
      :math:`\frac{1}{V} \sum_{ij} \beta_{ij} (-\log p_t(ij))` (0 when :math:`V = 0`).

    With both off the loss is cross-entropy.

    Args:
        temperature: ``T`` of Eq. 5 (the paper's best overall is 20). Larger ``T`` flattens the
            confidence weight towards 1.
        epsilon: ``eps`` of Eq. 5; shifts the weight down by ``exp(-eps/T)``.
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        detach_weight: treat ``beta`` as a constant in the backward pass (the paper does not).
        class_reduction: ``"sum"`` over the classes of an image (Eq. 4) or ``"mean"`` (divide each
            image's sum by its number of present classes). ``"mean"`` needs
            ``normalization="image_class"``: with ``"pixel"`` there are no per-class sums to average.
        confidence_weight: ``True`` (default) applies Eq. 5's ``beta``; ``False`` sets ``beta = 1``.
        normalization: ``"image_class"`` (default, Eq. 4) or ``"pixel"`` (mean over valid pixels).
        implementation: ``"auto"`` (default) and ``"eager"`` run the PyTorch code below on every
            device. ``"triton"`` opts in to the fused kernel of :mod:`pat_seg.kernels.pat_triton`
            (CUDA float32/bfloat16/float16 logits; same value and gradient, every option above).
            ``"auto"`` will choose the kernel on CUDA only once a measured GPU run shows it right
            and faster than the PyTorch code (docs/benchmarks.md); until then it never does.

        reduction: ``"mean"`` (default) and ``"sum"`` both return the loss above: each pixel's term
            already carries the normalisation (``1 / (B S_i^{y_ij})``, or ``1 / V``), so the terms sum
            to the loss. ``"none"`` returns those terms, shaped like the target, 0 at ignored pixels
            (not with ``implementation="triton"``, which returns the sum only).

    Logits ``[B, L, *spatial]`` of any number of spatial dimensions: for volumes ``[B, L, D, H, W]``
    "image" means sample, and :math:`S_i^l` counts the class's voxels over the whole volume. The
    Triton kernel takes images ``[B, L, H, W]`` only.

    Cost: one ``log_softmax``, one ``gather`` and one per-image class histogram (none with
    ``normalization="pixel"``) -- O(B*L*H*W) like cross-entropy, and no one-hot target tensor.
    """

    # The terms carry Eq. 4's 1 / (B S_i^l) (or 1 / V): "mean" is their sum.
    mean_over_valid_pixels = False

    def __init__(
        self,
        temperature: float = 20.0,
        epsilon: float = 0.0,
        ignore_index: int | None = 255,
        detach_weight: bool = False,
        class_reduction: str = "sum",
        implementation: str = "auto",
        confidence_weight: bool = True,
        normalization: str = "image_class",
        reduction: str = "mean",
    ) -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"temperature must be a finite number > 0; got {temperature!r} "
                f"(confidence_weight=False switches the weight of Eq. 5 off)"
            )
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be a finite number; got {epsilon!r}")
        if class_reduction not in CLASS_REDUCTIONS:
            raise ValueError(f"class_reduction must be one of {CLASS_REDUCTIONS}; got {class_reduction!r}")
        # A bool only: a string such as "false" is truthy and would silently keep the weight on.
        if not isinstance(confidence_weight, bool):
            raise ValueError(f"confidence_weight must be True or False; got {confidence_weight!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
        if normalization == "pixel" and class_reduction != "sum":
            raise ValueError(
                f"class_reduction={class_reduction!r} needs normalization='image_class' (it averages the "
                f"per-class sums of Eq. 4, which normalization='pixel' does not form)"
            )
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")
        if implementation == "triton" and not triton_available():
            raise ValueError("implementation='triton' needs the triton package, which is not installed")
        if implementation == "triton" and reduction == "none":
            raise ValueError(
                "reduction='none' needs implementation='eager' or 'auto': the Triton kernel returns the "
                "summed loss only"
            )
        self.implementation = implementation
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.detach_weight = bool(detach_weight)
        self.class_reduction = class_reduction
        self.confidence_weight = confidence_weight
        self.normalization = normalization

    def uses_triton(self, logits: Tensor) -> bool:
        """Whether a call on ``logits`` runs the Triton kernel: only when asked for (see ``implementation``)."""
        return self.implementation == "triton"

    def forward(self, logits: Tensor, target: Tensor, check_labels: bool = True) -> Tensor:
        if not self.uses_triton(logits):
            return super().forward(logits, target, check_labels)
        check_logits_target(logits, target, self.ignore_index, check_labels)
        if logits.dim() != 4:
            raise ValueError(
                f"implementation='triton' takes images, logits [B, L, H, W]; got shape {list(logits.shape)} "
                f"(implementation='eager' takes any number of spatial dimensions)"
            )
        # Imported here: Triton decides at import whether to compile for the GPU or interpret on the CPU.
        from pat_seg.kernels.pat_triton import fused_pat_loss

        with float32_math(logits):
            valid, index = valid_mask_and_index(target, self.ignore_index)
            weights = pat_weight_table(
                index, valid, logits.shape[1], self.normalization, self.class_reduction, torch.float32
            )
        return fused_pat_loss(
            logits, target, weights, temperature=self.temperature, epsilon=self.epsilon,
            # With nothing ignored the labels lie in [0, L) (checked, or vouched for), so -1 matches none.
            ignore_index=-1 if self.ignore_index is None else self.ignore_index, detach_weight=self.detach_weight,
            confidence_weight=self.confidence_weight,
        )

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        log_p_t, valid, index = target_log_prob(logits, target, self.ignore_index)
        weights = pat_weight_table(
            index, valid, logits.shape[1], self.normalization, self.class_reduction, log_p_t.dtype
        )
        # 1 / (B S_i^{y_ij}) (Eq. 4), or 1 / V with normalization="pixel"
        pixel_weight = weights.gather(1, index.flatten(1)).view_as(index)
        if self.confidence_weight:
            beta = torch.exp((1.0 - log_p_t.exp() - self.epsilon) / self.temperature)  # Eq. 5
            if self.detach_weight:
                beta = beta.detach()
            pixel_weight = pixel_weight * beta
        return pixel_weight * -log_p_t, valid

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, {super().extra_repr()}, "
            f"detach_weight={self.detach_weight}, class_reduction={self.class_reduction!r}, "
            f"confidence_weight={self.confidence_weight}, normalization={self.normalization!r}, "
            f"implementation={self.implementation!r}"
        )
