"""U-Net++ (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image Segmentation", 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pat_seg.arguments import PositiveInt
from pat_seg.models._blocks import DoubleConv, check_model_args, match_size
from pat_seg.models.base import SegmentationNetwork


class UNetPlusPlus(SegmentationNetwork):
    """U-Net++: the encoder of U-Net joined to the decoder by nested, densely connected skips.

    Node ``X[i][j]`` (level ``i``, ``j``-th node along the skip pathway) is, for ``j >= 1`` (paper
    Eq. 1), ``H([X[i][0], ..., X[i][j-1], Up(X[i+1][j-1])])`` with ``H`` two 3x3 conv-BN-ReLU
    layers and ``Up`` a 2x2 transposed convolution; ``X[i][0]`` is the encoder. ``X[0][depth]`` is
    the full-depth output.

    Deep supervision (paper Sec. 2, "accurate mode"): with ``deep_supervision=True`` a 1x1 head
    classifies each of ``X[0][1], ..., X[0][depth]`` and the model returns the *average of those
    heads' logits* in training and evaluation alike. The paper trains with the sum of the heads'
    losses; :class:`~pat_seg.module.SegmentationModule` takes one logits tensor, so here the loss
    is applied to the averaged logits, which still sends gradient into every head and every node.
    With ``deep_supervision=False`` only ``X[0][depth]`` is classified.

    Any ``H, W`` works: up-sampled maps are padded to the size of the node they join.

    Args:
        num_classes: number of output channels (logits).
        in_channels: image channels.
        base_channels: width of level 0, doubling per level; 32 with ``depth=4`` is the paper's
            network (filters 32, 64, 128, 256, 512).
        depth: number of down-sampling levels.
        deep_supervision: classify every top node and average (see above).
    """

    label = "UNet++"  # its name in the report's tables

    def __init__(
        self,
        num_classes: PositiveInt,
        in_channels: PositiveInt = 3,
        base_channels: PositiveInt = 32,
        depth: PositiveInt = 4,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, base_channels=base_channels, depth=depth)
        self.min_input_size = 2**depth  # each of the depth down-sampling levels halves the sides
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.deep_supervision = deep_supervision
        self.pool = nn.MaxPool2d(2)
        self.encoders = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(depth + 1)
        )
        # Nested nodes X[i][j], j >= 1, stored under "i_j"; each owns the up-sampler of its input
        # from below, X[i+1][j-1].
        self.upsamplers = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for i, j in self._node_order():
            self.upsamplers[f"{i}_{j}"] = nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2)
            self.nodes[f"{i}_{j}"] = DoubleConv((j + 1) * widths[i], widths[i])
        head_count = depth if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], num_classes, kernel_size=1) for _ in range(head_count))

    def _node_order(self) -> list[tuple[int, int]]:
        """Nodes ``(i, j)`` with ``j >= 1`` in an order where each one's inputs already exist."""
        return [(i, j) for j in range(1, self.depth + 1) for i in range(self.depth + 1 - j)]

    def forward(self, x: Tensor) -> Tensor:
        grid: list[list[Tensor]] = []
        for i, encoder in enumerate(self.encoders):
            grid.append([encoder(x if i == 0 else self.pool(grid[i - 1][0]))])
        for i, j in self._node_order():
            below = self.upsamplers[f"{i}_{j}"](grid[i + 1][j - 1])
            grid[i].append(self.nodes[f"{i}_{j}"](torch.cat([*grid[i], match_size(below, grid[i][0])], dim=1)))
        top = grid[0][1:] if self.deep_supervision else grid[0][-1:]
        return torch.stack([head(node) for head, node in zip(self.heads, top)]).mean(0)
