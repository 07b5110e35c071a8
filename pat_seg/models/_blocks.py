"""Building blocks shared by the encoder-decoder models."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pat_seg.arguments import check_number


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias, BatchNorm follows) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """The two 3x3 conv-BN-ReLU layers of every U-Net stage (Ronneberger et al. 2015, with BN)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(ConvBNReLU(in_channels, mid), ConvBNReLU(mid, out_channels))


def match_size(x: Tensor, reference: Tensor) -> Tensor:
    """Pad (or crop) ``x`` spatially to ``reference``'s H, W.

    Down-sampling an odd size floors it, so the up-sampled decoder map can be one pixel short of
    the skip connection; padding here is what lets the models accept any H, W.
    """
    dh = reference.shape[-2] - x.shape[-2]
    dw = reference.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])


def check_model_args(num_classes: int, in_channels: int, **positive: int) -> None:
    """Raise ``ConfigurationError`` naming the value when a model size argument is not a positive integer."""
    for name, value in {"num_classes": num_classes, "in_channels": in_channels, **positive}.items():
        check_number(name, value, at_least=1, integer=True)
