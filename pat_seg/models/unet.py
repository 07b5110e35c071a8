"""U-Net (Ronneberger et al., MICCAI 2015), with BatchNorm, for any input size from 2**depth a side."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pat_seg.arguments import PositiveInt
from pat_seg.models._blocks import DoubleConv, check_model_args, match_size
from pat_seg.models.base import SegmentationNetwork


class UNet(SegmentationNetwork):
    """U-Net: ``depth`` max-pool stages, channels doubling from ``base_channels``, skip concatenation.

    Returns logits ``[B, num_classes, H, W]`` at the input resolution for any ``H, W``: odd sizes are
    floored by pooling and the decoder pads back to the skip connection's size.

    With ``base_channels=64, depth=4`` (transposed-conv up-sampling) this is the 31M-parameter
    network of the paper.
    """

    label = "UNet"  # its name in the report's tables

    def __init__(
        self,
        num_classes: PositiveInt,
        in_channels: PositiveInt = 3,
        base_channels: PositiveInt = 32,
        depth: PositiveInt = 4,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, base_channels=base_channels, depth=depth)
        self.min_input_size = 2**depth  # each of the depth max-pool stages halves the sides
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.pool = nn.MaxPool2d(2)
        self.encoders = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2) for i in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for encoder in self.encoders:
            skips.append(encoder(self.pool(skips[-1])))
        y = skips.pop()
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            skip = skips.pop()
            y = decoder(torch.cat([skip, match_size(upsample(y), skip)], dim=1))
        return self.head(y)
