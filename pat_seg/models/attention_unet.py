"""Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pat_seg.arguments import PositiveInt
from pat_seg.models._blocks import match_size
from pat_seg.models.unet import UNet


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Eq. 1-2 and Fig. 2).

    ``q = psi^T relu(W_x^T x + W_g^T g + b_g) + b_psi``, ``alpha = sigmoid(q)``, output ``alpha * x``.
    As in the paper, the skip features ``x`` are brought to the coarser grid of the gating signal
    ``g`` by a stride-2 linear transform (a 2x2 convolution), and ``alpha`` is resampled back to
    ``x``'s grid (bilinear) before it scales ``x``. A 2x2 stride-2 convolution floors odd sizes the
    same way the encoder's max-pool does, so the two grids always agree.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.transform_skip = nn.Conv2d(skip_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.transform_gate = nn.Conv2d(gate_channels, inter_channels, kernel_size=1)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)

    def coefficients(self, x: Tensor, g: Tensor) -> Tensor:
        """Attention coefficients ``alpha`` in (0, 1), shape ``[B, 1, H_x, W_x]``."""
        q = self.psi(F.relu(self.transform_skip(x) + self.transform_gate(g)))
        return F.interpolate(torch.sigmoid(q), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return x * self.coefficients(x, g)


class AttentionUNet(UNet):
    """U-Net whose skip connections pass through attention gates (Oktay et al. 2018, Fig. 1).

    At every decoder level the gating signal is the coarser decoder feature map (before it is
    up-sampled); the gated skip features are concatenated with the up-sampled map as in U-Net.
    The gates' intermediate width is half the skip width, as in the authors' implementation.
    Encoder, up-sampling and decoder convolutions are :class:`UNet`'s; any ``H, W`` works.

    Args:
        num_classes, in_channels, base_channels, depth: as :class:`UNet`; ``base_channels=64,
            depth=4`` is the 2-D Attention U-Net at U-Net's paper width (32.1M parameters).
    """

    label = "AttUNet"  # its name in the report's tables

    def __init__(
        self,
        num_classes: PositiveInt,
        in_channels: PositiveInt = 3,
        base_channels: PositiveInt = 64,
        depth: PositiveInt = 4,
    ) -> None:
        super().__init__(num_classes, in_channels, base_channels, depth)
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.gates = nn.ModuleList(
            AttentionGate(widths[i], widths[i + 1], max(1, widths[i] // 2)) for i in reversed(range(depth))
        )

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for encoder in self.encoders:
            skips.append(encoder(self.pool(skips[-1])))
        y = skips.pop()
        for gate, upsample, decoder in zip(self.gates, self.upsamplers, self.decoders):
            skip = skips.pop()
            y = decoder(torch.cat([gate(skip, y), match_size(upsample(y), skip)], dim=1))
        return self.head(y)
