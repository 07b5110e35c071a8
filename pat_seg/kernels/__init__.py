"""Opt-in fused kernels of pat-seg: the Triton PAT kernel (:mod:`pat_seg.kernels.pat_triton`).

Importing this package does not import Triton: a loss imports the kernel module only when it
dispatches to it, because Triton decides at import time whether kernels are compiled for the GPU or
run by its CPU interpreter (``TRITON_INTERPRET=1``). The kernels take plain tensors and import nothing
from :mod:`pat_seg.losses`.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (it ships with CUDA builds of PyTorch)."""
    return importlib.util.find_spec("triton") is not None


__all__ = ["triton_available"]
