"""Pixels and images per class (pat_seg.class_statistics) against counts made here label by label."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pat_seg.class_statistics import class_statistics, count_classes, count_images_per_class

IGNORE = 255
NUM_CLASSES = 6


def label_maps(seed: int = 0) -> list[torch.Tensor]:
    """Eight 2-D maps: class 5 only in map 3, class 4 absent, about 20% ignored."""
    g = torch.Generator().manual_seed(seed)
    maps = []
    for index in range(8):
        labels = torch.randint(0, 4, (7, 9), generator=g)
        labels[torch.rand(7, 9, generator=g) < 0.2] = IGNORE
        if index == 3:
            labels[2, 2:5] = 5
        maps.append(labels)
    return maps


def counted_by_hand(maps, ignore_index=IGNORE) -> tuple[list[int], list[int]]:
    """Pixels and images per class, one label at a time in plain Python."""
    pixels, images = Counter(), Counter()
    for labels in maps:
        present = set()
        for value in np.asarray(labels).reshape(-1).tolist():
            if value != ignore_index:
                pixels[value] += 1
                present.add(value)
        images.update(present)
    return [pixels[c] for c in range(NUM_CLASSES)], [images[c] for c in range(NUM_CLASSES)]


def test_counts_of_a_list_of_label_maps() -> None:
    maps = label_maps()
    pixels, images = counted_by_hand(maps)
    statistics = class_statistics(maps, NUM_CLASSES, IGNORE)
    assert (statistics.pixels, statistics.images, statistics.num_images) == (pixels, images, 8)
    assert images[5] == 1 and pixels[5] == 3 and pixels[4] == images[4] == 0
    assert count_classes(maps, NUM_CLASSES, IGNORE) == pixels
    assert count_images_per_class(maps, NUM_CLASSES, IGNORE) == images


def test_every_kind_of_item_gives_the_same_counts() -> None:
    maps = label_maps(seed=1)
    expected = class_statistics(maps, NUM_CLASSES, IGNORE)
    arrays = [m.numpy().astype(np.uint8) for m in maps]
    pil_images = [Image.fromarray(a) for a in arrays]
    samples = [{"image": torch.zeros(3, 7, 9), "target": m} for m in maps]
    pairs = [(torch.zeros(3, 7, 9), m) for m in maps]
    for items in (arrays, pil_images, samples, pairs):
        assert class_statistics(items, NUM_CLASSES, IGNORE) == expected


class MapStyle(Dataset):
    """A dataset that would answer any index (no IndexError): iterated by its length only."""

    def __init__(self, maps: list[torch.Tensor]) -> None:
        self.maps = maps

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"target": self.maps[index % len(self.maps)]}


def test_a_dataset_and_its_batched_loader_give_the_same_counts() -> None:
    maps = label_maps(seed=2)
    expected = counted_by_hand(maps)
    dataset = MapStyle(maps)
    by_item = class_statistics(dataset, NUM_CLASSES, IGNORE)
    batches = (batch["target"] for batch in DataLoader(dataset, batch_size=3))
    by_batch = class_statistics(batches, NUM_CLASSES, IGNORE, batched=True)
    assert (by_item.pixels, by_item.images) == expected
    assert by_batch == by_item and by_batch.num_images == 8


def test_volumes_and_nothing_ignored() -> None:
    g = torch.Generator().manual_seed(3)
    volumes = [torch.randint(0, NUM_CLASSES, (3, 4, 5), generator=g) for _ in range(4)]
    statistics = class_statistics(volumes, NUM_CLASSES, ignore_index=None)
    assert (statistics.pixels, statistics.images) == counted_by_hand(volumes, ignore_index=None)
    assert sum(statistics.pixels) == 4 * 60


def test_bad_labels_are_named_with_their_label_map() -> None:
    maps = label_maps(seed=4)
    maps[6][1, 1] = 9
    with pytest.raises(
        ValueError, match=r"label 9 found in label map 6; expected class indices in \[0, 5\] or ignore_index 255"
    ):
        class_statistics(maps, NUM_CLASSES, IGNORE)
    batches = [torch.stack(maps[:4]), torch.stack(maps[4:])]
    with pytest.raises(ValueError, match="label 9 found in label map 6;"):
        class_statistics(batches, NUM_CLASSES, IGNORE, batched=True)
    with pytest.raises(ValueError, match=r"label 255 found in label map 0; expected class indices in \[0, 5\]$"):
        class_statistics(label_maps(), NUM_CLASSES, ignore_index=None)
    with pytest.raises(ValueError, match="label map 0 must hold integer class labels; got dtype torch.float32"):
        class_statistics([torch.zeros(2, 2)], NUM_CLASSES)
    with pytest.raises(ValueError, match="item 0 is a mapping without a 'target' key"):
        class_statistics([{"mask": torch.zeros(2, 2, dtype=torch.long)}], NUM_CLASSES)
