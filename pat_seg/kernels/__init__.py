"""Fused kernels of pat-seg: Triton for the GPU, C++ for the CPU.

Importing this package imports neither: the Triton kernels live in :mod:`pat_seg.kernels.pat_triton`,
imported only when a loss dispatches to them, because Triton decides at import time whether kernels
are compiled for the GPU or run by its CPU interpreter (``TRITON_INTERPRET=1``); the C++ kernels of
:mod:`pat_seg.kernels.softmax_cross_entropy_cpu` are compiled on first use (:mod:`pat_seg.kernels.cpu_build`).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch
from torch import Tensor

# Logit dtypes the fused kernels take (their math is float32; float64 stays on the eager path).
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it ships with CUDA builds of PyTorch)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU (used by the tests)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


# ``implementation`` choices of the losses' fused CPU kernel (PATLoss adds "triton").
CPU_IMPLEMENTATIONS = ("auto", "eager", "cpu")


def check_cpu_implementation(implementation: str) -> str:
    """``implementation`` if it is one of :data:`CPU_IMPLEMENTATIONS`; ``"cpu"`` also builds the kernel now.

    Raises ``ValueError`` naming the value, or if ``"cpu"`` was asked for and the kernel cannot be built
    here (the message gives the compiler's reason), so a bad configuration fails before training starts.
    """
    if implementation not in CPU_IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {CPU_IMPLEMENTATIONS}; got {implementation!r}")
    if implementation == "cpu":
        from pat_seg.kernels.cpu_build import CpuKernelUnavailable, load_cpu_kernels

        try:
            load_cpu_kernels()
        except CpuKernelUnavailable as error:
            raise ValueError(f"implementation='cpu' needs pat-seg's C++ CPU kernel, which cannot be built here: {error}") from error
    return implementation


def use_fused_cpu(implementation: str, logits: Tensor) -> bool:
    """Whether a loss with ``implementation`` runs the fused CPU kernel on ``logits`` (float32 after upcast).

    ``"auto"`` takes it for CPU float32 logits when the kernel builds here, ``"eager"`` never, ``"cpu"``
    always, raising ``ValueError`` for logits it cannot take (CUDA, or float64: the kernel is float32).
    """
    if implementation == "eager":
        return False
    fits = logits.device.type == "cpu" and logits.dtype == torch.float32
    if implementation == "cpu":
        if not fits:
            raise ValueError(
                f"implementation='cpu' runs on CPU float32 logits; got {logits.dtype} logits on {logits.device} "
                f"(use implementation='auto' or 'eager')"
            )
        return True
    from pat_seg.kernels.cpu_build import cpu_kernels_available

    return fits and cpu_kernels_available()


__all__ = [
    "CPU_IMPLEMENTATIONS",
    "FUSED_DTYPES",
    "check_cpu_implementation",
    "triton_available",
    "triton_interpreter_requested",
    "use_fused_cpu",
]
