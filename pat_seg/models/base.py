"""The contract every pat-seg network keeps, as a base class the CLI can name."""

from __future__ import annotations

from torch import nn


class SegmentationNetwork(nn.Module):
    """Maps images ``[B, in_channels, H, W]`` to logits ``[B, num_classes, H, W]`` at the input size.

    It adds no behaviour: it marks pat-seg's own networks, so that ``--model.model DeepLabV3`` names
    ours and not another library's class of the same name, and the CLI's help lists them. A network
    of your own needs only to be an ``nn.Module`` with this input/output contract.
    """
