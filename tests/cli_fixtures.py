"""Test-only classes that console-script tests name in their configs (tests/ is on their PYTHONPATH)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from pat_seg.data import SyntheticLongTailDataModule


class ShapeBugNetwork(nn.Module):
    """A network with a bug in ``forward``: it concatenates two maps of different widths (torch raises)."""

    def __init__(self, num_classes: int = 9, in_channels: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(x)
        return torch.cat([logits, logits[..., :-1]], dim=1)


class _LabelOutOfRange(Dataset):
    def __init__(self, dataset: Dataset, label: int) -> None:
        self.dataset, self.label = dataset, label

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        sample["target"] = sample["target"].clone()
        sample["target"][0, 0] = self.label
        return sample


class OutOfRangeValidationLabels(SyntheticLongTailDataModule):
    """The synthetic data with one validation pixel per image labelled ``num_classes + 3``."""

    def build_dataset(self, split: str) -> Any:
        dataset = super().build_dataset(split)
        return _LabelOutOfRange(dataset, self.num_classes + 3) if split == "val" else dataset
