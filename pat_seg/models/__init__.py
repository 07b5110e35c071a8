"""Segmentation networks: ``nn.Module(num_classes, in_channels=3, ...)`` returning ``[B, L, H, W]`` logits."""

from pat_seg.models.unet import UNet

__all__ = ["UNet"]
