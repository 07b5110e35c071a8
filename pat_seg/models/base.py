"""The contract every pat-seg network keeps, as a base class the CLI can name."""

from __future__ import annotations

from torch import nn


class SegmentationNetwork(nn.Module):
    """Maps images ``[B, in_channels, H, W]`` to logits ``[B, num_classes, H, W]`` at the input size.

    It adds no behaviour: it marks pat-seg's own networks, so that ``--model.model DeepLabV3`` names
    ours and not another library's class of the same name, and the CLI's help lists them. A network
    of your own needs only to be an ``nn.Module`` with this input/output contract.
    """

    #: The smallest height and width ``forward`` accepts. Each max-pool stage halves the sides
    #: (flooring), so a network with ``k`` stages needs at least ``2**k`` pixels a side; 1 where
    #: nothing limits it. :class:`pat_seg.module.SegmentationModule` checks the data against it.
    min_input_size: int = 1


def min_input_size(network: nn.Module) -> int:
    """``network.min_input_size``; 1 for a network of your own that does not declare one."""
    return int(getattr(network, "min_input_size", 1))
