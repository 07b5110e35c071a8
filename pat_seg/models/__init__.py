"""Segmentation networks: ``nn.Module(num_classes, in_channels=3, ...)`` returning ``[B, L, H, W]`` logits."""

from pat_seg.models.attention_unet import AttentionUNet
from pat_seg.models.base import SegmentationNetwork
from pat_seg.models.deeplab import DeepLabV3, DeepLabV3Plus
from pat_seg.models.segnet import SegNet
from pat_seg.models.unet import UNet
from pat_seg.models.unet_plus_plus import UNetPlusPlus

# The networks of the paper, in the order of its tables.
PAPER_MODELS = (SegNet, UNet, AttentionUNet, UNetPlusPlus, DeepLabV3, DeepLabV3Plus)

__all__ = [
    "PAPER_MODELS",
    "AttentionUNet",
    "DeepLabV3",
    "DeepLabV3Plus",
    "SegNet",
    "SegmentationNetwork",
    "UNet",
    "UNetPlusPlus",
]
