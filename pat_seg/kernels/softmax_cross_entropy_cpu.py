r"""Fused softmax pixel losses on the CPU, with autograd: the C++ kernel of ``cpu/softmax_cross_entropy.cpp``.

For logits ``z [B, L, H, W]`` and labels ``t``, with constants that each loss sets:

.. math::
    y_c = s z_c + o_c + a_c \min(\sigma |e_c|, 1) - [c = t]\, s\, m_t, \qquad
    \ell = \operatorname{logsumexp}_c y_c - y_t, \qquad
    \mathcal{L} = \frac{1}{N} \sum_{\text{valid}} w \, \phi(\ell)

with ``phi`` the identity (cross-entropy, Class-Balanced with weights ``w``, Balanced Softmax with
offsets ``o = log n``, LDAM with ``s``, margins ``m`` and DRW weights ``w`` -- Cao et al. Eq. 13 --,
BLV with variation scale ``a`` and ``sigma`` -- Wang et al. Eq. 5-6), :math:`\beta \ell` (PAT, Eq. 4-5,
with ``w = 1 / (B S_i^l)`` per image and class and ``N = 1``) or :math:`(1 - p_t)^\gamma \ell` (focal).
``N`` is the number of valid pixels for the mean losses. The kernel computes the loss and
:math:`\partial \mathcal{L} / \partial z_c = s w \phi'(\ell) (\mathrm{softmax}(y)_c - [c = t]) / N` in one
pass over the logits; the backward pass only scales that gradient by the incoming one (in place, as
nothing else holds it). A second backward through the same graph (``retain_graph=True``) recomputes
it, drawing the same noise again from the saved seed.

BLV's noise comes from a counter-based generator seeded by one draw from torch's default generator,
so ``torch.manual_seed`` / ``seed_everything`` reproduce it and the draw does not depend on the number
of threads. It is an exact normal sample up to float32 rounding (Philox4x32-10 bits through erfinv), but
not the same numbers as the eager path's ``torch.randn``.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pat_seg.kernels.cpu_build import load_cpu_kernels

_STATUS_BAD_LABEL = 1
PIXEL_FUNCTIONS = {"linear": 0, "pat": 1, "focal": 2}  # the kernel's PixelFunction codes


class LossArgs(ctypes.Structure):
    """The kernel's ``pat_seg_loss_args``, field by field (same order, types and therefore layout)."""

    _fields_ = [
        ("logits", ctypes.c_void_p),
        ("target", ctypes.c_void_p),
        ("grad", ctypes.c_void_p),
        ("batch", ctypes.c_int64),
        ("classes", ctypes.c_int64),
        ("pixels", ctypes.c_int64),
        ("ignore_index", ctypes.c_int64),
        ("class_offset", ctypes.c_void_p),
        ("target_margin", ctypes.c_void_p),
        ("weight", ctypes.c_void_p),
        ("weight_image_stride", ctypes.c_int64),
        ("noise_scale", ctypes.c_void_p),
        ("seed", ctypes.c_uint64),
        ("scale", ctypes.c_float),
        ("sigma", ctypes.c_float),
        ("grad_factor", ctypes.c_float),
        ("pixel_function", ctypes.c_int32),
        ("inv_temperature", ctypes.c_float),
        ("epsilon", ctypes.c_float),
        ("gamma", ctypes.c_float),
        ("detach_weight", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
    ]


@dataclass(frozen=True)
class PixelLossTerms:
    """The constants of the fused loss (module docstring); ``None`` leaves a term out.

    ``weight`` is per class ``[L]`` or per image and class ``[B, L]``; ``normalize`` divides by the
    number of valid pixels (all losses but PAT, whose weights are normalised already).
    """

    ignore_index: int = 255
    scale: float = 1.0
    class_offset: Tensor | None = None
    target_margin: Tensor | None = None
    weight: Tensor | None = None
    normalize: bool = True
    variation_scale: Tensor | None = None
    sigma: float = 0.0
    seed: int = 0
    pixel_function: str = "linear"
    temperature: float = 1.0
    epsilon: float = 0.0
    detach_weight: bool = False
    gamma: float = 0.0

    def run(self, logits: Tensor, target: Tensor, compute_grad: bool) -> tuple[Tensor, Tensor | None]:
        """Loss (float32 scalar) and, if asked, its gradient for contiguous float32 ``logits``, int64 ``target``."""
        library = load_cpu_kernels()
        batch, num_classes, height, width = logits.shape
        num_valid = int((target != self.ignore_index).sum()) if self.normalize else 1
        grad_factor = 1.0 / max(num_valid, 1)
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if compute_grad else None
        offset, margin, noise = (self._table(t, (num_classes,)) for t in
                                 (self.class_offset, self.target_margin, self.variation_scale))
        weight = self._table(self.weight, (num_classes,) if self.weight is None or self.weight.dim() == 1
                             else (batch, num_classes))
        args = LossArgs(
            logits=logits.data_ptr(), target=target.data_ptr(), grad=None if grad is None else grad.data_ptr(),
            batch=batch, classes=num_classes, pixels=height * width, ignore_index=self.ignore_index,
            class_offset=self._pointer(offset), target_margin=self._pointer(margin), weight=self._pointer(weight),
            weight_image_stride=num_classes if weight is not None and weight.dim() == 2 else 0,
            noise_scale=self._pointer(noise), seed=self.seed, scale=self.scale, sigma=self.sigma,
            grad_factor=grad_factor, pixel_function=PIXEL_FUNCTIONS[self.pixel_function],
            inv_temperature=1.0 / self.temperature, epsilon=self.epsilon, gamma=self.gamma,
            detach_weight=int(self.detach_weight), num_threads=torch.get_num_threads(),
        )
        loss_sum = ctypes.c_double(0.0)
        status = library.pat_seg_pixel_loss(ctypes.byref(args), ctypes.byref(loss_sum))
        if status == _STATUS_BAD_LABEL:  # the losses check labels first; this guards direct callers
            raise ValueError(f"target holds labels outside [0, {num_classes - 1}] other than ignore_index "
                             f"{self.ignore_index}")
        if status != 0:
            raise MemoryError("the fused CPU loss kernel could not allocate its work buffers")
        return torch.tensor(loss_sum.value * grad_factor, dtype=torch.float32), grad

    @staticmethod
    def _table(values: Tensor | None, shape: tuple[int, ...]) -> Tensor | None:
        if values is None:
            return None
        table = values.detach().to(device="cpu", dtype=torch.float32).contiguous()
        if tuple(table.shape) != shape:
            raise ValueError(f"table must have shape {list(shape)}; got {list(values.shape)}")
        return table

    @staticmethod
    def _pointer(table: Tensor | None) -> int | None:
        return None if table is None else table.data_ptr()


class _FusedSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, terms: PixelLossTerms) -> Tensor:
        compute_grad = bool(ctx.needs_input_grad[0])
        loss, grad = terms.run(logits, target, compute_grad)
        ctx.terms, ctx.grad = terms, grad
        if compute_grad:
            ctx.save_for_backward(logits, target)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None, None]:
        grad, ctx.grad = ctx.grad, None  # handed over, so autograd can take it without a copy
        if grad is None:  # backward through the graph a second time (retain_graph=True)
            logits, target = ctx.saved_tensors
            _, grad = ctx.terms.run(logits, target, compute_grad=True)
        factor = float(grad_loss)
        if factor != 1.0:
            grad.mul_(factor)
        return grad, None, None


