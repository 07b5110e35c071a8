"""Segmentation networks: ``nn.Module(num_classes, in_channels=3, ...)`` returning ``[B, L, H, W]`` logits."""

from pat_seg.models.attention_unet import AttentionUNet
from pat_seg.models.deeplab import DeepLabV3, DeepLabV3Plus
from pat_seg.models.segnet import SegNet
from pat_seg.models.unet import UNet
from pat_seg.models.unet_plus_plus import UNetPlusPlus

__all__ = ["AttentionUNet", "DeepLabV3", "DeepLabV3Plus", "SegNet", "UNet", "UNetPlusPlus"]
