"""PAT: Pixel-wise Adaptive Training loss (paper Eq. 4 and Eq. 5; docs/losses.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from pat_seg.arguments import ClosedUnitInterval, PositiveFloat, check_choice, check_number
from pat_seg.class_statistics import per_sample_class_counts
from pat_seg.kernels import triton_available
from pat_seg.losses.base import PixelLoss, Reduction
from pat_seg.losses.checks import check_logits_target
from pat_seg.losses.description import LossDescription
from pat_seg.losses.pixel import float32_math, target_log_prob, valid_mask_and_index

# "sum": Eq. 4's sum over the classes of an image; "mean": that sum divided by the image's class count.
ClassReduction = Literal["sum", "mean"]
# "auto" and "eager": the PyTorch code; "triton": the fused kernel (pat_seg.kernels.pat_triton).
Implementation = Literal["auto", "eager", "triton"]
# "image_class": paper Eq. 4 (each class's pixel terms divided by its mask size in that image);
# "pixel": the mean over the batch's valid pixels, cross-entropy's reduction (Eq. 4 switched off).
Normalization = Literal["image_class", "pixel"]
# "none": Eq. 5's beta as it stands; "batch_minmax": beta min-max normalised to [0, 1] over the batch's
# valid pixels, the reading of the paper's Fig. 2 caption ("beta is normalized to [0, 1]").
WeightNormalization = Literal["none", "batch_minmax"]


def presence_correction(class_presence: Sequence[float], presence_exponent: float) -> Tensor:
    r"""Per-class factors :math:`a_l = \pi_l^{-\alpha} / Z` of the presence-corrected Eq. 4, float64 ``[L]``.

    :math:`\pi_l` is the share of training images that contain class :math:`l`. Under Eq. 4 a class's
    expected total weight per image is :math:`\pi_l` (it weighs 1 in each image it is in), so
    multiplying its terms by :math:`\pi_l^{-\alpha}` moves that weight towards
    :math:`\pi_l^{1 - \alpha}`: ``alpha = 0`` is PAT, ``alpha = 1`` gives every class the same
    expected weight. :math:`Z = \sum_l \pi_l^{1 - \alpha} / \sum_l \pi_l` over the classes with
    :math:`\pi_l > 0` keeps the expected total weight :math:`\sum_l \pi_l a_l = \sum_l \pi_l`
    unchanged, so the loss keeps PAT's scale. A class in no training image (:math:`\pi_l = 0`) gets
    the largest factor of the present classes, not an infinite one: its pixels can only appear
    outside training.
    """
    presence = validated_class_presence(class_presence)
    present = presence > 0
    if not bool(present.any()):
        raise ValueError(f"class_presence has no class with a share > 0; got {list(class_presence)}")
    shares = presence[present]
    normaliser = (shares ** (1.0 - presence_exponent)).sum() / shares.sum()  # Z
    factors = torch.zeros_like(presence)
    factors[present] = shares ** (-presence_exponent) / normaliser
    factors[~present] = factors[present].max()
    return factors


def validated_class_presence(class_presence: Sequence[float]) -> Tensor:
    """``class_presence`` as a float64 tensor; ``ValueError`` naming a value outside [0, 1]."""
    if isinstance(class_presence, (str, bytes)) or not isinstance(class_presence, Sequence) or len(class_presence) < 2:
        raise ValueError(
            f"class_presence must be a list of per-class shares of training images (at least 2); got {class_presence!r}"
        )
    shares = [
        check_number(f"class_presence[{cls}]", share, at_least=0, at_most=1, note="a share of training images")
        for cls, share in enumerate(class_presence)
    ]
    return torch.tensor(shares, dtype=torch.float64)


def pat_weight_table(
    index: Tensor,
    valid: Tensor,
    num_classes: int,
    normalization: Normalization,
    class_reduction: ClassReduction,
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


def batch_minmax_confidence_weight(p_t: Tensor, valid: Tensor, temperature: float) -> Tensor:
    r"""Eq. 5's :math:`\beta` min-max normalised to [0, 1] over the batch's valid pixels, ``[B, *spatial]``.

    .. math::
        \beta'_{ij} = \frac{\beta_{ij} - \min \beta}{\max \beta - \min \beta}, \qquad
        \beta_{ij} = \exp\big((1 - p_t(ij) - \epsilon) / T\big),

    min and max over the valid pixels of the whole batch (the reading of the paper's Fig. 2 caption,
    "beta is normalized to [0, 1]"). :math:`\epsilon` multiplies every :math:`\beta` by
    :math:`e^{-\epsilon/T}`, which cancels, so it is not an argument. With :math:`h` and :math:`l` the
    largest and smallest valid :math:`p_t`, :math:`a = (h - p_t) / T` and :math:`b = (h - l) / T`,

    .. math::
        \beta' = \frac{e^a - 1}{e^b - 1} = e^{a - b} \, \frac{\mathrm{expm1}(-a)}{\mathrm{expm1}(-b)},

    the form computed here: no two nearly equal betas are subtracted (at ``T = 20`` all of them lie in
    [1, 1.051], where float32 would keep about 5 digits of their differences), and no exponential
    overflows at a small ``T`` (:math:`0 \le a \le b`). The most confident pixel gets 0, the least
    confident 1.

    When all valid pixels are equally confident (:math:`h = l`, e.g. a batch with one valid pixel)
    the ratio is 0/0; every pixel then gets :math:`\beta' = 1`, so the loss is Eq. 4 with
    :math:`\beta = 1` rather than 0 (no pixel is harder than another, so none is weighed down).
    Ignored pixels get a finite value (0, or 1 without a spread) that the caller masks out. The
    gradient flows through :math:`p_t` and through the min and max (shared equally among tied
    pixels, as ``amax`` does); pass a detached ``p_t`` for a constant weight. No host sync: the degenerate case is a ``where``.
    """
    # Fillers that cannot win: every valid p_t lies in [0, 1], and the fillers only count when no
    # pixel is valid (then h = 0 < l = 1 and the degenerate branch below applies).
    high = torch.where(valid, p_t, torch.zeros((), dtype=p_t.dtype, device=p_t.device)).amax()
    low = torch.where(valid, p_t, torch.ones((), dtype=p_t.dtype, device=p_t.device)).amin()
    # Ignored pixels are set to h (a = 0, a finite weight): an overflow there would turn the zero
    # gradient of their masked terms into NaN (0 * inf) in the backward pass.
    a = (high - torch.where(valid, p_t, high)) / temperature
    b = (high - low) / temperature
    spread = b > 0
    # Without a spread every a is 0 as well; b = 0 and a denominator of -1 keep the unused branch
    # finite, so that no NaN reaches the backward pass through the where (0 * inf).
    b = torch.where(spread, b, torch.zeros_like(b))
    denominator = torch.where(spread, torch.expm1(-b), -torch.ones_like(b))
    normalised = torch.exp(a - b) * torch.expm1(-a) / denominator
    return torch.where(spread, normalised, torch.ones_like(normalised))


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

    The paper's Fig. 2 caption says ":math:`\beta` is normalized to [0, 1]", which Eq. 5 does not do
    (at ``T = 20`` its :math:`\beta` lies in [1, 1.051]). ``weight_normalization="batch_minmax"``
    tests that reading (:func:`batch_minmax_confidence_weight`):

    .. math::
        \beta'_{ij} = \frac{\beta_{ij} - \min \beta}{\max \beta - \min \beta}

    over the valid pixels of the batch the loss is called with (on each process under DDP, each
    micro-batch under gradient accumulation), used in place of :math:`\beta` in Eq. 4 (or with
    ``normalization="pixel"``). The batch's most confident pixel weighs 0, its least confident 1;
    ``epsilon`` cancels; when every valid pixel is equally confident :math:`\beta' = 1` (the loss is
    then Eq. 4's with :math:`\beta = 1`). The gradient flows through :math:`\beta`, the min and the
    max unless ``detach_weight``, which makes :math:`\beta'` a constant. It needs
    ``confidence_weight=True`` (there is no :math:`\beta` to normalise otherwise) and the PyTorch code
    (``implementation="auto"`` or ``"eager"``: the Triton kernel weighs each pixel by its own
    :math:`\beta`, while :math:`\beta'` needs the whole batch's first).

    Eq. 4 gives a class the same weight in every image that contains it, so its total weight over
    the training set is the share :math:`\pi_l` of images that contain it: a class rare because few
    images show it stays rare. ``presence_exponent`` :math:`\alpha > 0` multiplies each class's
    terms by :math:`a_l = \pi_l^{-\alpha} / Z` (:func:`presence_correction`; docs/losses.md,
    "Presence-corrected Eq. 4"), with the :math:`\pi_l` of the training split given as
    ``class_presence`` (by the data module when trained through pat-seg).

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
        presence_exponent: :math:`\alpha` in [0, 1] of the presence correction; 0 (default) is PAT.
        class_presence: per-class share of the training images that contain the class
            (:math:`\pi_l`); needed when ``presence_exponent > 0``.
        implementation: ``"auto"`` (default) and ``"eager"`` run the PyTorch code below on every
            device. ``"triton"`` opts in to the fused kernel of :mod:`pat_seg.kernels.pat_triton`
            (CUDA float32/bfloat16/float16 logits; same value and gradient, every option above).
            ``"auto"`` will choose the kernel on CUDA only once a measured GPU run shows it right
            and faster than the PyTorch code (docs/benchmarks.md); until then it never does. Not
            with ``weight_normalization="batch_minmax"``, which the kernel does not compute.

        reduction: ``"mean"`` (default) and ``"sum"`` both return the loss above: each pixel's term
            already carries the normalisation (``1 / (B S_i^{y_ij})``, or ``1 / V``), so the terms sum
            to the loss. ``"none"`` returns those terms, shaped like the target, 0 at ignored pixels
            (not with ``implementation="triton"``, which returns the sum only).
        weight_normalization: ``"none"`` (default, Eq. 5's :math:`\beta` as it stands) or
            ``"batch_minmax"`` (:math:`\beta` min-max normalised to [0, 1] over the batch's valid
            pixels, the Fig. 2 caption's reading; see above; needs ``confidence_weight=True``).

    Logits ``[B, L, *spatial]`` of any number of spatial dimensions: for volumes ``[B, L, D, H, W]``
    "image" means sample, and :math:`S_i^l` counts the class's voxels over the whole volume. The
    Triton kernel takes images ``[B, L, H, W]`` only.

    Cost: one ``log_softmax``, one ``gather`` and one per-image class histogram (none with
    ``normalization="pixel"``) -- O(B*L*H*W) like cross-entropy, and no one-hot target tensor.
    ``weight_normalization="batch_minmax"`` adds a max and a min over the ``[B, *spatial]`` target
    probabilities, without a host sync.

    Example:
        One image of three pixels, two of class 0 and one of class 1, all at :math:`p_t = 1/2` (zero
        logits). Each pixel weighs :math:`\beta = e^{(1 - 1/2)/20}` (Eq. 5) times :math:`-\log(1/2)`;
        Eq. 4 divides by the class's mask size in the image, so both classes count alike and the loss is
        :math:`(2/2 + 1/1)\, e^{1/40} \ln 2`, where cross-entropy's mean is :math:`\ln 2`:

        >>> import math, torch
        >>> from pat_seg.losses import PATLoss
        >>> logits, target = torch.zeros(1, 2, 1, 3), torch.tensor([[[0, 0, 1]]])
        >>> round(PATLoss(temperature=20.0)(logits, target).item(), 5)
        1.42139
        >>> round(2 * math.exp(1 / 40) * math.log(2), 5)
        1.42139
    """

    description = LossDescription(
        "PAT",
        symbols={"temperature": "T"},
        switches={
            "confidence_weight": (True, "w/o beta"),
            "normalization": ("image_class", "w/o Eq. 4"),
            "presence_exponent": (0.0, "+presence alpha={value}"),
            "weight_normalization": ("none", "beta min-max"),
        },
        unused_when_switched={"confidence_weight": "temperature"},  # T weighs nothing once beta is off
    )

    # The terms carry Eq. 4's 1 / (B S_i^l) (or 1 / V): "mean" is their sum.
    mean_over_valid_pixels = False
    presence_factor: Tensor  # a_l, set with class_presence

    def __init__(
        self,
        temperature: PositiveFloat = 20.0,
        epsilon: float = 0.0,
        ignore_index: int | None = 255,
        detach_weight: bool = False,
        class_reduction: ClassReduction = "sum",
        implementation: Implementation = "auto",
        confidence_weight: bool = True,
        normalization: Normalization = "image_class",
        presence_exponent: ClosedUnitInterval = 0.0,
        class_presence: list[float] | None = None,
        reduction: Reduction = "mean",
        weight_normalization: WeightNormalization = "none",
    ) -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        # Each value on its own first (for Python callers: the pat-seg command's parser refuses these),
        # then the combinations that do not go together.
        self.temperature = check_number(
            "temperature", temperature, above=0, note="confidence_weight=False switches the weight of Eq. 5 off"
        )
        self.epsilon = check_number("epsilon", epsilon)
        self.class_reduction = check_choice("class_reduction", class_reduction, ClassReduction)
        # A bool only: a string such as "false" is truthy and would silently keep the weight on.
        if not isinstance(confidence_weight, bool):
            raise ValueError(f"confidence_weight must be True or False; got {confidence_weight!r}")
        self.confidence_weight = confidence_weight
        self.normalization = check_choice("normalization", normalization, Normalization)
        self.presence_exponent = check_number(
            "presence_exponent", presence_exponent, at_least=0, at_most=1, note="0 is PAT"
        )
        self.weight_normalization = check_choice("weight_normalization", weight_normalization, WeightNormalization)
        self.implementation = check_choice("implementation", implementation, Implementation)
        self.detach_weight = bool(detach_weight)
        if normalization == "pixel" and class_reduction != "sum":
            raise ValueError(
                f"class_reduction={class_reduction!r} needs normalization='image_class' (it averages the "
                f"per-class sums of Eq. 4, which normalization='pixel' does not form)"
            )
        if normalization == "pixel" and self.presence_exponent > 0:
            raise ValueError(
                f"presence_exponent={presence_exponent!r} corrects Eq. 4's per-image class weights, which "
                f"normalization='pixel' switches off"
            )
        if weight_normalization != "none" and not confidence_weight:
            raise ValueError(
                f"weight_normalization={weight_normalization!r} normalises Eq. 5's beta, which "
                f"confidence_weight=False switches off (beta = 1): use one or the other"
            )
        if weight_normalization != "none" and implementation == "triton":
            raise ValueError(
                f"weight_normalization={weight_normalization!r} needs implementation='eager' or 'auto': the "
                f"Triton kernel weighs each pixel by its own beta, and the min-max needs the whole batch's first"
            )
        if implementation == "triton" and not triton_available():
            raise ValueError("implementation='triton' needs the triton package, which is not installed")
        if implementation == "triton" and reduction == "none":
            raise ValueError(
                "reduction='none' needs implementation='eager' or 'auto': the Triton kernel returns the "
                "summed loss only"
            )
        self.class_presence: list[float] | None = None
        if class_presence is not None:
            self.set_class_presence(class_presence)

    @property
    def needs_class_presence(self) -> bool:
        """Whether the loss uses the training split's class presence (the data module supplies it)."""
        return self.presence_exponent > 0

    def set_class_presence(self, class_presence: list[float]) -> None:
        """Use ``class_presence`` (per-class share of training images containing the class) from now on."""
        factors = presence_correction(class_presence, self.presence_exponent)
        self.register_buffer(
            "presence_factor", factors, persistent=False
        )  # float64, cast per call like the other per-class tables
        self.class_presence = [float(share) for share in class_presence]

    def _weight_table(self, index: Tensor, valid: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
        """:func:`pat_weight_table`, times the presence factors :math:`a_l` when ``presence_exponent > 0``."""
        weights = pat_weight_table(index, valid, num_classes, self.normalization, self.class_reduction, dtype)
        if not self.needs_class_presence:
            return weights
        if self.class_presence is None:
            raise ValueError(
                f"PATLoss(presence_exponent={self.presence_exponent:g}) needs class_presence (per-class share of "
                "training images that contain the class): pass class_presence=[...] or train through pat-seg / "
                "SegmentationModule, which takes it from the data module"
            )
        if len(self.class_presence) != num_classes:
            raise ValueError(
                f"PATLoss was given {len(self.class_presence)} class_presence values but the logits have "
                f"{num_classes} classes"
            )
        return weights * self.presence_factor.to(device=weights.device, dtype=dtype)

    def uses_triton(self, logits: Tensor) -> bool:
        """Whether a call on ``logits`` runs the Triton kernel: only when asked for (see ``implementation``).

        ``weight_normalization="batch_minmax"`` never does: the constructor refuses it with ``"triton"``.
        """
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
            weights = self._weight_table(index, valid, logits.shape[1], torch.float32)
        return fused_pat_loss(
            logits,
            target,
            weights,
            temperature=self.temperature,
            epsilon=self.epsilon,
            # With nothing ignored the labels lie in [0, L) (checked, or vouched for), so -1 matches none.
            ignore_index=-1 if self.ignore_index is None else self.ignore_index,
            detach_weight=self.detach_weight,
            confidence_weight=self.confidence_weight,
        )

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        log_p_t, valid, index = target_log_prob(logits, target, self.ignore_index)
        return self.pixel_weights(log_p_t, valid, index, logits.shape[1]) * -log_p_t, valid

    def pixel_weights(self, log_p_t: Tensor, valid: Tensor, index: Tensor, num_classes: int) -> Tensor:
        """Each pixel's factor on ``-log p_t``, ``[B, *spatial]``: Eq. 4's ``1 / (B S_i^l)`` (times ``a_l``) and Eq. 5's beta."""
        weights = self._weight_table(index, valid, num_classes, log_p_t.dtype)
        # 1 / (B S_i^{y_ij}) (Eq. 4), or 1 / V with normalization="pixel"
        pixel_weight = weights.gather(1, index.flatten(1)).view_as(index)
        if self.confidence_weight:
            p_t = log_p_t.exp()
            if self.detach_weight:
                p_t = p_t.detach()  # beta (and beta's min-max) a constant in the backward pass
            if self.weight_normalization == "batch_minmax":
                beta = batch_minmax_confidence_weight(p_t, valid, self.temperature)  # Eq. 5 in [0, 1]
            else:
                beta = torch.exp((1.0 - p_t - self.epsilon) / self.temperature)  # Eq. 5
            pixel_weight = pixel_weight * beta
        return pixel_weight

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, {super().extra_repr()}, "
            f"detach_weight={self.detach_weight}, class_reduction={self.class_reduction!r}, "
            f"confidence_weight={self.confidence_weight}, normalization={self.normalization!r}, "
            f"presence_exponent={self.presence_exponent}, weight_normalization={self.weight_normalization!r}, "
            f"implementation={self.implementation!r}"
        )