def draw_seed() -> int:
    """A 63-bit seed drawn from torch's default CPU generator (so ``torch.manual_seed`` fixes it)."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def fused_softmax_cross_entropy(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = 255,
    *,
    scale: float = 1.0,
    class_offset: Tensor | None = None,
    target_margin: Tensor | None = None,
    class_weight: Tensor | None = None,
    variation_scale: Tensor | None = None,
    sigma: float = 0.0,
    seed: int | None = None,
    pixel_function: str = "linear",
    normalize: bool = True,
    temperature: float = 1.0,
    epsilon: float = 0.0,
    detach_weight: bool = False,
    gamma: float = 0.0,
) -> Tensor:
    """The loss of the module docstring for CPU ``logits [B, L, H, W]`` and labels ``target [B, H, W]``.

    Meant to be called by the losses (their ``implementation="auto"`` or ``"cpu"``), which validate
    the labels and options first. ``class_weight`` is ``[L]`` or ``[B, L]``. The logits are computed on
    in float32 (half-precision logits are upcast, and the gradient flows back in their dtype); the
    result is a float32 scalar, 0 when every pixel is ignored. ``seed`` fixes BLV's noise; by default
    it is drawn from torch's generator when the noise is on.
    """
    if logits.device.type != "cpu" or target.device.type != "cpu":
        raise ValueError(f"the fused CPU loss needs CPU tensors; got logits on {logits.device}, target on {target.device}")
    if pixel_function not in PIXEL_FUNCTIONS:
        raise ValueError(f"pixel_function must be one of {tuple(PIXEL_FUNCTIONS)}; got {pixel_function!r}")
    noisy = variation_scale is not None and sigma > 0
    terms = PixelLossTerms(
        ignore_index=int(ignore_index),
        scale=float(scale),
        class_offset=class_offset,
        target_margin=target_margin,
        weight=class_weight,
        normalize=bool(normalize),
        variation_scale=variation_scale if noisy else None,
        sigma=float(sigma) if noisy else 0.0,
        seed=(draw_seed() if seed is None else int(seed)) if noisy else 0,
        pixel_function=pixel_function,
        temperature=float(temperature),
        epsilon=float(epsilon),
        detach_weight=bool(detach_weight),
        gamma=float(gamma),
    )
    logits32 = logits.to(torch.float32).contiguous()
    return _FusedSoftmaxCrossEntropy.apply(logits32, target.to(torch.int64).contiguous(), terms)


def blv_variation(shape: tuple[int, int, int, int], sigma: float, seed: int) -> Tensor:
    """``min(sigma |e|, 1)`` exactly as the kernel draws it for logits of ``shape`` under ``seed`` (tests use it)."""
    batch, num_classes, height, width = shape
    out = torch.empty(shape, dtype=torch.float32)
    if load_cpu_kernels().pat_seg_blv_variation(out.data_ptr(), batch, num_classes, height * width, float(sigma), int(seed)):
        raise MemoryError("the BLV variation kernel could not allocate its work buffer")
    return out


__all__ = ["PIXEL_FUNCTIONS", "LossArgs", "PixelLossTerms", "blv_variation", "draw_seed", "fused_softmax_cross_entropy"]
