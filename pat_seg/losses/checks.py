"""Input checks of the pixel losses, and the switch that lets a training loop check labels only once.

Shape and dtype checks are free (Python on tensor metadata) and always run. The label-range check is
a reduction over the target and, on CUDA, a host sync: a loss used on its own runs it on every call,
so that a bad label is a ``ValueError`` naming the value instead of a device-side assert inside
``gather``. A loop that has already checked the batch (:class:`pat_seg.module.SegmentationModule`
does, once per step, before the model runs) calls the loss inside :func:`labels_checked`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

_labels_already_checked: ContextVar[bool] = ContextVar("pat_seg_labels_already_checked", default=False)


@contextmanager
def labels_checked() -> Iterator[None]:
    """Within this block the losses trust that every label is in range (the caller has checked it).

    Only the label-range reduction is skipped; the shape and dtype checks still run.
    """
    token = _labels_already_checked.set(True)
    try:
        yield
    finally:
        _labels_already_checked.reset(token)


def bad_label_mask(target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Pixels whose label is neither a class index in ``[0, num_classes)`` nor ``ignore_index``."""
    return (target != ignore_index) & ((target < 0) | (target >= num_classes))


def label_error(target: Tensor, bad: Tensor, num_classes: int, ignore_index: int) -> ValueError:
    """The error for the first bad label of ``target`` (``bad`` from :func:`bad_label_mask`)."""
    value = int(target[bad][0])
    return ValueError(
        f"label {value} found in target; expected class indices in [0, {num_classes - 1}] "
        f"or ignore_index {ignore_index}"
    )


def check_logits_target(logits: Tensor, target: Tensor, ignore_index: int) -> None:
    """Raise ``ValueError`` naming the offending value unless ``logits``/``target`` form a valid pair.

    Checked: ``logits`` is a floating ``[B, L, H, W]`` tensor, ``target`` an integer ``[B, H, W]``
    tensor of the same batch and spatial size and, unless inside :func:`labels_checked`, every
    non-ignored label lies in ``[0, L)``.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape [B, L, H, W]; got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor; got dtype {logits.dtype}")
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must be an integer tensor of class indices; got dtype {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if target.dim() != 3 or tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape [B, H, W] = {list(expected)} to match logits {list(logits.shape)}; "
            f"got {list(target.shape)}"
        )
    if _labels_already_checked.get():
        return
    num_classes = logits.shape[1]
    bad = bad_label_mask(target, num_classes, ignore_index)
    if bool(bad.any()):
        raise label_error(target, bad, num_classes, ignore_index)
