"""NYU Depth v2 (Silberman et al., ECCV 2012) semantic labels, from either of its two common layouts.

``layout="npy"``: the preprocessed tree of Liu et al.'s MTAN (``{train,val}/{image,label}/{i}.npy``,
795 train / 654 val images of 288x384, images HWC in [0, 1], labels 0..12 in the 13 classes and -1
for unlabelled pixels). ``num_classes=13`` ignores -1 and evaluates on ``val`` (the official test
set, also the ``"test"`` split); ``num_classes=14`` is the paper's protocol (docs/datasets.md): label
+ 1, so unlabelled pixels are trained as class 0, with train and val merged and split 0.8/0.1/0.1 at
random with ``split_seed``.

``layout="mat"``: the official ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3, HDF5; 1449 images of
480x640, labels 1..894 and 0 unlabelled) with ``splits.mat`` (``trainNdxs``/``testNdxs``, 795/654,
1-based) and ``classMapping40.mat`` (``mapClass``, 894 -> 40) from the nyuv2-meta-data set, read from
the root (MATLAB level-5 or v7.3). ``num_classes=40`` uses ``mapClass``; ``num_classes=13`` maps the
40 classes on with the table below (docs/datasets.md). Unlabelled pixels are ignored; val is the test split.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pat_seg.arguments import check_choice
from pat_seg.data.disk import DiskDataModule, SampleTransform, SegmentationSamples, seeded_split
from pat_seg.data.io import DatasetLayoutError, LabelTable, check_same_size, read_mat, require_paths
from pat_seg.exceptions import ConfigurationError

CLASS_NAMES_13 = [
    "bed",
    "books",
    "ceiling",
    "chair",
    "floor",
    "furniture",
    "objects",
    "picture",
    "sofa",
    "table",
    "tv",
    "wall",
    "window",
]
CLASS_NAMES_40 = [
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "blinds",
    "desk",
    "shelves",
    "curtain",
    "dresser",
    "pillow",
    "mirror",
    "floormat",
    "clothes",
    "ceiling",
    "books",
    "fridge",
    "tv",
    "paper",
    "towel",
    "showercurtain",
    "box",
    "whiteboard",
    "person",
    "nightstand",
    "toilet",
    "sink",
    "lamp",
    "bathtub",
    "bag",
    "otherstructure",
    "otherfurniture",
    "otherprop",
]
# 40-class id -> 13-class id, both 1-based (docs/datasets.md); unlisted 40-class ids are "objects" (7).
CLASS_40_TO_13 = {
    1: 12,
    2: 5,
    3: 6,
    4: 1,
    5: 4,
    6: 9,
    7: 10,
    8: 12,
    9: 13,
    10: 6,
    11: 8,
    12: 6,
    13: 13,
    14: 10,
    15: 6,
    16: 13,
    17: 6,
    18: 7,
    19: 7,
    20: 5,
    21: 7,
    22: 3,
    23: 2,
    24: 6,
    25: 11,
    32: 6,
    39: 6,
}
OBJECTS_13 = 7
NUM_RAW_CLASSES = 894
MAT_FILE, SPLITS_FILE, MAPPING_FILE = "nyu_depth_v2_labeled.mat", "splits.mat", "classMapping40.mat"
LAYOUTS = {
    "npy": """\
  <root>/train/image/<i>.npy   HxWx3, float in [0, 1] or uint8      (i = 0, 1, ...)
  <root>/train/label/<i>.npy   HxW, 0..12 and -1 unlabelled
  <root>/val/image/<i>.npy, <root>/val/label/<i>.npy
(the preprocessed NYUv2 of MTAN, https://github.com/lorenmt/mtan)""",
    "mat": f"""\
  <root>/{MAT_FILE}   (MATLAB v7.3: 'images' and 'labels')
  <root>/{SPLITS_FILE}                 ('trainNdxs', 'testNdxs', 1-based)
  <root>/{MAPPING_FILE}          ('mapClass', 894 -> 40)
({MAT_FILE} from https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html;
 {SPLITS_FILE} and {MAPPING_FILE} from https://github.com/ankurhanda/nyuv2-meta-data)""",
}
# "auto": "mat" when the official file is in the root, else "npy" (the LAYOUTS above).
Layout = Literal["auto", "npy", "mat"]
# 13 classes (both layouts), 14 (the 13 and "unlabelled", npy) or 40 (mat).
NYUClasses = Literal[13, 14, 40]
LAYOUT_CLASSES = {"npy": (13, 14), "mat": (13, 40)}


def _numbered_npy(directory: Path) -> list[Path]:
    files = [p for p in directory.glob("*.npy") if re.fullmatch(r"\d+", p.stem)]
    return sorted(files, key=lambda p: int(p.stem))


