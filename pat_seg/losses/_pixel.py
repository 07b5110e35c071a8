"""Shared pixel-level helpers for every loss in :mod:`pat_seg.losses`.

All losses take ``logits`` of shape ``[B, L, H, W]`` and an integer ``target`` of shape ``[B, H, W]``
whose pixels equal to ``ignore_index`` take no part (docs/losses.md). The helpers here do what every
loss needs, once: compute ``log p`` in float32 (never ``log(softmax)``), pick the true-class entry with
``gather`` so that no ``[B, L, H, W]`` one-hot tensor is ever built, and average over valid pixels.
Input checks live in :mod:`pat_seg.losses.checks`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


@contextmanager
def float32_math(tensor: Tensor) -> Iterator[None]:
    """Disable autocast for the enclosed loss math, which then runs in float32 (or float64).

    Half-precision ``log_softmax`` and ``exp`` lose the small probabilities that long-tail losses
    care about; the logits are upcast explicitly by :func:`upcast`.
    """
    device_type = tensor.device.type if tensor.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        yield


def upcast(logits: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32 and float64 are kept as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def valid_mask_and_index(target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Return ``(valid, index)``: the non-ignored pixels and a target safe to ``gather`` with.

    Ignored pixels get index 0 so that ``gather`` stays in range; their contribution is zeroed with
    ``valid`` afterwards.
    """
    valid = target != ignore_index
    index = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))
    return valid, index.long()


def gather_class(values: Tensor, index: Tensor) -> Tensor:
    """``values[b, index[b, h, w], h, w]`` as a ``[B, H, W]`` tensor (no one-hot)."""
    return values.gather(1, index.unsqueeze(1)).squeeze(1)


def mean_over_valid(per_pixel: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``per_pixel`` over valid pixels; 0 (not NaN) when every pixel is ignored."""
    total = per_pixel.masked_fill(~valid, 0.0).sum()
    return total / valid.sum().clamp_min(1).to(total.dtype)


class _TargetLogSoftmax(torch.autograd.Function):
    """``log_softmax(s * z + offset, dim=1)`` at the target class, with the analytic gradient.

    ``d log p_t / d z_c = s * (1[c = t] - p_c)``, so the backward pass is ``-s * g * exp(log p)`` plus
    ``s * g`` added at the target by a ``[B, H, W]`` scatter: two passes over the logits' size, where
    autograd through ``log_softmax`` and ``gather`` takes four (a zero fill, the scatter, and the
    two-read ``log_softmax`` backward) and one more for the scale. ``offset`` is a constant:
    per class (BMS's ``log n_c``, shape ``[1, L, 1, 1]``) or per element (BLV's noise, full shape, which
    is then overwritten and used as the work buffer instead of allocating another). Saved for
    backward: ``log p`` and the index, as ``F.cross_entropy`` saves.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, index: Tensor, scale: float, offset: Tensor | None) -> Tensor:
        adjusted = logits * scale if scale != 1.0 else logits
        if offset is not None:
            adjusted = offset.add_(adjusted) if offset.shape == logits.shape else adjusted + offset
        log_p = torch.log_softmax(adjusted, dim=1)
        ctx.save_for_backward(log_p, index)
        ctx.scale = scale
        return gather_class(log_p, index)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        log_p, index = ctx.saved_tensors
        grad = grad.unsqueeze(1) * ctx.scale if ctx.scale != 1.0 else grad.contiguous().unsqueeze(1)
        grad_logits = torch.exp(log_p).mul_(-grad)
        return grad_logits.scatter_add_(1, index.unsqueeze(1), grad), None, None, None


def target_log_prob(
    logits: Tensor,
    target: Tensor,
    ignore_index: int,
    scale: float = 1.0,
    logit_offset: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(log_p_t, valid, index)`` for upcast logits, without keeping ``log p`` for the caller.

    ``log_p_t`` is ``log_softmax(scale * logits + logit_offset, dim=1)`` at the true class
    ``[B, H, W]`` (0 where ignored), differentiable by :class:`_TargetLogSoftmax`; with the defaults
    it is plain ``log p_t``. A full-size ``logit_offset`` is overwritten (pass a
    temporary). ``valid`` is the non-ignored mask; ``index`` the target with ignored pixels sent to
    class 0 (safe to gather with).
    """
    valid, index = valid_mask_and_index(target, ignore_index)
    logits = upcast(logits)
    offset = None if logit_offset is None else logit_offset.to(device=logits.device, dtype=logits.dtype)
    log_p_t = _TargetLogSoftmax.apply(logits, index, float(scale), offset).masked_fill(~valid, 0.0)
    return log_p_t, valid, index


def lookup_class(per_class: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """``per_class[index]`` as a ``[B, H, W]`` tensor in the dtype/device of ``like``.

    Per-class constants (weights, margins) reach each pixel through its label, never through a
    ``[B, L, H, W]`` one-hot product.
    """
    table = per_class.to(device=like.device, dtype=like.dtype)
    return table.index_select(0, index.reshape(-1)).view(index.shape)  # several times faster than table[index]


def cross_entropy_over_valid(
    logits: Tensor,
    target: Tensor,
    ignore_index: int,
    class_weight: Tensor | None = None,
    logit_offset: Tensor | None = None,
) -> Tensor:
    """``sum_j w_{t_j} * (-log p_t(j))`` divided by the number of valid pixels (0 if there is none).

    ``p`` is the softmax of ``logits + logit_offset`` (see :func:`target_log_prob`).

    With ``class_weight=None`` this is ``F.cross_entropy`` with mean reduction. With weights it is
    NOT ``F.cross_entropy(weight=...)``'s mean, which divides by the sum of the weights: the
    re-weighted losses average over valid pixels (docs/losses.md), so the weights change the scale
    of each class's contribution, not just their relative shares.
    """
    log_p_t, valid, index = target_log_prob(logits, target, ignore_index, logit_offset=logit_offset)
    per_pixel = -log_p_t
    if class_weight is not None:
        per_pixel = per_pixel * lookup_class(class_weight, index, per_pixel)
    return mean_over_valid(per_pixel, valid)
