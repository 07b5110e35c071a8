"""An embedded long-tailed street-scene data set that needs no download.

Each sample is generated on the fly from ``(seed, split, index)`` alone -- same inputs, same image,
on any machine and in any worker -- and nothing is written to disk. The scene mimics the long tail of
driving data sets such as Cityscapes: four "stuff" classes (sky, road, building, vegetation) cover
most pixels, and "thing" classes get rarer and smaller down to a few-pixel traffic light, so pixel
frequencies span more than three orders of magnitude. Classes are paired by colour (sign with sky,
car and pole with road, person with building, light with vegetation) with per-instance colour jitter
and a per-image brightness, so colour alone cannot separate them: texture and shape must.
An unlabelled "clutter" patch in some images carries ``ignore_index``, as real data sets do.

**Imbalance regimes** (``imbalance=R``, ``rarity=...``; the default ``imbalance=None`` is the scene
above, unchanged). The same stuff background and the same appearance of every class, but the five
thing classes are placed by a plan whose training pixel shares form a geometric tail: thing ``k``
(car, person, pole, sign, light for ``k = 1..5``) gets ``R^(-k/5)`` times the pixel share of the
most frequent class (road), so the measured span ``max share / min share`` is ``R``. Where the rarity
comes from is the second argument:

- ``rarity="small"``: every thing class is present in half of the images (``SMALL_PRESENCE``); its
  object size carries the rarity (the light of ``R = 1000`` covers about 2 pixels of a 64x64 image).
- ``rarity="infrequent"``: every object covers ``INFREQUENT_COVERAGE`` of the image (8x8 pixels at
  64x64, an ordinary thing); how many images contain the class carries the rarity (a class that
  would need more than every image is present in all of them and grows instead).
- ``rarity="mixed"``: each thing class takes one of the two sources (``MIXED_RARITY``): the rarest
  (light) and the pole are ordinary objects in few images, the sign and person small objects in many.

Things are placed uniformly (objects may be cut by the image border), so every pixel of the image is
covered by a given object with the same probability and the expected shares follow in closed form
(:func:`regime_plan`); which images contain a class is stratified (one image per block of ``1/q``
consecutive indices, chosen at random), so a split of ``N`` images holds ``N q`` of them up to one,
not a binomial draw. Each sample still depends only on ``(seed, split, index)`` and the regime.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset

from pat_seg.arguments import PositiveInt, check_choice, check_number
from pat_seg.data.base import Sample, SegmentationDataModule, Split
from pat_seg.exceptions import ConfigurationError

Painter = Callable[[Tensor, int], None]  # paints a mask with a class (and a new instance id)

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

# --- imbalance regimes (module docstring) ------------------------------------------------------------
# Where a thing class's rarity comes from: small objects, few images, or some classes each way.
Rarity = Literal["small", "infrequent", "mixed"]
MIN_IMAGE_SIZE = 16  # the smallest scene the painter lays out
THINGS = (CAR, PERSON, POLE, SIGN, LIGHT)  # from the most to the least frequent; painted in this order
# Height / width of each thing's bounding box (the person is an ellipse, the others rectangles), as in
# the default scene: wide cars, tall people, thin poles, square signs, upright lights.
THING_HEIGHT_TO_WIDTH = {CAR: 0.5, PERSON: 2.5, POLE: 6.0, SIGN: 1.0, LIGHT: 1.5}
SMALL_PRESENCE = 0.5  # rarity="small": share of the images that contain each thing class
INFREQUENT_COVERAGE = 1 / 64  # rarity="infrequent": share of the image one object covers (8x8 at 64x64)
# Below these a regime is refused: a rare object of fewer pixels shows no texture to learn it by, and a
# class in fewer training images is an anecdote, not a regime a loss can be judged on.
# rarity="mixed": the source of each thing class's rarity, alternating from the rarest: the light and
# the pole are ordinary objects in few images, the sign and the person small objects in many images
# (the car, common either way, is small). Cityscapes mixes both kinds the same way: poles, signs and
# lights are small but common; buses, trains and trucks large but in few images.
MIXED_RARITY = {CAR: "small", PERSON: "small", POLE: "infrequent", SIGN: "small", LIGHT: "infrequent"}
MIN_OBJECT_PIXELS = 2.0
MIN_RAREST_TRAIN_IMAGES = 4


def road_share(image_size: int) -> float:
    """Expected pixel share of road (the most frequent class) in the stuff background, before things.

    Road is every row at or below ``ground = s * U(0.62, 0.78)``: ``s - ceil(ground)`` rows, whose mean
    is ``0.30 s - 0.5`` (``ceil`` adds half a row on average).
    """
    return 0.30 - 0.5 / image_size


@dataclass(frozen=True)
class ThingPlan:
    """How one thing class is drawn in a regime.

    ``presence``: share of the images that contain it; ``coverage``: probability that its object
    covers a given pixel of an image that contains it (the object's expected visible area divided by
    the image area; the same for every pixel because objects are placed uniformly).
    """

    cls: int
    presence: float
    coverage: float

    def object_pixels(self, image_size: int) -> float:
        """Expected visible pixels of one object."""
        return self.coverage * image_size**2


def regime_plan(imbalance: float, rarity: Rarity, image_size: int) -> list[ThingPlan]:
    r"""Presence and object size of each thing class such that the expected span is ``imbalance``.

    With ``a_k = presence_k * coverage_k`` the expected share of the image painted by thing ``k``
    (things painted in the order of :data:`THINGS`, later ones over earlier ones, all independently
    and uniformly placed), road keeps ``b \prod_j (1 - a_j)`` and thing ``k`` keeps
    ``a_k \prod_{j > k} (1 - a_j)``. Asking thing ``k`` for ``R^{-k/5}`` times road's share gives
    ``a_k / (1 - a_k) = b R^{-k/5} \prod_{j < k} (1 - a_j)``, solved in order ``k = 1..5``; ``b`` is
    :func:`road_share`. The rarest class, the light, is painted last (nothing but clutter covers it),
    so the span ``max share / min share`` is road over light, ``R``.
    """
    check_choice("rarity", rarity, Rarity)
    base = road_share(image_size)
    plan, kept = [], 1.0
    for k, cls in enumerate(THINGS, start=1):
        ratio = base * kept * imbalance ** (-k / len(THINGS))
        painted = ratio / (1.0 + ratio)  # a_k
        kept *= 1.0 - painted
        source = MIXED_RARITY[cls] if rarity == "mixed" else rarity
        if source == "small":
            presence, coverage = SMALL_PRESENCE, painted / SMALL_PRESENCE
        else:
            presence = min(1.0, painted / INFREQUENT_COVERAGE)
            coverage = painted / presence
        plan.append(ThingPlan(cls, presence, coverage))
    return plan


def check_regime(imbalance: float | None, rarity: Rarity) -> None:
    """Refuse a regime argument that is not one: errors name the value."""
    check_choice("rarity", rarity, Rarity)
    if imbalance is None:
        if rarity != "small":
            raise ConfigurationError(
                f"rarity={rarity!r} needs an imbalance (the default scene, imbalance=None, has its own tail)"
            )
        return
    check_number("imbalance", imbalance, above=1, note="max class share / min class share, or None")


def _box_width(coverage: float, aspect: float, area_factor: float, image_size: int) -> float:
    r"""Width ``W`` of a shape of height ``aspect * W`` and area ``area_factor * W * H`` that covers a
    given pixel with probability ``coverage`` when its centre is uniform over
    ``[-W/2, s' + W/2] x [-H/2, s' + H/2]``, ``s' = s - 1``.

    That centre range contains every placement that touches the image, so each pixel is covered with
    probability ``area / ((s' + W)(s' + H))``; setting this to ``coverage`` gives the quadratic
    ``aspect (f - c) W^2 - c s' (1 + aspect) W - c s'^2 = 0`` whose positive root is returned.
    """
    c, f, span = coverage, area_factor, image_size - 1
    a, b = aspect * (f - c), c * span * (1 + aspect)
    return (b + math.sqrt(b * b + 4 * a * c * span * span)) / (2 * a)


class SyntheticLongTailDataset(Dataset):
    """``num_samples`` generated scenes of one split; sample ``i`` depends only on (seed, split, i)."""

    def __init__(
        self,
        num_samples: int,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        ignore_index: int = 255,
        clutter_probability: float = 0.3,
        imbalance: float | None = None,
        rarity: Rarity = "small",
    ) -> None:
        check_choice("split", split, Split)
        check_number("image_size", image_size, at_least=MIN_IMAGE_SIZE, integer=True)
        check_regime(imbalance, rarity)
        self.num_samples = num_samples
        self.size = image_size
        self.seed = seed
        self.split = split
        self.ignore_index = ignore_index
        self.clutter_probability = clutter_probability
        self.imbalance = imbalance
        self.rarity = rarity
        self.plan = None if imbalance is None else regime_plan(imbalance, rarity, image_size)
        # Offset of each class's presence blocks, fixed per (seed, split, class); see _present.
        self._block_offsets = {
            cls: random.Random(f"pat-seg synthetic blocks {seed} {split} {cls}").random() for cls in THINGS
        }
        coords = torch.arange(image_size, dtype=torch.float32)
        self.yy, self.xx = torch.meshgrid(coords, coords, indexing="ij")

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + SPLIT_OFFSETS[self.split] + index)
        image, target = self._scene(g, index)
        return {"image": image, "target": target, "index": index}

    # -- scene generation -------------------------------------------------------------------------
    def _uniform(self, g: torch.Generator, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=g))

    def _present(self, cls: int, index: int, presence: float) -> bool:
        """Whether image ``index`` contains thing ``cls``: one image per block, so ``N q`` in ``N`` (up to one).

        Image ``i`` belongs to block ``floor(i q + u)`` (``u`` fixed per seed, split and class); each
        block of about ``1/q`` consecutive images holds the class in exactly one of them, chosen by a
        generator seeded with the block alone, so the answer depends on ``(seed, split, cls, index)``
        only and every worker agrees on it.
        """
        if presence >= 1.0:
            return True
        offset = self._block_offsets[cls]

        def block(i: int) -> int:
            return math.floor(i * presence + offset)

        own = block(index)
        first = index
        while first > 0 and block(first - 1) == own:
            first -= 1
        last = index
        while block(last + 1) == own:
            last += 1
        chosen = random.Random(f"pat-seg synthetic presence {self.seed} {self.split} {cls} {own}").randint(first, last)
        return chosen == index

    def _regime_things(self, g: torch.Generator, index: int, paint: Painter) -> None:
        """Things of an imbalance regime (:func:`regime_plan`), placed uniformly, rarest painted last."""
        s, yy, xx = self.size, self.yy, self.xx
        assert self.plan is not None
        for thing in self.plan:
            if not self._present(thing.cls, index, thing.presence):
                continue
            # A little variety of shape (the aspect), none of expected area (the coverage is exact).
            aspect = THING_HEIGHT_TO_WIDTH[thing.cls] * math.exp(self._uniform(g, -0.2, 0.2))
            ellipse = thing.cls == PERSON
            width = _box_width(thing.coverage, aspect, math.pi / 4 if ellipse else 1.0, s)
            height = aspect * width
            cx = self._uniform(g, -width / 2, s - 1 + width / 2)
            cy = self._uniform(g, -height / 2, s - 1 + height / 2)
            if ellipse:
                mask = ((xx - cx) / (width / 2)) ** 2 + ((yy - cy) / (height / 2)) ** 2 <= 1
            else:
                mask = ((xx - cx).abs() < width / 2) & ((yy - cy).abs() < height / 2)
            paint(mask, thing.cls)

    def _scene(self, g: torch.Generator, index: int) -> tuple[Tensor, Tensor]:
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

        if self.plan is not None:
            self._regime_things(g, index, paint)
        else:
            self._default_things(g, paint, horizon, ground)
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

    def _default_things(self, g: torch.Generator, paint: Painter, horizon: float, ground: float) -> None:
        """The default scene's things (``imbalance=None``): the draws and shapes of the original scene."""
        s, yy, xx = self.size, self.yy, self.xx
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
        batch_size: training batch size; 16 by default (the base's 8 is for full-size images: these are 64x64).
        imbalance: ``None`` (default): the default scene, whose tail spans about 1800x. A number
            ``R > 1``: an imbalance regime whose training pixel shares span ``R`` (most frequent class
            over rarest), thing shares spaced geometrically in between (module docstring).
        rarity: with ``imbalance``, where the rarity of the rare classes comes from: ``"small"``
            objects present in many images, ``"infrequent"``: ordinary-sized objects present in
            few images, or ``"mixed"``: some classes each way (module docstring).
        loader_settings: ``num_workers``, ``pin_memory``, ``persistent_workers``, ``eval_batch_size``
            and ``seed`` of :class:`~pat_seg.data.base.SegmentationDataModule`; here ``seed`` also
            selects the scenes: the same seed gives the same data everywhere.

    At ``setup("fit")`` the module prints (rank 0, once) its class table: each class's share of the
    training pixels and the number of training images that contain it.
    """

    label = "Synthetic"  # its name in the report's tables

    class_names = list(CLASS_NAMES)
    num_classes = len(CLASS_NAMES)

    def __init__(
        self,
        num_train: PositiveInt = 512,
        num_val: PositiveInt = 128,
        num_test: PositiveInt = 128,
        image_size: int = 64,
        ignore_index: int = 255,
        batch_size: PositiveInt = 16,
        imbalance: float | None = None,
        rarity: Rarity = "small",
        **loader_settings: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **loader_settings)
        sizes = {
            split: check_number(f"num_{split}", value, at_least=1, integer=True)
            for split, value in (("train", num_train), ("val", num_val), ("test", num_test))
        }
        image_size = check_number("image_size", image_size, at_least=MIN_IMAGE_SIZE, integer=True)
        if 0 <= ignore_index < self.num_classes:
            raise ConfigurationError(
                f"ignore_index {ignore_index} collides with a class index in [0, {self.num_classes - 1}]"
            )
        check_regime(imbalance, rarity)
        if imbalance is not None:
            check_regime_is_learnable(imbalance, rarity, image_size, num_train)
        self.sizes = sizes
        self.image_size = image_size
        self.size = (image_size, image_size)
        self.ignore_index = ignore_index
        self.imbalance = imbalance
        self.rarity = rarity
        self._table_printed = False

    def build_dataset(self, split: str) -> SyntheticLongTailDataset:
        return SyntheticLongTailDataset(
            self.sizes[split],
            self.image_size,
            self.seed,
            split,
            self.ignore_index,
            imbalance=self.imbalance,
            rarity=self.rarity,
        )

    def class_table(self) -> tuple[list[int], list[int]]:
        """``(pixels, images)`` per class over the training split (:attr:`class_statistics`, one pass)."""
        statistics = self.class_statistics
        return statistics.pixels, statistics.images

    def setup(self, stage: str) -> None:
        super().setup(stage)
        trainer = getattr(self, "trainer", None)
        if stage == "fit" and not self._table_printed and (trainer is None or trainer.is_global_zero):
            pixels, images = self.class_table()
            rank_zero_info(
                format_class_table(self.class_names, pixels, images, self.sizes["train"], self.imbalance, self.rarity)
            )
            self._table_printed = True


def check_regime_is_learnable(imbalance: float, rarity: Rarity, image_size: int, num_train: int) -> None:
    """Refuse a regime with a thing class of too few pixels per object or in too few training images."""
    for thing in reversed(regime_plan(imbalance, rarity, image_size)):  # the rarest first: it binds
        name = CLASS_NAMES[thing.cls]
        pixels = thing.object_pixels(image_size)
        if pixels < MIN_OBJECT_PIXELS:
            raise ConfigurationError(
                f"imbalance={imbalance:g} with rarity={rarity!r} at image_size={image_size} makes the {name} "
                f"{pixels:.2f} pixels per object (at least {MIN_OBJECT_PIXELS:g} needed to show its texture); "
                f"use a larger image_size or a smaller imbalance"
            )
        expected_images = thing.presence * num_train
        if expected_images < MIN_RAREST_TRAIN_IMAGES:
            raise ConfigurationError(
                f"imbalance={imbalance:g} with rarity={rarity!r} puts the {name} in {expected_images:.1f} of "
                f"num_train={num_train} training images (at least {MIN_RAREST_TRAIN_IMAGES} needed); use more "
                f"training images or a smaller imbalance"
            )


def format_class_table(
    names: list[str], pixels: list[int], images: list[int], num_images: int, imbalance: float | None, rarity: str
) -> str:
    """The class table the data module prints: share of the training pixels and images containing each class."""
    total = max(sum(pixels), 1)
    regime = "default scene" if imbalance is None else f"imbalance {imbalance:g}x, rarity {rarity!r}"
    span = max(pixels) / min(pixels) if min(pixels) > 0 else math.inf
    lines = [
        f"Synthetic training split ({regime}): {num_images} images, measured span (max share / min share) {span:.0f}x",
        f"  {'class':<11}{'pixel share':>12}{'images':>8}{'of images':>11}",
    ]
    for name, count, present in zip(names, pixels, images):
        lines.append(f"  {name:<11}{100 * count / total:>11.4f}%{present:>8}{100 * present / num_images:>10.1f}%")
    return "\n".join(lines)