def _as_hwc_image(array: np.ndarray, source: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # CHW written by some converters
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ConfigurationError(f"image {source} has shape {list(array.shape)}; expected [H, W, 3]")
    if array.dtype != np.uint8 and array.dtype.kind == "f" and (array.min() < 0 or array.max() > 1):
        raise ConfigurationError(f"image {source} has float values outside [0, 1]; expected [0, 1] or uint8")
    return array


def _integral(label: np.ndarray, source: str) -> np.ndarray:
    if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
        raise ConfigurationError(f"label file {source} holds non-integer values; expected integer class indices")
    return label.astype(np.int64)


class NpySamples(SegmentationSamples):
    """Pairs of ``image/<i>.npy`` and ``label/<i>.npy`` files."""

    def __init__(self, pairs: list[tuple[Path, Path]], labels: LabelTable, transform: SampleTransform) -> None:
        super().__init__(transform)
        self.pairs = pairs
        self.labels = labels

    def __len__(self) -> int:
        return len(self.pairs)

    def source_files(self) -> list[Path]:
        return [path for pair in self.pairs for path in pair]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        try:
            image, raw = np.load(image_path), np.load(label_path)
        except (OSError, ValueError, EOFError) as error:
            raise ConfigurationError(f"cannot read {image_path} / {label_path}: {error}") from error
        image = _as_hwc_image(image, str(image_path))
        check_same_size(image.shape[:2], raw.shape[:2], str(image_path), str(label_path))
        return image, self.labels(_integral(raw, str(label_path)), str(label_path))


class LabeledMatSamples(SegmentationSamples):
    """Images ``indices`` (0-based) of ``nyu_depth_v2_labeled.mat``, opened lazily in each process.

    h5py handles do not survive ``fork``, so every data-loader worker opens its own.
    """

    def __init__(self, path: Path, indices: list[int], labels: LabelTable, transform: SampleTransform) -> None:
        super().__init__(transform)
        self.path = path
        self.indices = indices
        self.labels = labels
        self._file: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.indices)

    def source_files(self) -> list[Path]:
        return [self.path]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pid != os.getpid():
            import h5py

            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        i = self.indices[index]
        # HDF5 holds MATLAB's HxWx3xN images as N x 3 x W x H: transpose back to H x W x 3.
        image = np.asarray(self._file["images"][i]).transpose(2, 1, 0)
        raw = np.asarray(self._file["labels"][i]).T
        source = f"{self.path} (image {i + 1})"
        check_same_size(image.shape[:2], raw.shape[:2], source, source)
        return image, self.labels(raw, source)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": -1}


def _read_matrix(path: Path, name: str) -> np.ndarray:
    matrices = read_mat(path)
    if name not in matrices:
        raise ConfigurationError(f"{path} has no numeric variable {name!r}; found {sorted(matrices)}")
    return matrices[name].reshape(-1)


