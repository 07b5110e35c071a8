"""SegNet (Badrinarayanan, Kendall and Cipolla, IEEE TPAMI 2017), for any input size from 32x32."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pat_seg.arguments import PositiveInt
from pat_seg.models._blocks import ConvBNReLU, check_model_args
from pat_seg.models.base import SegmentationNetwork

# VGG-16 (configuration D of Simonyan and Zisserman 2015) without its fully connected layers:
# the number of 3x3 convolutions in each of the five stages (13 in all) and their width relative
# to the first stage.
VGG16_STAGE_CONVS = (2, 2, 3, 3, 3)
VGG16_STAGE_WIDTHS = (1, 2, 4, 8, 8)


def _conv_stack(widths: list[int]) -> nn.Sequential:
    """Conv-BN-ReLU layers taking ``widths[0]`` channels through ``widths[1:]``."""
    return nn.Sequential(*(ConvBNReLU(a, b) for a, b in zip(widths[:-1], widths[1:])))


class SegNet(SegmentationNetwork):
    """SegNet: a VGG-16-BN encoder (13 convolutions) and a mirrored decoder that up-samples by
    max-unpooling with the indices each encoder max-pool stored (SegNet paper, Sec. 3, Fig. 3).

    Each decoder stage mirrors an encoder stage: unpool, then as many 3x3 conv-BN-ReLU layers as
    the encoder stage had, the last one narrowing to the next stage's width (the paper's decoder
    "produces a multi-channel feature map" with the mirrored filter bank). A final 3x3 convolution
    gives the class logits; the paper follows it with a soft-max, which the loss applies here.

    Any ``H, W`` of at least 32 (``min_input_size``) works: pooling floors odd sizes and unpooling
    is told the pre-pool size, so each value returns exactly to the position its index names and
    the output has the input's size.

    Args:
        num_classes: number of output channels (logits).
        in_channels: image channels.
        base_channels: width of the first stage; 64 is the paper's network (29.4M parameters),
            smaller values scale every stage for quick runs.
    """

    label = "SegNet"  # its name in the report's tables
    min_input_size = 2 ** len(VGG16_STAGE_CONVS)  # five max-pool stages: 32 pixels a side

    def __init__(self, num_classes: PositiveInt, in_channels: PositiveInt = 3, base_channels: PositiveInt = 64) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, base_channels=base_channels)
        widths = [base_channels * w for w in VGG16_STAGE_WIDTHS]
        encoders, decoders = [], []
        for stage, (width, convs) in enumerate(zip(widths, VGG16_STAGE_CONVS)):
            encoders.append(_conv_stack([widths[stage - 1] if stage else in_channels] + [width] * convs))
            # The mirror of this stage maps `width` channels back to the width that entered it
            # (the first stage's mirror keeps `width`: the classifier follows).
            decoders.append(_conv_stack([width] * convs + [widths[stage - 1] if stage else width]))
        self.encoders = nn.ModuleList(encoders)
        self.decoders = nn.ModuleList(reversed(decoders))
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        pooled: list[tuple[Tensor, tuple[int, int]]] = []
        for encoder in self.encoders:
            x = encoder(x)
            size = (x.shape[-2], x.shape[-1])
            x, indices = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
            pooled.append((indices, size))
        for decoder in self.decoders:
            indices, size = pooled.pop()
            x = decoder(F.max_unpool2d(x, indices, kernel_size=(2, 2), stride=(2, 2), output_size=size))
        return self.classifier(x)
