"""LDAM loss with optional deferred re-weighting (Cao et al., "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019)."""

from __future__ import annotations

from torch import Tensor

from pat_seg.arguments import NonNegativeInt, PositiveFloat, check_number
from pat_seg.losses.base import Reduction
from pat_seg.losses.class_balanced import class_balanced_weights
from pat_seg.losses.class_counts import ClassCountLoss
from pat_seg.losses.description import LossDescription
from pat_seg.losses.pixel import lookup_class, target_log_prob


class LDAMLoss(ClassCountLoss):
    r"""LDAM: cross-entropy on :math:`s\,(z - m_t \mathbb{1}_t)` with :math:`m_c = C / n_c^{1/4}` (Cao et al. Eq. 13).

    ``C`` is chosen so that the largest margin (the rarest class's) equals ``max_margin``. As in the
    authors' code, the margin lowers the true-class logit *before* the log-sum-exp: ``s * z`` is
    formed in a work buffer (the one tensor of the logits' size that the scale needs anyway), each
    pixel's ``s * m_t`` is subtracted at its label by a scatter, and ``log_softmax`` runs on the
    result, so the float32 error is that of ``F.cross_entropy`` on ``s * (z - m_t 1_t)``. (Deriving
    the margin loss from ``log p_t`` of ``s * z`` alone would multiply that value's rounding error
    by up to ``exp(s * max_margin)``, 3.3 million at ``s = 30``.) No one-hot tensor is built, and the
    gradient flows through the analytic :func:`~pat_seg.losses.pixel.target_log_prob`.

    Deferred re-weighting (DRW, Cao et al. Sec. 3.3): from epoch ``drw_epoch`` on (the module calls
    :meth:`set_epoch` at every training epoch), each pixel's term is weighted by the class-balanced
    weights of :func:`~pat_seg.losses.class_balanced.class_balanced_weights` (default ``b = 1 - 1/N``,
    because the original ``b = 0.9999`` makes pixel-count weights uniform), averaged over valid pixels.

    Margins and DRW weights are training-only: in ``eval()`` the loss is the unweighted
    cross-entropy on ``s * z`` (the scale changes no prediction; the metrics see the raw logits).

    Two conventions differ from the LDAM paper and its code (docs/losses.md): ``s`` multiplies the
    network's raw logits (the paper scales cosine logits of a normalised classifier), and the DRW
    average is over valid pixels (its code divides by the sum of the pixels' weights).

    Args:
        class_counts: per-class pixel counts of the training split.
        max_margin: the largest margin (the paper's table: 0.5).
        scale: ``s`` (the paper's table: 20).
        drw_epoch: first epoch of deferred re-weighting; ``None`` = never.
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"`` (over valid pixels), ``"sum"`` or ``"none"`` (docs/losses.md).
    """

    description = LossDescription("LDAM", symbols={"max_margin": "m", "scale": "s"})

    margins: Tensor
    drw_weight: Tensor

    def __init__(
        self,
        class_counts: list[float] | None = None,
        max_margin: PositiveFloat = 0.5,
        scale: PositiveFloat = 20.0,
        drw_epoch: NonNegativeInt | None = None,
        ignore_index: int | None = 255,
        reduction: Reduction = "mean",
    ) -> None:
        self.max_margin = check_number("max_margin", max_margin, above=0)
        self.scale = check_number("scale", scale, above=0)
        self.drw_epoch = (
            None
            if drw_epoch is None
            else check_number("drw_epoch", drw_epoch, at_least=0, integer=True, note="or None")
        )
        self.epoch = 0
        super().__init__(class_counts=class_counts, ignore_index=ignore_index, reduction=reduction)

    def derive_from_counts(self, counts: Tensor) -> None:
        inverse_quartic_root = counts.pow(-0.25)
        self.set_class_buffer("margins", inverse_quartic_root * (self.max_margin / inverse_quartic_root.max()))
        self.set_class_buffer("drw_weight", class_balanced_weights(counts))

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current training epoch (switches DRW on at ``drw_epoch``)."""
        self.epoch = int(epoch)

    @property
    def reweighting(self) -> bool:
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        # s * m_t is subtracted from the true-class logit of s * z before the log-sum-exp (Eq. 13).
        shift = self.margins * self.scale if self.training else None
        log_p_t, valid, index = target_log_prob(logits, target, self.ignore_index, scale=self.scale, target_shift=shift)
        terms = -log_p_t
        if self.training and self.reweighting:
            terms = terms * lookup_class(self.drw_weight, index, terms)
        return terms, valid

    def extra_repr(self) -> str:
        return f"max_margin={self.max_margin}, scale={self.scale}, drw_epoch={self.drw_epoch}, {super().extra_repr()}"
