"""Shared data-module logic: loaders, the fields the rest of the package reads, training class counts.

Every data module exposes ``num_classes``, ``class_names``, ``ignore_index``, ``class_counts``
(per-class pixel counts over the TRAINING split, docs/losses.md) and ``class_presence`` (per-class
share of the training images that contain the class), which the CLI and the module read.

What a loader yields and what the model gets (docs/datasets.md, "What every loader does"):

- ``train_dataloader()``, ``val_dataloader()`` and ``test_dataloader()`` yield batches in their
  *stored* form, ``{"image": [B, 3, H, W], "target": [B, H, W], "index": long [B]}``: images uint8
  (float32 in [0, 1] where the data set's files hold float images, NYUv2's npy tree, or for generated
  data), targets uint8 (long where ``ignore_index`` does not fit in uint8, or for generated data).
  Evaluation splits and unaugmented training splits are at the protocol ``size``. An augmented
  training split is at the size it is stored at (``DiskDataModule.stored_size``, the largest its
  random scale reaches) and carries ``"augment": float64 [B, 4]``, each sample's random scale, crop
  position and flip (:func:`~pat_seg.data.batch_augment.draw_parameters`). A disk data module gives
  the same dtypes and values, bit for bit, whether it reads its source files or a prepared split.
- :meth:`SegmentationDataModule.on_after_batch_transfer`, which Lightning calls once the batch is on
  the device, makes what the model gets: ``{"image": float32 [B, 3, h, w] in [0, 1], "target": long
  [B, h, w], "index": long [B]}`` at the protocol size, by the random scale, crop and flip of
  :func:`~pat_seg.data.batch_augment.augment_batch` for a batch with ``"augment"``, else by
  :meth:`SegmentationTransform.output <pat_seg.data.transforms.SegmentationTransform.output>`. A loop
  outside Lightning calls it itself: ``batch = datamodule.on_after_batch_transfer(batch, 0)``.

Why the split: a uint8 batch is a quarter of the bytes of a float32 one through the loader's shared
memory and to the GPU (its label maps an eighth), and the random resize of an augmented batch, the
expensive part on a CPU, runs on the GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pat_seg.arguments import NonNegativeInt, PositiveInt, check_number
from pat_seg.atomic_files import write_text_atomically
from pat_seg.class_statistics import ClassStatistics, class_statistics
from pat_seg.data.batch_augment import augment_batch
from pat_seg.data.io import DatasetLayoutError, max_image_pixels
from pat_seg.data.sampling import EvaluationSampler, ResumableDataLoader, ResumableShuffleSampler, process_group
from pat_seg.data.transforms import SegmentationTransform
from pat_seg.exceptions import ConfigurationError

log = logging.getLogger(__name__)

Sample = dict[str, Any]
# The splits a data module serves (prediction reads "test").
Split = Literal["train", "val", "test"]


CACHE_DIR_VARIABLE = "PAT_SEG_CACHE_DIR"


def cache_dir() -> Path:
    """pat-seg's cache folder: ``$PAT_SEG_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/pat_seg`` (default
    ``~/.cache/pat_seg``). Never inside a data set's folder: a user's data stays as they left it."""
    chosen = os.environ.get(CACHE_DIR_VARIABLE, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "pat_seg"


def class_counts_cache_path(root: str | Path, key: dict[str, Any]) -> Path:
    """Cache file of the class counts of the data set at ``root`` under the protocol options ``key``.

    ``<cache_dir()>/class_counts-<hash>.json``; the hash covers the resolved root, the identity of that
    folder on its file system (a data set deleted and made again at the same path is another entry)
    and ``key``, so two protocols of one data set, or two data roots, never share a file.
    """
    root = Path(root).expanduser().resolve()
    try:
        status = root.stat()
        folder = [status.st_dev, status.st_ino]
    except OSError:  # no such root: the data module names it before anything is counted
        folder = []
    text = json.dumps({"root": str(root), "folder": folder, **key}, sort_keys=True, default=str)
    return cache_dir() / f"class_counts-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"


class SegmentationDataModule(L.LightningDataModule, ABC):
    """Base of every pat-seg data module.

    Subclasses set ``num_classes``, ``class_names``, ``ignore_index`` and implement
    :meth:`build_dataset` for the splits ``"train"``, ``"val"``, ``"test"`` (prediction runs on
    ``"test"``), whose samples are in the stored form of the module docstring. Class counts are
    computed once, lazily, and cached on disk when :meth:`class_counts_cache_file` names a file, so a
    second run does not rescan the data.

    Args:
        batch_size: training batch size (per process).
        num_workers: loader worker processes (0: the training process loads).
        pin_memory: page-locked loader batches, for faster copies to a GPU.
        persistent_workers: keep the loader workers between epochs (with ``num_workers > 0``).
        eval_batch_size: validation, test and prediction batch size (None: ``batch_size``).
        seed: the training order and the random augmentation (each loader worker's generator).
    """

    num_classes: int
    class_names: list[str]
    ignore_index: int
    # (height, width) of what the model gets: the output of the on-device augmentation of a batch
    # with "augment" parameters, so a module whose loader yields them must set it.
    size: tuple[int, int] | None = None

    def __init__(
        self,
        batch_size: PositiveInt = 8,
        num_workers: NonNegativeInt = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        eval_batch_size: PositiveInt | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        batch_size = check_number("batch_size", batch_size, at_least=1, integer=True)
        num_workers = check_number("num_workers", num_workers, at_least=0, integer=True)
        if eval_batch_size is not None:
            eval_batch_size = check_number("eval_batch_size", eval_batch_size, at_least=1, integer=True, note="or None")
        max_image_pixels()  # a bad PAT_SEG_MAX_IMAGE_PIXELS stops the command here, not as each image's read error
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        self._datasets: dict[str, Dataset] = {}
        self._class_statistics: ClassStatistics | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, int] | None = None

    # --- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def build_dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (``"train"``, ``"val"`` or ``"test"``), yielding stored samples."""

    def class_counts_cache_file(self) -> Path | None:
        """Where to cache the training class counts (None: keep them in memory only)."""
        return None

    def counting_dataset(self) -> Dataset:
        """The data that :attr:`class_counts` scans: the training split (override to skip augmentation)."""
        return self.dataset("train")

    def precomputed_class_statistics(self) -> ClassStatistics | None:
        """Training class statistics known without a scan (a prepared split's manifest), or None."""
        return None

    @classmethod
    def data_set_name(cls, init_args: Mapping[str, Any]) -> str | None:
        """The name ``pat-seg report`` gives the data set that a run configured with ``init_args`` (its
        saved ``data.init_args``) read; None: the run is named by its class (its ``label``, else its class
        name). A module that reads whichever data set it is pointed at names it here
        (:meth:`pat_seg.data.SegmentationFolderDataModule.data_set_name`), so that two data sets read by
        one class never share a column. It reads configs that older versions saved too: it never raises."""
        return None

    # --- shared logic ------------------------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split``, built once."""
        if split not in self._datasets:
            dataset = self.build_dataset(split)
            if len(dataset) == 0:  # type: ignore[arg-type]
                # A layout problem (an empty or half-copied data root), reported as a configuration error.
                raise DatasetLayoutError(f"the {split!r} split of {type(self).__name__} is empty")
            self._datasets[split] = dataset
        return self._datasets[split]

    @property
    def class_statistics(self) -> ClassStatistics:
        """Per-class pixels and images over the training split, computed once (and cached on disk)."""
        if self._class_statistics is None:
            cache = self.class_counts_cache_file()
            if cache is not None and cache.is_file():
                cached = json.loads(cache.read_text())
                # Files written before the image counts existed lack them: scanned again once.
                if len(cached.get("class_counts", [])) == self.num_classes and "class_image_counts" in cached:
                    self._class_statistics = ClassStatistics(
                        [int(c) for c in cached["class_counts"]],
                        [int(c) for c in cached["class_image_counts"]],
                        int(cached["num_images"]),
                    )
                    return self._class_statistics
            known = self.precomputed_class_statistics()
            if known is not None and len(known.pixels) == self.num_classes:
                self._class_statistics = known
                return known
            log.info("counting training pixels per class for %s", type(self).__name__)
            loader = DataLoader(self.counting_dataset(), batch_size=16, num_workers=self.num_workers, shuffle=False)
            try:
                self._class_statistics = class_statistics(
                    (batch["target"] for batch in loader), self.num_classes, self.ignore_index, batched=True
                )
            except ValueError as error:  # "label 37 found in label map 12; ..." of the training split
                raise ConfigurationError(f"{type(self).__name__}, training split: {error}") from None
            if cache is not None:
                try:
                    statistics = self._class_statistics
                    # Atomic: a concurrent reader (another DDP process, run) never sees half a file.
                    write_text_atomically(
                        cache,
                        json.dumps(
                            {
                                "class_names": self.class_names,
                                "class_counts": statistics.pixels,
                                "class_image_counts": statistics.images,
                                "num_images": statistics.num_images,
                            }
                        ),
                    )
                    # Said where it can be seen (Lightning's console log): a file written outside the run folder.
                    rank_zero_info(f"class counts cached in {cache} (set {CACHE_DIR_VARIABLE} to choose the folder)")
                except OSError as error:  # a read-only cache folder must not stop training
                    log.warning("could not cache class counts at %s: %s", cache, error)
        return self._class_statistics

    @class_statistics.setter
    def class_statistics(self, statistics: ClassStatistics) -> None:
        if len(statistics.pixels) != self.num_classes or len(statistics.images) != self.num_classes:
            raise ConfigurationError(
                f"got statistics of {len(statistics.pixels)} classes for num_classes={self.num_classes}"
            )
        self._class_statistics = statistics

    @property
    def class_counts(self) -> list[int]:
        """Per-class pixel counts over the training split (:attr:`class_statistics`)."""
        return self.class_statistics.pixels

    @property
    def class_presence(self) -> list[float]:
        """Per-class share of the training images that contain the class (:attr:`class_statistics`)."""
        return self.class_statistics.presence

    def setup(self, stage: str) -> None:
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}[stage]
        for split in splits:
            self.dataset(split)

    def _loader(
        self,
        split: str,
        shuffle: bool,
        batch_size: int,
        drop_last: bool = False,
        collate_fn: Any = None,
        dataset: Dataset | None = None,
    ) -> DataLoader:
        """A loader of ``split`` (of ``dataset`` instead, when given: the split's samples with more fields)."""
        # Samplers are chosen here, not injected by Lightning: training order depends on (seed, epoch)
        # only and survives a mid-epoch resume; evaluation counts each sample exactly once under DDP.
        dataset = self.dataset(split) if dataset is None else dataset
        num_replicas, rank = process_group(self.trainer)
        loader_class = ResumableDataLoader if shuffle else DataLoader
        sampler: DistributedSampler
        if shuffle:
            sampler = ResumableShuffleSampler(dataset, num_replicas, rank, seed=self.seed)
        else:
            sampler = EvaluationSampler(dataset, num_replicas, rank)
        return loader_class(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            # Worker processes draw their base seed from this generator, so random augmentations
            # repeat for the same data-module seed.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The stored batch the loader yielded, on its device, as the model gets it (module docstring):
        float32 images in [0, 1] and long targets at the protocol size, augmented when it carries
        ``"augment"``. Anything else (a bare tensor, a batch without ``"target"``) passes unchanged."""
        if not isinstance(batch, dict) or "target" not in batch:
            return batch
        if "augment" in batch:
            if self.size is None:
                raise ConfigurationError(
                    f"{type(self).__name__} yields augmentation parameters but sets no size to augment to"
                )
            batch["image"], batch["target"] = augment_batch(
                batch["image"], batch["target"], batch.pop("augment"), self.size, self.ignore_index
            )
        elif batch["image"].dtype != torch.float32 or batch["target"].dtype != torch.long:
            # The conversion that SegmentationTransform.__call__ does per sample, on the whole batch: the same bits.
            batch["image"], batch["target"] = SegmentationTransform.output(batch["image"], batch["target"])
        return batch

    def train_dataloader(self) -> DataLoader:
        # Dropping a ragged last batch keeps BatchNorm away from batches of one, but never the only one.
        num_replicas, _ = process_group(self.trainer)
        per_process = -(-len(self.dataset("train")) // num_replicas)  # type: ignore[arg-type]
        drop_last = per_process > self.batch_size
        loader = self._loader("train", shuffle=True, batch_size=self.batch_size, drop_last=drop_last)
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)  # type: ignore[attr-defined]  # shuffle=True: a ResumableDataLoader
            self._train_loader_state = None
        self._train_loader = loader  # type: ignore[assignment]
        return loader

    # Position inside the training epoch, saved with the checkpoint. Lightning restores the data module
    # before it builds the loaders, but builds the train loader (to count steps for the scheduler)
    # before it restores loop states, so the loader's own stateful protocol would come too late.
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_loader_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def prediction_dataset(self) -> Dataset:
        """What ``pat-seg predict`` runs on: the test split (a subclass adds its images' names)."""
        return self.dataset("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size, dataset=self.prediction_dataset())
