"""Input checks at the batch boundary, before the model or any CUDA kernel sees the data.

Every check is O(1) in Python (shapes, dtypes) or a tensor reduction (finite pixels, label range),
never a loop over pixels, and the reductions are read back with one host sync per batch. Errors are
:class:`InvalidBatchError` (a ``ValueError``) that name the offending value, the batch and,
when the data module provides them, the sample indices or file paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pat_seg.exceptions import RunFailure
from pat_seg.losses.checks import bad_label_mask, label_error


class InvalidBatchError(RunFailure, ValueError):
    """A batch that no network or loss can use (wrong shapes or dtypes, NaN pixels, labels out of range)."""


def describe_batch(batch: Mapping[str, Any], batch_idx: int | None = None) -> str:
    """``"batch 3 (samples [12, 13])"``: where a bad batch came from, for error messages."""
    where = f"batch {batch_idx}" if batch_idx is not None else "batch"
    for key in ("path", "image_path", "index"):
        origin = batch.get(key)
        if origin is None:
            continue
        origin = origin.tolist() if isinstance(origin, Tensor) else list(origin)
        return f"{where} (samples {origin})" if key == "index" else f"{where} (files {origin})"
    return where


def check_batch(batch: Any, num_classes: int, ignore_index: int, batch_idx: int | None = None) -> tuple[Tensor, Tensor]:
    """Return ``(image, target)`` of a pat-seg batch, or raise :class:`InvalidBatchError` naming what is wrong.

    Expected: a mapping with ``image`` float ``[B, C, H, W]`` of finite values and ``target`` integer
    ``[B, H, W]`` of the same ``B, H, W`` whose labels lie in ``[0, num_classes)`` or equal
    ``ignore_index``.
    """
    if not isinstance(batch, Mapping) or "image" not in batch or "target" not in batch:
        keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise InvalidBatchError(f"a batch must be a dict with keys 'image' and 'target'; got {keys}")
    image, target = batch["image"], batch["target"]
    where = describe_batch(batch, batch_idx)
    if not isinstance(image, Tensor) or not isinstance(target, Tensor):
        raise InvalidBatchError(
            f"{where}: image and target must be tensors; got {type(image).__name__} and {type(target).__name__}"
        )
    if not image.is_floating_point():
        raise InvalidBatchError(
            f"{where}: image must be a floating-point tensor (e.g. uint8 / 255); got dtype {image.dtype}"
        )
    if image.dim() != 4:
        raise InvalidBatchError(f"{where}: image must have shape [B, C, H, W]; got {list(image.shape)}")
    if target.dim() == 4 and target.shape[1] == 1:
        raise InvalidBatchError(
            f"{where}: target must have shape [B, H, W]; got {list(target.shape)} (squeeze the channel dimension)"
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.is_complex():
        raise InvalidBatchError(f"{where}: target must be an integer tensor of class indices; got dtype {target.dtype}")
    expected = [image.shape[0], *image.shape[2:]]
    if target.dim() != 3 or list(target.shape) != expected:
        raise InvalidBatchError(
            f"{where}: target must have shape [B, H, W] = {expected} to match image {list(image.shape)}; "
            f"got {list(target.shape)}"
        )
    # Both data checks reduce to one pair of flags read back together: one host sync per batch on CUDA.
    # A NaN/Inf pixel would poison BatchNorm running statistics in the forward pass; a label out of
    # range would be a device-side assert in the loss's gather instead of a readable error. The losses
    # then skip their own label check (the module calls them with `check_labels=False`).
    bad_label = bad_label_mask(target, num_classes, ignore_index)
    non_finite, label_out_of_range = torch.stack([~torch.isfinite(image).all(), bad_label.any()]).tolist()
    if non_finite:
        raise InvalidBatchError(f"{where}: image contains NaN or Inf values")
    if label_out_of_range:
        raise InvalidBatchError(f"{where}: {label_error(target, bad_label, num_classes, ignore_index)}")
    return image, target
