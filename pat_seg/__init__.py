"""pat-seg: long-tailed semantic segmentation with the PAT loss (Pixel-wise Adaptive Training).

``import pat_seg.losses`` and ``import pat_seg.models`` need torch (and timm) only; the Lightning
side (:class:`~pat_seg.module.SegmentationModule`) is imported on first use of the attribute.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SegmentationModule", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "SegmentationModule":
        from pat_seg.module import SegmentationModule

        return SegmentationModule
    raise AttributeError(f"module 'pat_seg' has no attribute {name!r}")
