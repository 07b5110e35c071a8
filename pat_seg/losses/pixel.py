"""The pixel-level building blocks of every loss in :mod:`pat_seg.losses`, public for a loss of your own.

The call contract (docs/extending.md, docs/losses.md "Notation"): ``logits`` of shape
``[B, L, *spatial]`` (``[B, L, H, W]`` for images, ``[B, L, D, H, W]`` for volumes) and an integer
``target`` of shape ``[B, *spatial]`` whose pixels equal to ``ignore_index`` take no part. A loss built
from these three keeps the package's guarantees:

- :func:`target_log_prob`: ``log p_t`` of each pixel's true class, computed in float32 from
  ``log_softmax`` (never ``log(softmax)``), picked with ``gather`` so that no one-hot tensor of the
  logits' size is built, with an analytic backward (the ``log p_t`` of paper Eq. 4 and every baseline);
- :func:`valid_mask_and_index`: the valid pixels and a target safe to index with;
- :func:`reduce_pixel_terms`: ``"mean"``/``"sum"``/``"none"`` over per-pixel terms, 0 (not NaN) when
  every pixel is ignored.

Input checks live in :mod:`pat_seg.losses.checks`; :class:`~pat_seg.losses.base.PixelLoss` runs them,
turns autocast off and applies :func:`reduce_pixel_terms` for a subclass.
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


def valid_mask_and_index(target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Return ``(valid, index)`` for an integer ``target`` ``[B, *spatial]``: which pixels take part, and
    a target safe to ``gather`` or index with.

    ``valid`` (bool, the target's shape) is ``target != ignore_index``: the pixels a loss sums over
    (the valid pixels ``V`` of docs/losses.md). ``index`` (int64) equals ``target`` where valid and 0 where
    ignored, so that ``gather`` stays in range; zero an ignored pixel's term with ``valid`` afterwards
    (:func:`reduce_pixel_terms` does). ``ignore_index=None`` ignores nothing. Labels are not range-checked
    here (:func:`~pat_seg.losses.checks.check_logits_target` does that).
    """
    if ignore_index is None:
        return torch.ones(target.shape, dtype=torch.bool, device=target.device), target.long()
    valid = target != ignore_index
    index = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))
    return valid, index.long()


def class_view(per_class: Tensor, like: Tensor) -> Tensor:
    """A per-class ``[L]`` tensor shaped ``[1, L, 1, ..., 1]`` to broadcast against ``like`` ``[B, L, *spatial]``."""
    return per_class.view(1, -1, *([1] * (like.dim() - 2)))


def gather_class(values: Tensor, index: Tensor) -> Tensor:
    """``values[b, index[b, ...], ...]`` as a ``[B, *spatial]`` tensor (no one-hot)."""
    return values.gather(1, index.unsqueeze(1)).squeeze(1)


def reduce_pixel_terms(terms: Tensor, valid: Tensor, reduction: str, mean_over_valid: bool = True) -> Tensor:
    """Reduce per-pixel loss terms ``[B, *spatial]`` as ``reduction`` asks (docs/losses.md, "Reduction").

    ``terms`` at ignored pixels (``~valid``) are set to 0 first, whatever they held (a NaN included).
    ``"none"``: the terms, shaped like the target. ``"sum"``: their sum. ``"mean"``: their sum divided
    by the number of valid pixels ``max(V, 1)`` (0, not NaN, when every pixel is ignored), or with
    ``mean_over_valid=False`` the plain sum, for a loss whose terms already carry their normalisation
    (PAT's ``1 / (B S_i^l)``, paper Eq. 4). So ``"sum"`` always equals the ``"none"`` terms' sum.
    """
    terms = terms.masked_fill(~valid, 0.0)
    if reduction == "none":
        return terms
    total = terms.sum()
    if reduction == "sum" or not mean_over_valid:
        return total
    return total / valid.sum().clamp_min(1).to(total.dtype)


