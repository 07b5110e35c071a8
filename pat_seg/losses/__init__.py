"""Pixel losses for long-tailed segmentation: PAT (paper Eq. 4-5) and the baselines it is compared with."""

from pat_seg.losses.base import PixelLoss
from pat_seg.losses.cross_entropy import CrossEntropyLoss
from pat_seg.losses.pat import PATLoss

__all__ = ["CrossEntropyLoss", "PATLoss", "PixelLoss"]
