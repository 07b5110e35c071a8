"""Data modules: loaders of stored batches (uint8), which ``on_after_batch_transfer`` makes the model's
``{"image": float32 [B, C, H, W], "target": long [B, H, W]}`` (:mod:`pat_seg.data.base`)."""

from pat_seg.class_statistics import count_classes
from pat_seg.data.base import SegmentationDataModule
from pat_seg.data.cityscapes import CityscapesDataModule
from pat_seg.data.folder import SegmentationFolderDataModule
from pat_seg.data.image_folder import ImageFolderDataModule
from pat_seg.data.io import DatasetLayoutError
from pat_seg.data.nyuv2 import NYUv2DataModule
from pat_seg.data.oxford_pet import OxfordPetDataModule
from pat_seg.data.synthetic import SyntheticLongTailDataModule, SyntheticLongTailDataset
from pat_seg.data.transforms import SegmentationTransform

__all__ = [
    "CityscapesDataModule",
    "DatasetLayoutError",
    "ImageFolderDataModule",
    "NYUv2DataModule",
    "OxfordPetDataModule",
    "SegmentationDataModule",
    "SegmentationFolderDataModule",
    "SegmentationTransform",
    "SyntheticLongTailDataModule",
    "SyntheticLongTailDataset",
    "count_classes",
]
