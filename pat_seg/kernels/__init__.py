"""Fused GPU kernels of pat-seg, written in Triton.

Importing this package does not import Triton: the kernels live in :mod:`pat_seg.kernels.pat_triton`,
imported only when a loss dispatches to them, because Triton decides at import time whether kernels
are compiled for the GPU or run by its CPU interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch

# Logit dtypes the fused kernels take (their math is float32; float64 stays on the eager path).
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it ships with CUDA builds of PyTorch)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels on the CPU (used by the tests)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


__all__ = ["FUSED_DTYPES", "triton_available", "triton_interpreter_requested"]
