r"""Fused PAT loss (paper Eq. 4-5) for CUDA, written in Triton: the opt-in ``PATLoss(implementation="triton")``.

One kernel serves the forward and the backward pass. A program owns ``BLOCK_P`` consecutive pixels of
one image -- the contiguous ``H*W`` axis of ``[B, L, H, W]`` logits, so every load is coalesced -- and
loops over the classes in tiles of ``BLOCK_C`` with an online softmax (running max and rescaled sum),
so any ``L`` from 2 to 256 runs in the same registers. Per pixel it needs only ``log p_t`` and one
entry of a small ``[B, L]`` table of pixel weights, which the caller builds (``PATLoss`` builds it with
:func:`pat_seg.losses.pat.pat_weight_table`, the same table its PyTorch code uses):

.. math::
    \mathcal{L} = \sum_{ij} w_{i y_{ij}} \, \beta_{ij} \, \ell_{ij}, \quad \ell = -\log p_t, \qquad
    w_{il} = \frac{1}{B \, S_i^l \, (K_i \text{ if class\_reduction="mean" else } 1)} \text{ (Eq. 4)}
    \text{ or } \frac{1}{V} \text{ (normalization="pixel", V valid pixels)} .

With ``confidence_weight=False`` (the ``CONFIDENCE_WEIGHT`` constexpr, compiled as its own variant)
``beta = 1`` and the kernel computes ``sum_ij w_{i y_ij} l_ij``; the table alone carries the choice of
normalisation, so the kernel serves every combination of the two options.

Every per-pixel loss that is a function :math:`\phi(\ell)` of ``log p_t`` alone has the gradient
:math:`\partial \phi / \partial z_k = \phi'(\ell) (p_k - [k = t])` because
:math:`\partial \ell / \partial z_k = p_k - [k = t]`. For PAT, :math:`\phi = \beta \ell` with
:math:`\beta = \exp((1 - e^{-\ell} - \epsilon)/T)`, so :math:`d\beta/d\ell = \beta p_t / T` and

.. math::
    \frac{\partial (\beta \ell)}{\partial z_k} = \beta \Big(1 + \frac{p_t \, \ell}{T}\Big) (p_k - [k = t])

(with ``detach_weight=True`` the bracket is 1: ``beta`` is a constant; with ``confidence_weight=False``
the whole factor is 1).

Memory traffic: the forward reads the logits once and writes one float per program; the backward
reads them again (recomputing the softmax statistics instead of storing them) and writes the gradient
once, in the logits' dtype, scaled by the incoming gradient read from device memory (no host sync).
No ``[B, L, H, W]`` buffer other than the gradient itself is allocated; math is in float32.

Import this module only after deciding whether Triton runs on the GPU or through its CPU interpreter:
``TRITON_INTERPRET=1`` must be set before the import (the tests do so).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

MAX_CLASSES = 256
# Logit dtypes the kernel reads (its math is float32; float64 stays on the PyTorch code).
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _pixel_loss_kernel(
    logits_ptr,
    target_ptr,
    weight_ptr,
    grad_scale_ptr,
    partial_ptr,
    grad_ptr,
    num_classes,
    num_pixels,
    width,
    stride_lb,
    stride_lc,
    stride_lh,
    stride_lw,
    stride_gb,
    stride_gc,
    stride_gh,
    stride_gw,
    ignore_index,
    inv_temperature,
    epsilon,
    CONFIDENCE_WEIGHT: tl.constexpr,
    DETACH_WEIGHT: tl.constexpr,
    COMPUTE_GRAD: tl.constexpr,
    PIXELS_CONTIGUOUS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    block = tl.program_id(0)
    image = tl.program_id(1).to(tl.int64)
    pixel = block * BLOCK_P + tl.arange(0, BLOCK_P)
    in_range = pixel < num_pixels
    if PIXELS_CONTIGUOUS:
        # Offsets the compiler can see are consecutive, so loads and stores are vectorised.
        logits_offset = image * stride_lb + pixel
        grad_offset = image * stride_gb + pixel
    else:
        row = pixel // width
        col = pixel % width
        logits_offset = image * stride_lb + row * stride_lh + col * stride_lw
        grad_offset = image * stride_gb + row * stride_gh + col * stride_gw

    label = tl.load(target_ptr + image * num_pixels + pixel, mask=in_range, other=ignore_index)
    valid = in_range & (label != ignore_index)
    label = tl.where(valid, label, 0).to(tl.int32)

    # Pass 1: online log-sum-exp over class tiles, picking the true-class logit on the way.
    running_max = tl.full([BLOCK_P], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_P], tl.float32)
    true_logit = tl.zeros([BLOCK_P], tl.float32)
    for first in range(0, num_classes, BLOCK_C):
        cls = first + tl.arange(0, BLOCK_C)
        cls_in_range = cls < num_classes
        tile_mask = cls_in_range[:, None] & in_range[None, :]
        x = tl.load(
            logits_ptr + logits_offset[None, :] + cls[:, None].to(tl.int64) * stride_lc, mask=tile_mask, other=0.0
        )
        x = tl.where(cls_in_range[:, None], x.to(tl.float32), float("-inf"))
        new_max = tl.maximum(running_max, tl.max(x, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max[None, :]), axis=0)
        running_max = new_max
        true_logit += tl.sum(tl.where(cls[:, None] == label[None, :], x, 0.0), axis=0)
    log_sum_exp = running_max + tl.log(running_sum)
    nll = log_sum_exp - true_logit  # -log p_t >= 0

    weight = tl.load(weight_ptr + image * num_classes + label, mask=valid, other=0.0)
    if CONFIDENCE_WEIGHT:
        p_true = tl.exp(-nll)
        beta = tl.exp((1.0 - p_true - epsilon) * inv_temperature)  # Eq. 5
        pixel_loss = weight * beta * nll
        if DETACH_WEIGHT:
            slope = weight * beta
        else:
            slope = weight * beta * (1.0 + p_true * nll * inv_temperature)
    else:
        pixel_loss = weight * nll
        slope = weight

    if COMPUTE_GRAD:
        # Pass 2: d loss / d z_k = grad_out * slope * (p_k - [k = t]), written once per element.
        slope = tl.where(valid, slope * tl.load(grad_scale_ptr), 0.0)
        for first in range(0, num_classes, BLOCK_C):
            cls = first + tl.arange(0, BLOCK_C)
            tile_mask = (cls < num_classes)[:, None] & in_range[None, :]
            cls_offset = cls[:, None].to(tl.int64)
            x = tl.load(logits_ptr + logits_offset[None, :] + cls_offset * stride_lc, mask=tile_mask, other=0.0)
            prob = tl.exp(x.to(tl.float32) - log_sum_exp[None, :])
            is_true = (cls[:, None] == label[None, :]).to(tl.float32)
            grad = slope[None, :] * (prob - is_true)
            tl.store(
                grad_ptr + grad_offset[None, :] + cls_offset * stride_gc,
                grad.to(grad_ptr.dtype.element_ty),
                mask=tile_mask,
            )
    else:
        tl.store(partial_ptr + image * tl.num_programs(0) + block, tl.sum(tl.where(valid, pixel_loss, 0.0), axis=0))


def _block_sizes(num_classes: int) -> tuple[int, int, int]:
    """Class tile, pixel tile and warps: tiles of about 4096 values over 256 threads.

    Chosen without a GPU from ``ptxas -v`` for sm_90: 64-100 registers, no spills, 16-byte loads and
    stores; 32-class tiles needed up to 208 registers. Retune with benchmarks/gpu_check.py (its loss table).
    """
    block_c = min(16, triton.next_power_of_2(num_classes))
    return block_c, min(1024, 4096 // block_c), 8


def _pixels_contiguous(tensor: Tensor) -> bool:
    """Whether pixel ``(h, w)`` of every ``[b, c]`` plane sits at offset ``h * W + w``."""
    height, width = tensor.shape[2:]
    return (width == 1 or tensor.stride(3) == 1) and (height == 1 or tensor.stride(2) == width)


def _is_interpreted() -> bool:
    return type(_pixel_loss_kernel).__name__ == "InterpretedFunction"


def _check_kernel_input(logits: Tensor, pixel_weight: Tensor) -> None:
    if logits.dtype not in FUSED_DTYPES:
        raise ValueError(
            f"the fused Triton loss takes float32, bfloat16 or float16 logits; got {logits.dtype} "
            f"(use implementation='eager' for it)"
        )
    if logits.shape[1] > MAX_CLASSES:
        raise ValueError(f"the fused Triton loss supports up to {MAX_CLASSES} classes; got {logits.shape[1]}")
    if not logits.is_cuda and not _is_interpreted():
        raise ValueError(
            f"the fused Triton loss needs CUDA tensors; got logits on {logits.device} "
            f"(on the CPU it runs only under Triton's interpreter: set TRITON_INTERPRET=1 before "
            f"pat_seg.kernels.pat_triton is imported)"
        )
    expected = (logits.shape[0], logits.shape[1])
    if (
        tuple(pixel_weight.shape) != expected
        or pixel_weight.dtype != torch.float32
        or pixel_weight.device != logits.device
    ):
        raise ValueError(
            f"pixel_weight must be a float32 [B, L] = {list(expected)} table on {logits.device}; got "
            f"{pixel_weight.dtype} {list(pixel_weight.shape)} on {pixel_weight.device}"
        )


def _launch(
    logits: Tensor,
    target: Tensor,
    pixel_weight: Tensor,
    options: tuple[bool, float, float, bool, int],
    grad_scale: Tensor | None,
) -> Tensor:
    """Run the kernel: per-program loss partials ``[B, blocks]`` or, given ``grad_scale``, the gradient."""
    confidence_weight, temperature, epsilon, detach_weight, ignore_index = options
    batch, num_classes, height, width = logits.shape
    num_pixels = height * width
    block_c, block_p, num_warps = _block_sizes(num_classes)
    grid = (triton.cdiv(num_pixels, block_p), batch)
    compute_grad = grad_scale is not None
    if compute_grad:
        grad = torch.empty_like(logits)  # same layout as the logits; written once by the kernel
        partial = pixel_weight  # not written in the backward
    else:
        grad = logits  # not written in the forward
        partial = torch.empty(batch, grid[0], dtype=torch.float32, device=logits.device)
        grad_scale = pixel_weight  # not read in the forward
    _pixel_loss_kernel[grid](
        logits,
        target,
        pixel_weight,
        grad_scale,
        partial,
        grad,
        num_classes,
        num_pixels,
        width,
        *logits.stride(),
        *grad.stride(),
        ignore_index,
        1.0 / temperature,
        epsilon,
        CONFIDENCE_WEIGHT=confidence_weight,
        DETACH_WEIGHT=detach_weight,
        COMPUTE_GRAD=compute_grad,
        PIXELS_CONTIGUOUS=_pixels_contiguous(logits) and _pixels_contiguous(grad),
        BLOCK_C=block_c,
        BLOCK_P=block_p,
        num_warps=num_warps,
    )
    return grad if compute_grad else partial


class _FusedPixelLoss(torch.autograd.Function):
    """``sum_ij w[i, y_ij] * phi(-log p_t(ij))`` with the fused kernel for forward and backward."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, pixel_weight: Tensor, options: tuple) -> Tensor:
        partial = _launch(logits, target, pixel_weight, options, grad_scale=None)
        ctx.save_for_backward(logits, target, pixel_weight)
        ctx.options = options
        return partial.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, None, None, None]:
        logits, target, pixel_weight = ctx.saved_tensors
        grad_scale = grad_loss.detach().to(torch.float32).reshape(1)
        grad = _launch(logits, target, pixel_weight, ctx.options, grad_scale=grad_scale)
        return grad, None, None, None


