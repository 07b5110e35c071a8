"""Input checks at the batch boundary, before the model or any CUDA kernel sees the data.

Every check is O(1) in Python (shapes, dtypes) or one tensor reduction (finite pixels, label range),
never a loop over pixels. Errors are ``ValueError`` that name the offending value, the batch and,
when the data module provides them, the sample indices or file paths.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from pat_seg.losses._pixel import check_logits_target


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
    """Return ``(image, target)`` of a pat-seg batch, or raise ``ValueError`` naming what is wrong.

    Expected: a mapping with ``image`` float ``[B, C, H, W]`` of finite values and ``target`` integer
    ``[B, H, W]`` of the same ``B, H, W`` whose labels lie in ``[0, num_classes)`` or equal
    ``ignore_index``.
    """
    if not isinstance(batch, Mapping) or "image" not in batch or "target" not in batch:
        keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(f"a batch must be a dict with keys 'image' and 'target'; got {keys}")
    image, target = batch["image"], batch["target"]
    where = describe_batch(batch, batch_idx)
    if not isinstance(image, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"{where}: image and target must be tensors; got {type(image).__name__} and {type(target).__name__}"
        )
    if not image.is_floating_point():
        raise ValueError(
            f"{where}: image must be a floating-point tensor (e.g. uint8 / 255); got dtype {image.dtype}"
        )
    if image.dim() != 4:
        raise ValueError(f"{where}: image must have shape [B, C, H, W]; got {list(image.shape)}")
    if target.dim() == 4 and target.shape[1] == 1:
        raise ValueError(
            f"{where}: target must have shape [B, H, W]; got {list(target.shape)} (squeeze the channel dimension)"
        )
    expected = [image.shape[0], *image.shape[2:]]
    if target.dim() != 3 or list(target.shape) != expected:
        raise ValueError(
            f"{where}: target must have shape [B, H, W] = {expected} to match image {list(image.shape)}; "
            f"got {list(target.shape)}"
        )
    # A NaN/Inf pixel would poison BatchNorm running statistics in the forward pass, before any loss
    # check could catch it.
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{where}: image contains NaN or Inf values")
    # The label-range check of the losses, run now on a zero-stride stand-in for the logits (it reads
    # only their shape), so the error comes before the model runs and names the samples.
    stand_in = image.new_zeros(()).expand(image.shape[0], num_classes, *image.shape[2:])
    try:
        check_logits_target(stand_in, target, ignore_index)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return image, target
