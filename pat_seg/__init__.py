"""pat-seg: long-tailed semantic segmentation with the PAT loss (Pixel-wise Adaptive Training)."""

from pat_seg.module import SegmentationModule

__version__ = "0.1.0"
__all__ = ["SegmentationModule", "__version__"]
