"""Input checks of the pixel losses.

Shape and dtype checks are free (Python on tensor metadata) and always run. The label-range check is
a reduction over the target and, on CUDA, a host sync: a loss used on its own runs it on every call,
so that a bad label is a ``ValueError`` naming the value instead of a device-side assert inside
``gather``. A loop that has already checked the batch (:class:`pat_seg.module.SegmentationModule`
does, once per step, before the model runs) calls the loss with ``check_labels=False``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_ignore_index(ignore_index: int | None) -> int | None:
    """``ignore_index`` as an ``int``, or ``None`` (no pixel is ignored); ``ValueError`` otherwise."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an integer label or None (nothing ignored); got {ignore_index!r}")
    return int(ignore_index)


def bad_label_mask(target: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """Pixels whose label is neither a class index in ``[0, num_classes)`` nor ``ignore_index``."""
    out_of_range = (target < 0) | (target >= num_classes)
    return out_of_range if ignore_index is None else out_of_range & (target != ignore_index)


def label_error(target: Tensor, bad: Tensor, num_classes: int, ignore_index: int | None) -> ValueError:
    """The error for the first bad label of ``target`` (``bad`` from :func:`bad_label_mask`)."""
    value = int(target[bad][0])
    allowed = (
        "(ignore_index=None: every label must be a class)"
        if ignore_index is None
        else f"or ignore_index {ignore_index}"
    )
    return ValueError(f"label {value} found in target; expected class indices in [0, {num_classes - 1}] {allowed}")


def check_logits_target(logits: Tensor, target: Tensor, ignore_index: int | None, check_labels: bool = True) -> None:
    """Raise ``ValueError`` naming the offending value unless ``logits``/``target`` form a valid pair.

    Checked: ``logits`` is a floating ``[B, L, *spatial]`` tensor, ``target`` an integer
    ``[B, *spatial]`` tensor of the same batch and spatial size and, with ``check_labels`` (the
    default), every non-ignored label lies in ``[0, L)``.
    """
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape [B, L, *spatial] (e.g. [B, L, H, W] or [B, L, D, H, W]); "
            f"got shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor; got dtype {logits.dtype}")
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must be an integer tensor of class indices; got dtype {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape [B, *spatial] = {list(expected)} to match logits {list(logits.shape)}; "
            f"got {list(target.shape)}"
        )
    if not check_labels:
        return
    num_classes = logits.shape[1]
    bad = bad_label_mask(target, num_classes, ignore_index)
    if bool(bad.any()):
        raise label_error(target, bad, num_classes, ignore_index)
