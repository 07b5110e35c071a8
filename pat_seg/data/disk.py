"""Shared logic of the data modules that read a data set from disk (Cityscapes, NYUv2, Oxford Pet).

A :class:`DiskDataModule` takes the data set's ``root``, the protocol ``size`` and the augmentation
settings; its subclass lists the samples of a split (:meth:`DiskDataModule.build_samples`) and names
the protocol options that change the labels (:meth:`DiskDataModule.protocol_options`), which key the
on-disk cache of class counts and the prepared splits (:mod:`pat_seg.data.prepared`): a split that
``pat-seg prepare`` decoded once is read from memory-mapped arrays instead of the sources.

Either way a loader worker delivers the same stored form (:mod:`pat_seg.data.base`): the sample
resized once to the size its split is stored at (:meth:`DiskDataModule.stored_transform`, the
function ``pat-seg prepare`` stores with), in uint8, plus an augmented split's random parameters;
the conversion to float32 and the random scale, crop and flip follow on the device.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset

from pat_seg.arguments import check_choice
from pat_seg.class_statistics import ClassStatistics
from pat_seg.data.base import SegmentationDataModule, Split, class_counts_cache_path
from pat_seg.data.batch_augment import draw_parameters
from pat_seg.data.image_folder import output_names
from pat_seg.data.io import (
    DatasetLayoutError,
    LabelTable,
    check_same_size,
    image_size,
    read_label_image,
    read_rgb,
)
from pat_seg.data.prepared import (
    FORMAT_VERSION,
    PreparedArrays,
    PreparedSplitError,
    SplitRequest,
    open_manifest,
    source_records,
)
from pat_seg.data.transforms import SegmentationTransform, check_size
from pat_seg.exceptions import ConfigurationError

# Whether a module reads the splits `pat-seg prepare` wrote: when they match ("auto"), never ("off"),
# or always, refusing to start without them ("require").
PreparedMode = Literal["auto", "off", "require"]

# What a loader worker makes of a sample's (image, label) as read: the sample's fields (StoredSample).
SampleTransform = Callable[[np.ndarray | Tensor, np.ndarray | Tensor], dict[str, Tensor]]


def seeded_split(count: int, fractions: list[float], seed: int) -> list[list[int]]:
    """Split ``range(count)`` at random (seeded) into parts of the given fractions, each sorted.

    Part ``k`` gets ``round(fractions[k] * count)`` indices for every part but the first, which takes
    the rest; every part must end up non-empty. The same ``(count, fractions, seed)`` gives the same
    parts on every machine (numpy's PCG64).
    """
    sizes = [round(f * count) for f in fractions[1:]]
    sizes.insert(0, count - sum(sizes))
    if any(f <= 0 for f in fractions) or any(size < 1 for size in sizes):
        raise ConfigurationError(f"cannot split {count} samples into fractions {fractions}: a part would be empty")
    order = np.random.default_rng(seed).permutation(count)
    bounds = np.cumsum([0, *sizes])
    return [sorted(order[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:])]


class StoredSample:
    """What a loader worker makes of a sample's ``(image, label)``: its stored form (:mod:`pat_seg.data.base`).

    ``{"image": [3, H, W], "target": [H, W]}`` resized by ``stored`` (:meth:`SegmentationTransform.resized`:
    uint8 stays uint8, float images become float32), and with ``augment_range`` the random parameters of
    the sample's scale, crop and flip under ``"augment"`` (:func:`draw_parameters`, from torch's
    generator, which the loader seeds per worker: the same seed gives the same augmentations, and a
    resumed run the same ones as an uninterrupted run).
    """

    def __init__(self, stored: SegmentationTransform, augment_range: tuple[float, float] | None = None) -> None:
        self.stored = stored
        self.augment_range = augment_range

    def __call__(self, image: np.ndarray | Tensor, label: np.ndarray | Tensor) -> dict[str, Tensor]:
        pixels, target = self.stored.resized(image, label)
        sample = {"image": pixels, "target": target}
        if self.augment_range is not None:
            sample["augment"] = draw_parameters(self.augment_range)
        return sample


class SegmentationSamples(Dataset):
    """One split's samples: a subclass reads sample ``i`` as arrays, this class checks and transforms.

    Subclasses implement ``__len__`` and :meth:`load`; ``__getitem__`` returns ``transform``'s fields
    of the sample (a :class:`StoredSample`'s: the stored form) and ``"index": i``.
    """

    def __init__(self, transform: SampleTransform) -> None:
        self.transform = transform

    def load(self, index: int) -> tuple[np.ndarray | Tensor, np.ndarray | Tensor]:  # pragma: no cover - abstract
        """``(image, label)`` of sample ``index``: the image as numpy ``[H, W, 3]`` or tensor ``[3, H, W]``
        (uint8, or float in [0, 1]), the label ``[H, W]`` in the data set's classes (a
        :class:`~pat_seg.data.io.LabelTable`'s dtype); what :class:`SegmentationTransform` takes."""
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def source_files(self) -> list[Path]:  # pragma: no cover - abstract
        """Every file the samples are read from, in sample order: a prepared split records them."""
        raise NotImplementedError

    def image_files(self) -> list[Path] | None:
        """Each sample's image file, in sample order, where it is one file a viewer opens (None where it is
        not: arrays, rows of a .mat file). ``pat-seg predict`` names its outputs after these."""
        return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return {**self.transform(*self.load(index)), "index": index}


class ImageLabelFiles(SegmentationSamples):
    """Samples stored as one image file and one single-channel label PNG each (Cityscapes, Oxford Pet).

    ``samples`` lists ``(image path, label path, table mapping the label file's values to classes)``.
    """

    def __init__(self, samples: list[tuple[Path, Path, LabelTable]], transform: SampleTransform) -> None:
        super().__init__(transform)
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def source_files(self) -> list[Path]:
        return [path for image, label, _ in self.samples for path in (image, label)]

    def image_files(self) -> list[Path]:
        return [image for image, _, _ in self.samples]

    def load(self, index: int) -> tuple[Tensor, np.ndarray]:
        image_path, label_path, labels = self.samples[index]
        image = read_rgb(image_path)
        raw = read_label_image(label_path)
        check_same_size(image.shape[-2:], raw.shape[:2], str(image_path), str(label_path))
        return image, labels(raw, str(label_path))


class PreparedSamples(SegmentationSamples):
    """A prepared split (:mod:`pat_seg.data.prepared`): the stored arrays, through the same
    :class:`StoredSample` as the split's source files.

    The arrays are what its resize made of the sources, so it leaves them as they are; an augmented
    split draws the same random parameters. The samples are therefore those of the sources, bit for bit.
    """

    def __init__(self, arrays: PreparedArrays, transform: SampleTransform, images: list[Path] | None = None) -> None:
        super().__init__(transform)
        self.arrays = arrays
        self.images = images  # the sources' image files (the split matches them, or it is not used)

    def __len__(self) -> int:
        return len(self.arrays)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        return self.arrays[index]

    def source_files(self) -> list[Path]:
        return []

    def image_files(self) -> list[Path] | None:
        return self.images


class NamedSamples(Dataset):
    """``samples`` with, for sample ``i``, its image file ``images[i]``: ``"path"``, ``"name"`` (its path
    below the images' common folder, without the suffix: :func:`~pat_seg.data.image_folder.output_names`)
    and ``"original_size"`` (read from the file's header), the fields of an image folder's samples."""

    def __init__(self, samples: SegmentationSamples, images: list[Path]) -> None:
        self.samples = samples
        self.images = images
        root = Path(os.path.commonpath([image.parent for image in images])) if images else Path()
        self.names = output_names(images, root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.images[index]
        return {
            **self.samples[index],
            "path": str(path),
            "name": self.names[index],
            "original_size": torch.tensor(image_size(path)),
        }


class DiskDataModule(SegmentationDataModule):
    """Base of the data modules that read ``root``: the stored form per split and the class-counts cache.

    Args:
        root: the data set's directory, in its publisher's layout.
        size: ``(height, width)`` of every sample (the protocol size).
        augment: random scale, crop and flip on the training split (evaluation splits only resize).
        scale_range: range of the random scale, relative to ``size``.
        prepared: read the splits ``pat-seg prepare`` wrote: ``"auto"`` when one matches this protocol and
            the source files (else the sources, with a one-line message), ``"require"`` (else an
            error naming the command to run), ``"off"`` (always the sources).
        prepared_dir: where prepared splits are (default ``<root>/.pat_seg/prepared``).
        loader_settings: ``batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``eval_batch_size``, ``seed`` of :class:`~pat_seg.data.base.SegmentationDataModule`.
    """

    size: tuple[int, int]
    # The command that prepares this module's splits, as the messages that suggest it name it: the
    # `pat-seg` CLI sets it to the running command's own options (pat_seg.cli.prepare_hint.prepare_command).
    prepare_command: str = "pat-seg prepare --config CONFIG (with the --data.* options of this run)"

    def __init__(
        self,
        root: str,
        size: tuple[int, int],
        augment: bool = True,
        scale_range: tuple[float, float] = (0.5, 2.0),
        prepared: PreparedMode = "auto",
        prepared_dir: str | None = None,
        **loader_settings: Any,
    ) -> None:
        super().__init__(**loader_settings)
        self.root = Path(root).expanduser()
        self.size = check_size(size)
        self.augment = augment
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        SegmentationTransform(self.size, train=True, scale_range=self.scale_range)  # validates early
        self.prepared = check_choice("prepared", prepared, PreparedMode)
        self.prepared_dir = Path(prepared_dir).expanduser() if prepared_dir else self.root / ".pat_seg" / "prepared"
        self._manifests: dict[str, dict[str, Any] | None] = {}

    def set_classes(self, class_names: list[str], ignore_index: int) -> None:
        """Set ``class_names``, ``num_classes`` and ``ignore_index``, which must not be a class index."""
        if 0 <= ignore_index < len(class_names):
            raise ConfigurationError(
                f"ignore_index {ignore_index} collides with a class index in [0, {len(class_names) - 1}]"
            )
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.ignore_index = ignore_index

    # --- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def build_samples(self, split: str, transform: SampleTransform) -> SegmentationSamples:
        """The samples of ``split``, each delivered through ``transform`` (its stored form)."""

    def protocol_options(self) -> dict[str, Any]:
        """Options that change labels or splits; they key the class-counts cache and the prepared splits."""
        return {}

    def source_files(self, samples: SegmentationSamples) -> list[Path]:
        """The files a split is read from (override to add files that change every sample, like a class table)."""
        return samples.source_files()

    # --- shared logic ------------------------------------------------------------------------
    def stored_transform(self, split: str) -> SegmentationTransform:
        """The deterministic resize to :meth:`stored_size` that ``pat-seg prepare`` stores ``split`` with
        and that reading the source files applies per sample: one function, so both give the same bits."""
        return SegmentationTransform(self.stored_size(split), train=False, ignore_index=self.ignore_index)

    def sample_transform(self, split: str) -> StoredSample:
        """What a loader worker makes of each sample of ``split``: its stored form, plus the random
        augmentation parameters when ``split`` is augmented (applied on the device, :mod:`pat_seg.data.base`)."""
        return StoredSample(self.stored_transform(split), self.scale_range if self.augmented(split) else None)

    def build_dataset(self, split: str) -> Dataset:
        check_choice("split", split, Split)
        transform = self.sample_transform(split)
        sources = self.build_samples(split, transform)
        manifest = self.prepared_manifest(split, sources)
        if manifest is None:
            return sources
        arrays = PreparedArrays(self.split_request(split, sources).folder, manifest)
        return PreparedSamples(arrays, transform, sources.image_files())

    def prediction_dataset(self) -> Dataset:
        """The test split, each sample with its image file's name, path and size there (when the samples
        are image files): ``pat-seg predict`` names each output after its image, as for an image folder,
        and writes it at the image's own size."""
        samples = self.dataset("test")
        if isinstance(samples, SegmentationSamples) and (images := samples.image_files()) is not None:
            return NamedSamples(samples, images)
        return samples

    # --- prepared splits (pat_seg.data.prepared) --------------------------------------------------
    def augmented(self, split: str) -> bool:
        """Whether ``split`` is read with random scale, crop and flip (training with ``augment`` only)."""
        return split == "train" and self.augment

    def stored_size(self, split: str) -> tuple[int, int]:
        """Size a prepared ``split`` stores: the protocol size, or for an augmented split the largest
        size its random scale reaches (``scale_range[1] * size``), so no augmentation upsamples."""
        if not self.augmented(split):
            return self.size
        high = max(1.0, self.scale_range[1])
        return max(1, round(high * self.size[0])), max(1, round(high * self.size[1]))

    def prepared_protocol(self, split: str) -> dict[str, Any]:
        """Every option that changes the arrays of a prepared ``split``: the manifest must match it."""
        return {
            "format": FORMAT_VERSION,
            "data_module": type(self).__name__,
            "size": list(self.size),
            "augment": self.augment,
            "scale_range": list(self.scale_range) if self.augment else None,
            **self.protocol_options(),
            "split": split,
            "stored_size": list(self.stored_size(split)),
            "augmented": self.augmented(split),
        }

    def split_request(self, split: str, samples: SegmentationSamples) -> SplitRequest:
        """The prepared split that ``split`` read from ``samples`` corresponds to."""
        return SplitRequest(
            type(self).__name__,
            split,
            self.prepared_protocol(split),
            source_records(self.source_files(samples), self.root),
            self.prepared_dir,
        )

    def prepared_manifest(self, split: str, samples: SegmentationSamples | None = None) -> dict[str, Any] | None:
        """The manifest of a prepared ``split`` that matches this protocol and the sources, checked once
        per process (None: read the sources; with ``prepared="require"``, a :class:`PreparedSplitError`)."""
        if self.prepared == "off":
            return None
        if split not in self._manifests:
            if samples is None:
                samples = self.build_samples(split, self.sample_transform(split))
            try:
                self._manifests[split] = open_manifest(self.split_request(split, samples))
            except PreparedSplitError as error:
                if self.prepared == "require":
                    raise PreparedSplitError(
                        f"{error}\nrun: {self.prepare_command}\n(or --data.prepared=auto to read the source files)"
                    ) from None
                if not any(value is None for value in self._manifests.values()):  # said once, not per split
                    rank_zero_info(
                        f"{type(self).__name__}: reading the {split!r} split from its source files "
                        f"({error}); `{self.prepare_command}` decodes them once"
                    )
                self._manifests[split] = None
        return self._manifests[split]

    def precomputed_class_statistics(self) -> ClassStatistics | None:
        """The prepared training split's class statistics (its manifest's), if one is used."""
        manifest = self.prepared_manifest("train")
        if manifest is None:
            return None
        statistics = manifest["class_statistics"]
        return ClassStatistics(
            [int(c) for c in statistics["pixels"]],
            [int(c) for c in statistics["images_containing"]],
            int(manifest["count"]),
        )

    def check_prepared_dir_writable(self) -> None:
        """``pat-seg prepare`` writes under ``prepared_dir``: a read-only place is a named error."""
        existing = next(p for p in (self.prepared_dir, *self.prepared_dir.parents) if p.exists())
        if not os.access(existing, os.W_OK):
            raise DatasetLayoutError(
                f"cannot write prepared splits under {self.prepared_dir} ({existing} is "
                "read-only); give a writable folder with --data.prepared_dir DIR"
            )

    def counting_dataset(self) -> Dataset:
        # Counts at the protocol size without random augmentation: the same numbers on every run.
        protocol_size = SegmentationTransform(self.size, train=False, ignore_index=self.ignore_index)
        return self.build_samples("train", StoredSample(protocol_size))

    def class_counts_cache_file(self) -> Path:
        key = {"data_module": type(self).__name__, "size": list(self.size), **self.protocol_options()}
        return class_counts_cache_path(self.root, key)
