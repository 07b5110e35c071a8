"""Losses driven by the training split's per-class pixel counts (docs/losses.md).

The counts come from the data module (:attr:`SegmentationDataModule.class_counts`, computed once over
the training split and broadcast from rank 0 by :meth:`SegmentationModule.setup`), or from the user
as ``class_counts``. Everything derived from them lives here or in a subclass's
:meth:`ClassCountLoss.derive_from_counts`, stored as non-persistent buffers: they are re-derived from
the counts recorded in the run's hyperparameters, so a checkpoint never disagrees with its counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pat_seg.arguments import check_number
from pat_seg.losses.base import PixelLoss, Reduction


def validated_class_counts(counts: Sequence[float]) -> Tensor:
    """``counts`` as a float64 tensor, each clamped to >= 1; ``ValueError`` on a bad value.

    A class that never occurs in the training split gets the statistics of a one-pixel class
    instead of an infinite weight, margin or ``log 0``.
    """
    if isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence):
        raise ValueError(f"class_counts must be a list of per-class pixel counts; got {counts!r}")
    if len(counts) < 2:
        raise ValueError(f"class_counts must hold one count per class (at least 2); got {list(counts)}")
    values = [check_number(f"class_counts[{cls}]", count, at_least=0) for cls, count in enumerate(counts)]
    return torch.tensor(values, dtype=torch.float64).clamp_min(1.0)


class ClassCountLoss(PixelLoss):
    """Base of the losses that need ``class_counts``: storage, validation and the missing-count error.

    Subclasses implement :meth:`derive_from_counts`, which turns the validated float64 counts into
    buffers with :meth:`set_class_buffer`. :class:`~pat_seg.module.SegmentationModule` sees
    ``needs_class_counts`` and calls :meth:`set_class_counts` with the data module's counts when none
    were given.
    """

    needs_class_counts = True

    def __init__(
        self, class_counts: list[float] | None = None, ignore_index: int | None = 255, reduction: Reduction = "mean"
    ) -> None:
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        self.class_counts: list[float] | None = None
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def set_class_counts(self, counts: list[float]) -> None:
        """Use ``counts`` (per-class pixel counts of the training split) from now on."""
        validated = validated_class_counts(counts)
        self.derive_from_counts(validated)
        self.class_counts = [float(c) for c in counts]

    def derive_from_counts(self, counts: Tensor) -> None:  # pragma: no cover - abstract
        """Compute the per-class tensors of the loss from float64 ``counts`` (each >= 1)."""
        raise NotImplementedError

    def set_class_buffer(self, name: str, value: Tensor) -> None:
        """Register (or replace) a non-persistent per-class buffer, on the device the loss is on."""
        current = getattr(self, name, None)
        device = current.device if isinstance(current, Tensor) else value.device
        self.register_buffer(name, value.to(device), persistent=False)

    def forward(self, logits: Tensor, target: Tensor, check_labels: bool = True) -> Tensor:
        if self.class_counts is None:
            raise ValueError(
                f"{type(self).__name__} needs class_counts (per-class pixel counts of the training split): "
                "pass class_counts=[...] or train through pat-seg / SegmentationModule, which takes them "
                "from the data module"
            )
        if logits.dim() >= 2 and logits.shape[1] != len(self.class_counts):
            raise ValueError(
                f"{type(self).__name__} was given {len(self.class_counts)} class_counts but the logits have "
                f"{logits.shape[1]} classes (shape {list(logits.shape)})"
            )
        return super().forward(logits, target, check_labels)
