"""Paired image/mask transforms on torchvision.transforms.v2 (``tv_tensors.Image`` / ``tv_tensors.Mask``).

Wrapping the label map as a ``tv_tensors.Mask`` makes every v2 transform apply the same random
parameters to image and mask, so they stay aligned. Masks are resized by nearest neighbour (never
blending two labels into a third) in its pixel-centre form (``NEAREST_EXACT``): torchvision's legacy
``NEAREST``, the v2 default for masks, samples ``floor(i * scale)`` and shifts a downscaled mask by up
to half a source pixel times the factor against the bilinear image. Padding fills the image with 0 and the mask with ``ignore_index``, so padded pixels
take no part in loss or metrics. Randomness comes from torch's generator, which Lightning seeds per
worker: the same seed gives the same augmentations.

Output images are float32 in [0, 1] (not normalised by a mean/std: the networks start with
BatchNorm, and the paper's models are trained from scratch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from pat_seg.exceptions import ConfigurationError


def check_size(size: tuple[int, int] | list[int], name: str = "size") -> tuple[int, int]:
    """``(height, width)`` of positive ints, or ``ValueError`` naming the bad value."""
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ConfigurationError(f"{name} must be (height, width) with two positive integers; got {size!r}")
    return int(size[0]), int(size[1])


def resize_pair(inpt: Any, size: list[int]) -> Any:
    """Resize an image (bilinear, antialiased) or a ``tv_tensors.Mask`` (pixel-centre nearest) to ``size``."""
    if isinstance(inpt, tv_tensors.Mask):
        plain = inpt.as_subclass(Tensor).unsqueeze(0)
        return tv_tensors.wrap(F.resize(plain, size, interpolation=InterpolationMode.NEAREST_EXACT)[0], like=inpt)
    return F.resize(inpt, size, antialias=True)


class RandomScaledResize(v2.Transform):
    """Resize to ``scale * size`` with ``scale`` drawn uniformly from ``scale_range``.

    The target is a multiple of the protocol ``size`` (not of the source image), so every image
    reaches the protocol's aspect ratio, as evaluation's plain resize (``scale_range=(1, 1)``) does.
    """

    def __init__(self, size: tuple[int, int], scale_range: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.size = size
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        low, high = self.scale_range
        scale = low if low == high else low + (high - low) * float(torch.rand(()))
        return {"size": [max(1, round(scale * self.size[0])), max(1, round(scale * self.size[1]))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return resize_pair(inpt, params["size"])


class SegmentationTransform:
    """Callable ``(image, label) -> (image float [3, H, W] in [0, 1], target long [H, W])``.

    ``image`` is ``uint8`` or float in [0, 1], either a numpy ``[H, W, 3]`` array or a tensor
    ``[3, H, W]`` (what :func:`pat_seg.data.io.read_rgb` returns); ``label`` is ``[H, W]`` (numpy or
    tensor) of class indices already mapped to the data set's classes (``ignore_index`` for
    unlabelled pixels). A ``uint8`` label stays ``uint8`` through resize, crop and flip when
    ``ignore_index`` fits in it, and becomes ``long`` only at the output size: a 2048x1024 ``int64``
    map is 16 MiB per copy.

    Args:
        size: ``(height, width)`` of every output.
        train: ``True`` applies random scale (``scale_range`` times ``size``), a random ``size`` crop
            (padded with 0 / ``ignore_index`` where the scaled image is smaller) and a horizontal flip
            with probability 0.5; ``False`` only resizes to ``size``.
        ignore_index: fill value of padded mask pixels.
    """

    def __init__(
        self, size: tuple[int, int], train: bool, ignore_index: int = 255, scale_range: tuple[float, float] = (0.5, 2.0)
    ) -> None:
        self.size = check_size(size)
        low, high = scale_range
        if not 0 < low <= high:
            raise ConfigurationError(f"scale_range must satisfy 0 < low <= high; got {tuple(scale_range)}")
        self.train = train
        self.ignore_index = ignore_index
        self.scale_range = (float(low), float(high))
        if train:
            fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
            self.pipeline = v2.Compose(
                [
                    RandomScaledResize(self.size, (float(low), float(high))),
                    v2.RandomCrop(self.size, pad_if_needed=True, fill=fill),
                    v2.RandomHorizontalFlip(p=0.5),
                ]
            )
        else:
            self.pipeline = RandomScaledResize(self.size)

    def resized(self, image: np.ndarray | Tensor, label: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
        """The geometric part alone: ``(image [3, H, W], label [H, W])`` after resize (and, with
        ``train``, the random scale, crop and flip), the image in its own dtype (uint8, or float32 for
        float input) and the label uint8 when it came uint8 and ``ignore_index`` fits, else long.

        ``pat-seg prepare`` stores this once (:mod:`pat_seg.data.prepared`); :meth:`__call__` is
        :meth:`output` of it, so a prepared sample and a sample read from the sources are the same bits.
        """
        if isinstance(image, Tensor):
            pixels = image
        else:  # [H, W, 3] -> a [3, H, W] view, no copy
            pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if pixels.is_floating_point():
            pixels = pixels.float()
        image_tv, mask_tv = tv_tensors.Image(pixels), tv_tensors.Mask(self.as_mask(label))
        if self.train or tuple(image_tv.shape[-2:]) != self.size:
            image_tv, mask_tv = self.pipeline(image_tv, mask_tv)
        return image_tv.as_subclass(Tensor), mask_tv.as_subclass(Tensor)

    def as_mask(self, label: np.ndarray | Tensor) -> Tensor:
        """``label`` as a tensor: uint8 kept when ``ignore_index`` fits in it, else long (padding must hold it)."""
        mask = label if isinstance(label, Tensor) else torch.from_numpy(np.ascontiguousarray(label))
        if mask.dtype != torch.uint8 or not 0 <= self.ignore_index <= 255:
            mask = mask.long()
        return mask

    def resized_label(self, label: np.ndarray | Tensor, size: tuple[int, int]) -> Tensor:
        """``label`` alone resized to ``size`` as evaluation resizes a mask (:func:`resize_pair`)."""
        mask = tv_tensors.Mask(self.as_mask(label))
        if tuple(mask.shape[-2:]) != tuple(size):
            mask = resize_pair(mask, list(size))
        return mask.as_subclass(Tensor)

    @staticmethod
    def output(image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        """``(image float32 [3, H, W] in [0, 1], target long [H, W])`` of a :meth:`resized` pair."""
        return F.to_dtype(image, torch.float32, scale=True).clamp_(0, 1), label.long()

    def __call__(self, image: np.ndarray | Tensor, label: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
        return self.output(*self.resized(image, label))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, train={self.train}, ignore_index={self.ignore_index})"
