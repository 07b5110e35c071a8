"""Shared pixel-level helpers for every loss in :mod:`pat_seg.losses`.

All losses take ``logits`` of shape ``[B, L, H, W]`` and an integer ``target`` of shape ``[B, H, W]``
whose pixels equal to ``ignore_index`` take no part (SPEC section 2). The helpers here do the three
things every loss needs, once: validate the input before any kernel could assert, compute
``log p`` in float32 (never ``log(softmax)``), and pick the true-class entry with ``gather`` so that no
``[B, L, H, W]`` one-hot tensor is ever built.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def check_logits_target(logits: Tensor, target: Tensor, ignore_index: int) -> None:
    """Raise ``ValueError`` naming the offending value unless ``logits``/``target`` form a valid pair.

    Checked: ``logits`` is a floating ``[B, L, H, W]`` tensor, ``target`` an integer ``[B, H, W]``
    tensor of the same batch and spatial size, and every non-ignored label lies in ``[0, L)``.
    The label check is one tensor reduction, done before any gather/bincount could hit an
    out-of-range index (which on CUDA is a device-side assert instead of a readable error).
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
    num_classes = logits.shape[1]
    labelled = target != ignore_index
    bad = labelled & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise ValueError(
            f"label {value} found in target; expected class indices in [0, {num_classes - 1}] "
            f"or ignore_index {ignore_index}"
        )


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


def per_image_class_counts(index: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """Number of valid pixels of each class in each image, ``[B, L]``, by one ``bincount``.

    This is ``S_i^l`` of PAT Eq. 2. Ignored pixels are routed to an extra overflow bin that is
    dropped, so no boolean indexing (and no host sync) is needed.
    """
    batch = index.shape[0]
    image_offset = torch.arange(batch, device=index.device).view(batch, 1, 1) * num_classes
    flat = torch.where(valid, index + image_offset, torch.full_like(index, batch * num_classes))
    counts = torch.bincount(flat.reshape(-1), minlength=batch * num_classes + 1)
    return counts[: batch * num_classes].view(batch, num_classes)


def pat_pixel_weights(target: Tensor, ignore_index: int, num_classes: int, class_reduction: str) -> Tensor:
    r"""PAT's normalisation as a ``[B, L]`` float32 table: :math:`w_{il} = 1 / (B \, S_i^l)` (Eq. 4).

    Divided further by the number of classes present in image ``i`` for ``class_reduction="mean"``.
    The fused kernels (Triton and CPU) weight pixel ``j`` of image ``i`` by ``w[i, y_ij]``.
    """
    valid, index = valid_mask_and_index(target, ignore_index)
    counts = per_image_class_counts(index, valid, num_classes).to(torch.float32)  # S_i^l
    weights = 1.0 / (target.shape[0] * counts.clamp_min(1.0))
    if class_reduction == "mean":
        weights = weights / (counts > 0).sum(1, keepdim=True).clamp_min(1).to(torch.float32)  # K_i
    return weights


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
    re-weighted losses of SPEC section 2 average over valid pixels, so the weights change the scale
    of each class's contribution, not just their relative shares.
    """
    log_p_t, valid, index = target_log_prob(logits, target, ignore_index, logit_offset=logit_offset)
    per_pixel = -log_p_t
    if class_weight is not None:
        per_pixel = per_pixel * lookup_class(class_weight, index, per_pixel)
    return mean_over_valid(per_pixel, valid)
