"""An embedded long-tailed street-scene data set that needs no download.

Each sample is generated on the fly from ``(seed, split, index)`` alone -- same inputs, same image,
on any machine and in any worker -- and nothing is written to disk. The scene mimics the long tail of
driving data sets such as Cityscapes: four "stuff" classes (sky, road, building, vegetation) cover
most pixels, and "thing" classes get rarer and smaller down to a few-pixel traffic light, so pixel
frequencies span more than three orders of magnitude. Classes are paired by colour (sign with sky,
car and pole with road, person with building, light with vegetation) with per-instance colour jitter
and a per-image brightness, so colour alone cannot separate them: texture and shape must.
An unlabelled "clutter" patch in some images carries ``ignore_index``, as real data sets do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pat_seg.data.base import Sample, SegmentationDataModule

CLASS_NAMES = ["sky", "road", "building", "vegetation", "car", "person", "pole", "sign", "light"]
SKY, ROAD, BUILDING, VEGETATION, CAR, PERSON, POLE, SIGN, LIGHT = range(len(CLASS_NAMES))

# Mean RGB colour of each class; pairs share a colour on purpose (see module docstring).
CLASS_COLOURS = torch.tensor(
    [
        [0.55, 0.70, 0.90],  # sky
        [0.42, 0.42, 0.44],  # road
        [0.62, 0.50, 0.40],  # building
        [0.30, 0.55, 0.30],  # vegetation
        [0.44, 0.42, 0.42],  # car       ~ road
        [0.60, 0.50, 0.44],  # person    ~ building
        [0.40, 0.42, 0.46],  # pole      ~ road
        [0.55, 0.68, 0.90],  # sign      ~ sky
        [0.32, 0.56, 0.30],  # light     ~ vegetation
    ]
)
# Texture of each class: (spatial frequency in cycles/pixel, orientation in radians, amplitude).
CLASS_TEXTURES = torch.tensor(
    [
        [0.00, 0.0, 0.00],  # sky: smooth
        [0.25, 0.0, 0.06],  # road: fine horizontal stripes
        [0.12, math.pi / 2, 0.12],  # building: vertical window columns
        [0.33, math.pi / 4, 0.10],  # vegetation: diagonal grain
        [0.20, math.pi / 2, 0.14],  # car: vertical bars
        [0.30, 0.0, 0.12],  # person: horizontal stripes
        [0.45, 0.0, 0.14],  # pole: very fine horizontal bands
        [0.40, -math.pi / 4, 0.16],  # sign: anti-diagonal grain
        [0.50, math.pi / 2, 0.18],  # light: finest vertical bars
    ]
)
SPLIT_OFFSETS = {"train": 0, "val": 10_000_000, "test": 20_000_000}


class SyntheticLongTailDataset(Dataset):
    """``num_samples`` generated scenes of one split; sample ``i`` depends only on (seed, split, i)."""

    def __init__(self, num_samples: int, image_size: int = 64, seed: int = 0, split: str = "train",
                 ignore_index: int = 255, clutter_probability: float = 0.3) -> None:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {list(SPLIT_OFFSETS)}; got {split!r}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16; got {image_size}")
        self.num_samples = num_samples
        self.size = image_size
        self.seed = seed
        self.split = split
        self.ignore_index = ignore_index
        self.clutter_probability = clutter_probability
        coords = torch.arange(image_size, dtype=torch.float32)
        self.yy, self.xx = torch.meshgrid(coords, coords, indexing="ij")

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + SPLIT_OFFSETS[self.split] + index)
        image, target = self._scene(g)
        return {"image": image, "target": target, "index": index}

    # -- scene generation -------------------------------------------------------------------------
    def _uniform(self, g: torch.Generator, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=g))

    def _scene(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        s, yy, xx = self.size, self.yy, self.xx
        label = torch.full((s, s), ROAD, dtype=torch.long)
        instance = torch.zeros((s, s), dtype=torch.long)  # colour jitter and texture phase per region
        regions = 0

        def paint(mask: Tensor, cls: int) -> None:
            nonlocal regions
            regions += 1
            label[mask] = cls
            instance[mask] = regions

        # Stuff: sky above a wavy horizon, a band of building/vegetation blocks, road below.
        horizon = s * self._uniform(g, 0.22, 0.42)
        wave = 1.5 * torch.sin(xx / s * 2 * math.pi * self._uniform(g, 0.5, 2.0) + self._uniform(g, 0, 6.3))
        ground = s * self._uniform(g, 0.62, 0.78)
        paint(yy < horizon + wave, SKY)
        x0 = 0.0
        while x0 < s:
            width = s * self._uniform(g, 0.15, 0.45)
            top = horizon - s * self._uniform(g, 0.0, 0.15)
            block = (xx >= x0) & (xx < x0 + width) & (yy >= top) & (yy < ground)
            paint(block, BUILDING if torch.rand((), generator=g) < 0.6 else VEGETATION)
            x0 += width
        paint(yy >= ground, ROAD)
        instance[label == ROAD] = 0

        # Things, from large and common to tiny and rare.
        for _ in range(int(torch.randint(0, 3, (), generator=g))):
            w, h = s * self._uniform(g, 0.14, 0.26), s * self._uniform(g, 0.08, 0.14)
            cx, cy = self._uniform(g, 0, s), ground + self._uniform(g, -0.05, 0.15) * s
            paint(((xx - cx).abs() < w / 2) & ((yy - cy).abs() < h / 2), CAR)
        for _ in range(int(torch.randint(0, 3, (), generator=g))):
            rx, ry = s * self._uniform(g, 0.025, 0.04), s * self._uniform(g, 0.07, 0.11)
            cx, cy = self._uniform(g, 0, s), ground + self._uniform(g, -0.1, 0.05) * s
            paint(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1, PERSON)
        for _ in range(int(torch.randint(0, 2, (), generator=g))):
            cx, top = self._uniform(g, 0, s), horizon + self._uniform(g, -0.05, 0.15) * s
            paint(((xx - cx).abs() < 0.9) & (yy >= top) & (yy < ground), POLE)
        if torch.rand((), generator=g) < 0.35:
            half = s * self._uniform(g, 0.025, 0.04)
            cx, cy = self._uniform(g, 0.1, 0.9) * s, self._uniform(g, 0.1, 0.6) * s
            paint(((xx - cx).abs() < half) & ((yy - cy).abs() < half), SIGN)
        if torch.rand((), generator=g) < 0.12:
            cx, cy = self._uniform(g, 0.1, 0.9) * s, self._uniform(g, 0.2, 0.6) * s
            paint(((xx - cx).abs() < 1.0) & ((yy - cy).abs() < 1.5), LIGHT)

        image = self._render(label, instance, regions, g)

        # Unlabelled clutter: random colour and texture, label ignore_index.
        if torch.rand((), generator=g) < self.clutter_probability:
            w, h = s * self._uniform(g, 0.08, 0.2), s * self._uniform(g, 0.08, 0.2)
            cx, cy = self._uniform(g, 0, s), self._uniform(g, 0, s)
            clutter = ((xx - cx).abs() < w / 2) & ((yy - cy).abs() < h / 2)
            noise = torch.rand((3, s, s), generator=g)
            image = torch.where(clutter, noise, image)
            label[clutter] = self.ignore_index
        return image, label

    def _render(self, label: Tensor, instance: Tensor, regions: int, g: torch.Generator) -> Tensor:
        s = self.size
        jitter = 0.07 * torch.randn((regions + 1, 3), generator=g)
        phase = 2 * math.pi * torch.rand(regions + 1, generator=g)
        colour = CLASS_COLOURS[label] + jitter[instance]  # [H, W, 3]
        freq, angle, amplitude = CLASS_TEXTURES[label].unbind(-1)
        along = self.xx * torch.cos(angle) + self.yy * torch.sin(angle)
        texture = amplitude * torch.sin(2 * math.pi * freq * along + phase[instance])
        brightness = self._uniform(g, 0.75, 1.2)
        image = brightness * (colour + texture.unsqueeze(-1)) + 0.04 * torch.randn((s, s, 3), generator=g)
        return image.clamp(0, 1).permute(2, 0, 1).contiguous()


class SyntheticLongTailDataModule(SegmentationDataModule):
    """The embedded default data set: long-tailed synthetic street scenes (see module docstring).

    Args:
        num_train / num_val / num_test: samples per split.
        image_size: side of the square images.
        seed: selects the scenes; the same seed gives the same data everywhere.
    """

    class_names = list(CLASS_NAMES)
    num_classes = len(CLASS_NAMES)

    def __init__(
        self,
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 128,
        image_size: int = 64,
        ignore_index: int = 255,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        eval_batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, eval_batch_size, seed)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if 0 <= ignore_index < self.num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class index in [0, {self.num_classes - 1}]")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.image_size = image_size
        self.ignore_index = ignore_index

    def build_dataset(self, split: str) -> SyntheticLongTailDataset:
        return SyntheticLongTailDataset(self.sizes[split], self.image_size, self.seed, split, self.ignore_index)