def _flat_target(target: Tensor) -> Tensor:
    """``[B, H*W]`` contiguous labels (a copy only if the caller's target is strided)."""
    return target.reshape(target.shape[0], -1).contiguous()


def fused_pat_loss(
    logits: Tensor,
    target: Tensor,
    pixel_weight: Tensor,
    temperature: float = 20.0,
    epsilon: float = 0.0,
    ignore_index: int = 255,
    detach_weight: bool = False,
    confidence_weight: bool = True,
) -> Tensor:
    """``sum_ij pixel_weight[i, y_ij] * beta_ij * (-log p_t(ij))`` (paper Eq. 4-5) by the fused kernel.

    ``logits [B, L, H, W]`` (float32/bfloat16/float16, CUDA or the Triton interpreter), ``target
    [B, H, W]`` with labels already checked, ``pixel_weight`` the float32 ``[B, L]`` table of
    :func:`pat_seg.losses.pat.pat_weight_table` (Eq. 4's ``1 / (B S_i^l)`` or the pixel mean's
    ``1 / V``). ``confidence_weight=False`` sets ``beta_ij = 1`` (Eq. 5 off; ``temperature``,
    ``epsilon`` and ``detach_weight`` are then unused). Call it through
    ``PATLoss(implementation="triton")``, which checks the input and builds the table. The result is a
    float32 scalar; the gradient has the logits' dtype and layout.
    """
    _check_kernel_input(logits, pixel_weight)
    options = (bool(confidence_weight), float(temperature), float(epsilon), bool(detach_weight), int(ignore_index))
    return _FusedPixelLoss.apply(logits, _flat_target(target), pixel_weight.contiguous(), options)


__all__ = ["FUSED_DTYPES", "MAX_CLASSES", "fused_pat_loss"]
