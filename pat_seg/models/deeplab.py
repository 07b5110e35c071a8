"""DeepLabV3 (Chen et al. 2017, arXiv:1706.05587) and DeepLabV3+ (Chen et al., ECCV 2018).

Both run atrous spatial pyramid pooling (ASPP) on a dilated ResNet whose deepest map has output
stride 8 or 16; V3+ adds a decoder that refines the ASPP output with stride-4 features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pat_seg.arguments import PositiveInt
from pat_seg.exceptions import ConfigurationError
from pat_seg.models._blocks import ConvBNReLU, check_model_args
from pat_seg.models.backbones import OutputStride, resnet_features
from pat_seg.models.base import SegmentationNetwork

# ASPP atrous rates at output stride 16 (DeepLabV3 Sec. 3.3); output stride 8 doubles them.
ASPP_RATES_OS16 = (6, 12, 18)
ASPP_CHANNELS = 256
# DeepLabV3+ decoder (Sec. 3.1 and 4.1): low-level features reduced to 48 channels by a 1x1 conv.
LOW_LEVEL_CHANNELS = 48


def resize_to(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    """Bilinear resize to ``size`` (H, W), the up-sampling both DeepLab papers use."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool -> 1x1 conv -> BN -> ReLU -> broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = ConvBNReLU(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            # BatchNorm over a pooled 1x1 map needs more than one value per channel in training.
            raise ConfigurationError(
                f"DeepLab's image-pooling branch needs a training batch of >= 2 images (it applies "
                f"BatchNorm to one pooled value per image); got batch size {x.shape[0]}"
            )
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with image-level features (DeepLabV3 Sec. 3.3, Fig. 5).

    One 1x1 conv, three 3x3 convs at ``rates``, the image-pooling branch, all with 256 filters and
    BatchNorm, concatenated and fused by a 1x1 conv (256 filters, BatchNorm).
    """

    def __init__(self, in_channels: int, rates: tuple[int, ...], out_channels: int = ASPP_CHANNELS) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, kernel_size=1)]
            + [ConvBNReLU(in_channels, out_channels, dilation=rate) for rate in rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.fuse = ConvBNReLU(out_channels * len(self.branches), out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


def aspp_rates(output_stride: OutputStride) -> tuple[int, ...]:
    """(6, 12, 18) at output stride 16, doubled to (12, 24, 36) at 8 (DeepLabV3 Sec. 4.1)."""
    return tuple(rate * 16 // output_stride for rate in ASPP_RATES_OS16)


class DeepLabV3(SegmentationNetwork):
    """DeepLabV3: dilated ResNet -> ASPP -> 1x1 classifier -> bilinear up-sampling to the input size.

    Args:
        num_classes: number of output channels (logits).
        in_channels: image channels.
        backbone: a timm ResNet name (``resnet50`` as the paper; ``resnet18`` for quick runs).
        output_stride: 16 (paper's training setting) or 8; the ASPP rates follow it.
        pretrained: initialise the backbone from local weights (the paper's protocol trains from
            scratch, hence ``False``); never downloads, see :mod:`pat_seg.models.backbones`.
        pretrained_path: the checkpoint to load when ``pretrained``; default: timm's cache files.
    """

    label = "DLV3"  # its name in the report's tables

    # Backbone stages whose features the head uses (4 = last stage).
    feature_indices: tuple[int, ...] = (4,)

    def __init__(
        self,
        num_classes: PositiveInt,
        in_channels: PositiveInt = 3,
        backbone: str = "resnet50",
        output_stride: OutputStride = 16,
        pretrained: bool = False,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels)
        self.backbone = resnet_features(
            backbone, in_channels, output_stride, self.feature_indices, pretrained, pretrained_path
        )
        channels = self.backbone.feature_info.channels()  # type: ignore[union-attr,operator]  # timm's FeatureListNet
        self.aspp = ASPP(channels[-1], aspp_rates(output_stride))
        self.build_head(num_classes)

    def build_head(self, num_classes: int) -> None:
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, kernel_size=1)

    def decode(self, features: list[Tensor]) -> Tensor:
        """Logits at the backbone's resolution from the ``feature_indices`` maps."""
        return self.classifier(self.aspp(features[-1]))

    def forward(self, x: Tensor) -> Tensor:
        return resize_to(self.decode(self.backbone(x)), x.shape[-2:])


class DeepLabV3Plus(DeepLabV3):
    """DeepLabV3+: DeepLabV3's encoder and a decoder on the stride-4 ResNet features (Sec. 3.1).

    The ASPP output is up-sampled bilinearly to the stride-4 map, concatenated with that map
    reduced to 48 channels (1x1 conv, BN, ReLU), refined by two 3x3 convs of 256 filters, classified
    by a 1x1 conv and up-sampled to the input size. Arguments as :class:`DeepLabV3`.
    """

    label = "DLV3+"  # its name in the report's tables

    feature_indices = (1, 4)

    def build_head(self, num_classes: int) -> None:
        low_level = self.backbone.feature_info.channels()[0]  # type: ignore[union-attr,operator]  # timm's FeatureListNet
        self.reduce_low_level = ConvBNReLU(low_level, LOW_LEVEL_CHANNELS, kernel_size=1)
        self.refine = nn.Sequential(
            ConvBNReLU(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, ASPP_CHANNELS),
            ConvBNReLU(ASPP_CHANNELS, ASPP_CHANNELS),
        )
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, kernel_size=1)

    def decode(self, features: list[Tensor]) -> Tensor:
        low_level, deep = features
        context = resize_to(self.aspp(deep), low_level.shape[-2:])
        return self.classifier(self.refine(torch.cat([context, self.reduce_low_level(low_level)], dim=1)))
