"""Random scale, crop and flip of a whole batch on its device: the augmented protocols' training split.

An augmented training split is stored -- by ``pat-seg prepare``, or by the loader worker reading the
source files -- at the largest size its random scale reaches (``scale_range[1] * size``,
:meth:`pat_seg.data.disk.DiskDataModule.stored_size`). A loader worker then only delivers the stored
uint8 arrays and draws the random parameters (:func:`draw_parameters`, from torch's generator, which
the loader seeds per worker: the same seed gives the same augmentations, and a resumed run the same
ones as an uninterrupted run); the resizing, the expensive part on a CPU, runs on the GPU in
:func:`augment_batch`, called from the data module's ``on_after_batch_transfer`` (:mod:`pat_seg.data.base`).

The augmentation is the one :class:`~pat_seg.data.transforms.SegmentationTransform` applies on the
CPU -- resize to ``scale * size`` with ``scale`` uniform in ``scale_range`` (bilinear, antialiased;
labels by pixel-centre nearest neighbour), a random ``size`` window (the image padded with 0 and the
labels with ``ignore_index`` where it is smaller), a horizontal flip with probability 0.5 -- drawn
from the same distributions, not bit for bit: here the image is resized in float32 rather than
rounded to uint8 first.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from pat_seg.data.transforms import resize_pair
from pat_seg.exceptions import ConfigurationError

PARAMETERS = 4  # scale, vertical and horizontal window position in [0, 1), flip (0 or 1)


def draw_parameters(scale_range: tuple[float, float]) -> Tensor:
    """``float64 [4]``: ``(scale, top, left, flip)`` of one sample, from torch's default generator."""
    low, high = scale_range
    scale = low + (high - low) * float(torch.rand(()))
    top, left = torch.rand(2, dtype=torch.float64).tolist()
    flip = float(torch.rand(()) < 0.5)
    return torch.tensor([scale, top, left, flip], dtype=torch.float64)


def _window(start_fraction: float, scaled: int, wanted: int) -> tuple[int, int, int]:
    """``(source start, output start, length)`` along one axis of the ``wanted`` window at ``start_fraction``:
    cut from a ``scaled`` extent that is at least as large, or holding a smaller one whole, on padding."""
    if scaled >= wanted:
        return int(start_fraction * (scaled - wanted + 1)), 0, wanted
    return 0, int(start_fraction * (wanted - scaled + 1)), scaled


def augment_batch(
    images: Tensor, targets: Tensor, parameters: Tensor, size: tuple[int, int], ignore_index: int
) -> tuple[Tensor, Tensor]:
    """``(float32 [B, 3, h, w] in [0, 1], long [B, h, w])`` of stored ``images [B, 3, H, W]`` (uint8, or
    float in [0, 1]) and ``targets [B, H, W]`` under per-sample ``parameters [B, 4]``; ``size = (h, w)``.

    Sample ``b`` is resized to ``round(scale * size)``, padded to at least ``size`` (0 / ``ignore_index``),
    cut to the ``size`` window at the drawn position and flipped when drawn.
    """
    if images.shape[0] != parameters.shape[0] or parameters.shape[-1] != PARAMETERS:
        raise ConfigurationError(
            f"augmentation parameters of shape {list(parameters.shape)} do not fit a batch of "
            f"{images.shape[0]}; expected [{images.shape[0]}, {PARAMETERS}]"
        )
    height, width = size
    pixels = F.to_dtype(images, torch.float32, scale=True)  # uint8 / 255; a float image only cast
    out_images = pixels.new_zeros((images.shape[0], images.shape[1], height, width))
    out_targets = torch.full((targets.shape[0], height, width), ignore_index, dtype=torch.long, device=targets.device)
    for b, (scale, top_fraction, left_fraction, flip) in enumerate(parameters.tolist()):
        scaled = [max(1, round(scale * height)), max(1, round(scale * width))]
        image = resize_pair(pixels[b], scaled).clamp_(0, 1)
        target = resize_pair(tv_tensors.Mask(targets[b]), scaled).as_subclass(Tensor).long()
        src_top, dst_top, rows = _window(top_fraction, scaled[0], height)
        src_left, dst_left, cols = _window(left_fraction, scaled[1], width)
        out_images[b, :, dst_top : dst_top + rows, dst_left : dst_left + cols] = image[
            :, src_top : src_top + rows, src_left : src_left + cols
        ]
        out_targets[b, dst_top : dst_top + rows, dst_left : dst_left + cols] = target[
            src_top : src_top + rows, src_left : src_left + cols
        ]
        if flip:
            out_images[b] = out_images[b].flip(-1)
            out_targets[b] = out_targets[b].flip(-1)
    return out_images, out_targets
