"""Test helper: a data module's samples as the model gets them, through its ``on_after_batch_transfer``.

Loaders yield samples in their stored form (uint8, an augmented split's parameters; pat_seg/data/base.py);
the data module's transfer hook makes the float32 images and long targets the network takes.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import default_collate


def model_samples(datamodule: Any, split: str) -> list[dict[str, Tensor]]:
    """Every sample of ``split`` as the model gets it: a batch of one after the data module's transfer hook."""
    dataset = datamodule.dataset(split)
    batches = [datamodule.on_after_batch_transfer(default_collate([dataset[i]]), 0) for i in range(len(dataset))]
    return [{key: value[0] for key, value in batch.items()} for batch in batches]