class _TargetLogSoftmax(torch.autograd.Function):
    """``log_softmax(s * z + offset - shift * onehot_t, dim=1)`` at the target class, with the analytic gradient.

    ``d log p_t / d z_c = s * (1[c = t] - p_c)``, so the backward pass is ``-s * g * exp(log p)`` plus
    ``s * g`` added at the target by a ``[B, *spatial]`` scatter: two passes over the logits' size,
    where autograd through ``log_softmax`` and ``gather`` takes four (a zero fill, the scatter, and the
    two-read ``log_softmax`` backward) and one more for the scale. ``offset`` is a constant:
    per class (BMS's ``log n_c``, shape ``[1, L, 1, ...]``) or per element (BLV's noise, full shape,
    which is then overwritten and used as the work buffer instead of allocating another).
    ``target_shift`` (``[B, *spatial]``, LDAM's ``s * m_t``) lowers the true-class logit of each pixel
    before the log-sum-exp, written into the work buffer by a scatter, so the margin costs no extra
    logits-sized tensor. Saved for backward: ``log p`` and the index, as ``F.cross_entropy`` saves.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, index: Tensor, scale: float, offset: Tensor | None, target_shift: Tensor | None
    ) -> Tensor:
        if offset is not None and offset.shape == logits.shape:
            adjusted = offset.add_(logits, alpha=scale)  # the caller's temporary becomes the work buffer
        elif offset is not None:
            adjusted = logits * scale + offset if scale != 1.0 else logits + offset
        elif scale != 1.0 or target_shift is not None:
            adjusted = logits * scale  # a fresh tensor, so that the shift below never writes into the logits
        else:
            adjusted = logits
        if target_shift is not None:
            adjusted.scatter_add_(1, index.unsqueeze(1), -target_shift.unsqueeze(1))
        log_p = torch.log_softmax(adjusted, dim=1)
        ctx.save_for_backward(log_p, index)
        ctx.scale = scale
        return gather_class(log_p, index)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        log_p, index = ctx.saved_tensors
        grad = grad.unsqueeze(1) * ctx.scale if ctx.scale != 1.0 else grad.contiguous().unsqueeze(1)
        grad_logits = torch.exp(log_p).mul_(-grad)
        return grad_logits.scatter_add_(1, index.unsqueeze(1), grad), None, None, None, None


def target_log_prob(
    logits: Tensor,
    target: Tensor,
    ignore_index: int | None,
    scale: float = 1.0,
    logit_offset: Tensor | None = None,
    target_shift: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(log_p_t, valid, index)``: each pixel's log-probability of its true class, differentiable.

    ``log_p_t`` (``[B, *spatial]``, 0 where ignored) is ``log_softmax(z, dim=1)`` at the target class,
    the ``log p_t`` that cross-entropy, focal loss and PAT's Eq. 4 weigh, for ``logits`` ``[B, L, *spatial]``
    in any float dtype: half-precision logits are upcast to float32 (call it inside
    :func:`float32_math` under autocast, as :class:`~pat_seg.losses.base.PixelLoss` does). Its gradient
    ``s (1[c = t] - p_c)`` per logit is written by :class:`_TargetLogSoftmax`, which keeps ``log p`` but
    builds no one-hot tensor. ``valid`` and ``index`` are :func:`valid_mask_and_index`'s.

    The optional arguments cover the logit-adjusted baselines: ``z = scale * logits + logit_offset``
    (BMS's ``log n_c`` per class ``[1, L, 1, ...]``, or BLV's noise, full size: a full-size
    ``logit_offset`` is overwritten, so pass a temporary), minus ``target_shift[t]`` at the true class
    (LDAM's ``s * m_t``, a per-class table ``[L]`` looked up by each pixel's label). With the defaults,
    ``log_p_t`` is plain ``log p_t``.
    """
    valid, index = valid_mask_and_index(target, ignore_index)
    logits = upcast(logits)
    offset = None if logit_offset is None else logit_offset.to(device=logits.device, dtype=logits.dtype)
    shift = None if target_shift is None else lookup_class(target_shift, index, logits)
    log_p_t = _TargetLogSoftmax.apply(logits, index, float(scale), offset, shift).masked_fill(~valid, 0.0)
    return log_p_t, valid, index


def lookup_class(per_class: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """``per_class[index]`` as a ``[B, *spatial]`` tensor in the dtype/device of ``like``.

    Per-class constants (weights, margins) reach each pixel through its label, never through a
    one-hot product of the logits' size.
    """
    table = per_class.to(device=like.device, dtype=like.dtype)
    return table.index_select(0, index.reshape(-1)).view(index.shape)  # several times faster than table[index]


def cross_entropy_terms(
    logits: Tensor,
    target: Tensor,
    ignore_index: int | None,
    class_weight: Tensor | None = None,
    logit_offset: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(terms, valid)``: ``w_{t_j} * (-log p_t(j))`` per pixel (0 where ignored) and the valid mask.

    ``p`` is the softmax of ``logits + logit_offset`` (see :func:`target_log_prob`).

    Reduced with :func:`reduce_pixel_terms`' ``"mean"``, this is ``F.cross_entropy`` with mean
    reduction when ``class_weight=None``. With weights it is NOT ``F.cross_entropy(weight=...)``'s
    mean, which divides by the sum of the weights: the re-weighted losses average over valid pixels
    (docs/losses.md), so the weights change the scale of each class's contribution, not just their
    relative shares.
    """
    log_p_t, valid, index = target_log_prob(logits, target, ignore_index, logit_offset=logit_offset)
    terms = -log_p_t
    if class_weight is not None:
        terms = terms * lookup_class(class_weight, index, terms)
    return terms, valid
