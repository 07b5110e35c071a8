"""Data modules: batches of ``{"image": float [B, C, H, W], "target": long [B, H, W]}``."""

from pat_seg.data.base import SegmentationDataModule, count_classes
from pat_seg.data.synthetic import SyntheticLongTailDataModule, SyntheticLongTailDataset

__all__ = ["SegmentationDataModule", "SyntheticLongTailDataModule", "SyntheticLongTailDataset", "count_classes"]