class NYUv2DataModule(DiskDataModule):
    """NYUv2 semantic segmentation: 13 classes (standard), 14 (the paper's) or 40 (official .mat).

    Args:
        root: directory of the npy tree or of the official .mat files (see the module docstring).
        layout: ``"npy"``, ``"mat"`` or ``"auto"`` (``"mat"`` when ``nyu_depth_v2_labeled.mat`` is in
            ``root``, else ``"npy"``).
        num_classes: 13 or 14 with ``"npy"``, 13 or 40 with ``"mat"``.
        size: ``(height, width)`` of every sample.
        split_seed: seed of the paper protocol's 0.8/0.1/0.1 split (``num_classes=14``).
        ignore_index: label of unlabelled pixels (13 and 40 classes) and of padding.
        settings: ``augment``, ``scale_range`` and the loader settings of
            :class:`~pat_seg.data.disk.DiskDataModule`.
    """

    label = "NYUv2"  # its name in the report's tables

    def __init__(
        self,
        root: str,
        layout: Layout = "auto",
        num_classes: NYUClasses = 13,
        size: tuple[int, int] = (288, 384),
        split_seed: int = 0,
        ignore_index: int = 255,
        **settings: Any,
    ) -> None:
        super().__init__(root, size, **settings)
        check_choice("layout", layout, Layout)
        require_paths([self.root], "\n".join(LAYOUTS.values()))
        if layout == "auto":
            layout = "mat" if (self.root / MAT_FILE).exists() else "npy"
        if num_classes not in LAYOUT_CLASSES[layout]:
            raise ConfigurationError(
                f"num_classes must be one of {LAYOUT_CLASSES[layout]} with layout {layout!r}; got {num_classes}"
            )
        self.set_classes(
            {13: CLASS_NAMES_13, 14: ["unlabelled", *CLASS_NAMES_13], 40: CLASS_NAMES_40}[num_classes], ignore_index
        )
        self.layout = layout
        self.split_seed = split_seed
        if layout == "npy":
            require_paths([self.root / s / k for s in ("train", "val") for k in ("image", "label")], LAYOUTS["npy"])
        else:
            require_paths([self.root / f for f in (MAT_FILE, SPLITS_FILE, MAPPING_FILE)], LAYOUTS["mat"])

    def protocol_options(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "num_classes": self.num_classes,
            "split_seed": self.split_seed,
            "ignore_index": self.ignore_index,
        }

    def source_files(self, samples: SegmentationSamples) -> list[Path]:
        # The split indices and the class mapping change the samples of a .mat split too.
        extra = [self.root / SPLITS_FILE, self.root / MAPPING_FILE] if self.layout == "mat" else []
        return samples.source_files() + extra

    def build_samples(self, split: str, transform: SampleTransform) -> SegmentationSamples:
        if self.layout == "npy":
            return self._npy_samples(split, transform)
        return self._mat_samples(split, transform)

    # --- npy tree ------------------------------------------------------------------------------
    def _npy_pairs(self, directory: str) -> list[tuple[Path, Path]]:
        images = _numbered_npy(self.root / directory / "image")
        if not images:
            raise DatasetLayoutError(
                f"no <i>.npy files in {self.root / directory / 'image'}; expected:\n{LAYOUTS['npy']}"
            )
        labels = [self.root / directory / "label" / p.name for p in images]
        require_paths(labels, LAYOUTS["npy"])
        return list(zip(images, labels))

    def _npy_samples(self, split: str, transform: SampleTransform) -> NpySamples:
        expected = f"the NYUv2 npy labels are -1 (unlabelled) and 0..{len(CLASS_NAMES_13) - 1}"
        if self.num_classes == 13:
            labels = LabelTable.from_mapping({-1: self.ignore_index, **{k: k for k in range(13)}}, -1, 12, expected)
            return NpySamples(self._npy_pairs("train" if split == "train" else "val"), labels, transform)
        # Paper protocol: unlabelled is class 0, and all images are re-split 0.8 / 0.1 / 0.1.
        labels = LabelTable.from_mapping({k: k + 1 for k in range(-1, 13)}, -1, 12, expected)
        pairs = self._npy_pairs("train") + self._npy_pairs("val")
        parts = dict(zip(("train", "val", "test"), seeded_split(len(pairs), [0.8, 0.1, 0.1], self.split_seed)))
        return NpySamples([pairs[i] for i in parts[split]], labels, transform)

    # --- official .mat -----------------------------------------------------------------------------
    def _mat_labels(self) -> LabelTable:
        path = self.root / MAPPING_FILE
        to_40 = _read_matrix(path, "mapClass").astype(np.int64)
        if to_40.size != NUM_RAW_CLASSES or to_40.min() < 1 or to_40.max() > 40:
            raise ConfigurationError(
                f"'mapClass' in {path} must hold {NUM_RAW_CLASSES} class ids in 1..40; got "
                f"{to_40.size} values in {to_40.min()}..{to_40.max()}"
            )
        if self.num_classes == 40:
            mapped = to_40 - 1
        else:
            mapped = np.array([CLASS_40_TO_13.get(int(c), OBJECTS_13) - 1 for c in to_40])
        mapping = {0: self.ignore_index, **{raw + 1: int(c) for raw, c in enumerate(mapped)}}
        return LabelTable.from_mapping(
            mapping, 0, NUM_RAW_CLASSES, f"NYUv2 labels are 0 (unlabelled) and 1..{NUM_RAW_CLASSES}"
        )

    def _mat_samples(self, split: str, transform: SampleTransform) -> LabeledMatSamples:
        import h5py

        path = self.root / MAT_FILE
        try:
            with h5py.File(path, "r") as file:
                missing = [k for k in ("images", "labels") if k not in file]
                count = file["labels"].shape[0] if not missing else 0
        except OSError as error:
            raise ConfigurationError(f"cannot read {path} as MATLAB v7.3 (HDF5): {error}") from error
        if missing:
            raise ConfigurationError(f"{path} has no {missing[0]!r} dataset; expected 'images' and 'labels'")
        key = "trainNdxs" if split == "train" else "testNdxs"
        indices = _read_matrix(self.root / SPLITS_FILE, key).astype(np.int64)
        if indices.size == 0 or indices.min() < 1 or indices.max() > count:
            raise ConfigurationError(
                f"{key!r} in {self.root / SPLITS_FILE} must hold 1-based image numbers in 1..{count}; "
                f"got values in {indices.min() if indices.size else None}..{indices.max() if indices.size else None}"
            )
        return LabeledMatSamples(path, (indices - 1).tolist(), self._mat_labels(), transform)
