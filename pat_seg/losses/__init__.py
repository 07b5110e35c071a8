"""Pixel losses for long-tailed segmentation: PAT (paper Eq. 4-5) and the baselines it is compared with.

A loss of your own builds on :mod:`pat_seg.losses.pixel` (exported here) and the optional hooks of
:mod:`pat_seg.losses.hooks` (docs/extending.md).
"""

from pat_seg.losses.balanced_softmax import BalancedSoftmaxLoss
from pat_seg.losses.base import PixelLoss
from pat_seg.losses.blv import BLVLoss
from pat_seg.losses.class_balanced import ClassBalancedFocalLoss, ClassBalancedLoss
from pat_seg.losses.class_counts import ClassCountLoss
from pat_seg.losses.cross_entropy import CrossEntropyLoss
from pat_seg.losses.focal import FocalLoss
from pat_seg.losses.ldam import LDAMLoss
from pat_seg.losses.mixture import PATCBMixtureLoss
from pat_seg.losses.pat import PATLoss
from pat_seg.losses.pixel import reduce_pixel_terms, target_log_prob, valid_mask_and_index

# The eight losses of the paper's Table 3, in its row order.
PAPER_LOSSES = (
    CrossEntropyLoss,
    FocalLoss,
    ClassBalancedLoss,
    ClassBalancedFocalLoss,
    BalancedSoftmaxLoss,
    LDAMLoss,
    BLVLoss,
    PATLoss,
)

# Losses built beyond the paper (docs/losses.md), each with a config piece in configs/loss/.
BEYOND_PAPER_LOSSES = (PATCBMixtureLoss,)

__all__ = [
    "BEYOND_PAPER_LOSSES",
    "PAPER_LOSSES",
    "BLVLoss",
    "BalancedSoftmaxLoss",
    "ClassBalancedFocalLoss",
    "ClassBalancedLoss",
    "ClassCountLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "PATCBMixtureLoss",
    "PATLoss",
    "PixelLoss",
    # The building blocks of a loss of your own (docs/extending.md).
    "reduce_pixel_terms",
    "target_log_prob",
    "valid_mask_and_index",
]
