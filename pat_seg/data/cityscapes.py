"""Cityscapes (Cordts et al., CVPR 2016) from the official ``leftImg8bit`` / ``gtFine`` tree.

Labels: ``*_gtFine_labelTrainIds.png`` when present (made by cityscapesscripts' ``createTrainIdLabelImgs``),
else ``*_gtFine_labelIds.png`` mapped by the official labelId -> trainId table. The 19
evaluated classes are 0..18; every other label id (including -1, license plate, which a uint8 PNG
stores as 255) is ignored, or is class 19 "void" with ``void_as_class=True`` (the paper's 20 classes).

Splits: ``train`` and ``val`` are the official ones. The official ``test`` images have no public
labels, so the ``"test"`` split here is the ``val`` set (val used as test). The paper's authors
tested on the official test split, so their test numbers and ours are not the same measurement
(docs/datasets.md).
"""

from __future__ import annotations

import logging
from typing import Any

from pat_seg.data.disk import DiskDataModule, ImageLabelFiles, SampleTransform
from pat_seg.data.io import DatasetLayoutError, LabelTable, require_paths

log = logging.getLogger(__name__)

TRAIN_CLASS_NAMES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]
# labelId -> trainId (cityscapesscripts' labels.py; docs/datasets.md).
LABEL_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
NUM_LABEL_IDS = 34  # label ids 0..33; -1 (license plate) is stored as 255 in uint8 PNGs
PNG_MINUS_ONE = 255
SPLIT_DIRS = {"train": "train", "val": "val", "test": "val"}
LAYOUT = """\
  <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png  (or _labelTrainIds.png)
(leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from https://www.cityscapes-dataset.com)"""


def label_tables(void_index: int) -> tuple[LabelTable, LabelTable]:
    """(labelIds table, trainIds table): both map onto trainIds with ``void_index`` for the rest."""
    expected = f"Cityscapes labelIds are 0..{NUM_LABEL_IDS - 1} (and 255 for -1)"
    from_label_ids = {raw: LABEL_TO_TRAIN_ID.get(raw, void_index) for raw in range(NUM_LABEL_IDS)}
    from_label_ids[PNG_MINUS_ONE] = void_index
    from_train_ids = {train_id: train_id for train_id in range(len(TRAIN_CLASS_NAMES))}
    from_train_ids[PNG_MINUS_ONE] = void_index
    return (
        LabelTable.from_mapping(from_label_ids, 0, 255, expected),
        LabelTable.from_mapping(
            from_train_ids, 0, 255, f"Cityscapes trainIds are 0..{len(TRAIN_CLASS_NAMES) - 1} and 255"
        ),
    )


class CityscapesDataModule(DiskDataModule):
    """Cityscapes fine annotations: 19 classes (ignore 255), or 20 with ``void_as_class`` (the paper's).

    Args:
        root: directory holding ``leftImg8bit/`` and ``gtFine/`` (layout in the module docstring and
            ``docs/datasets.md``).
        void_as_class: train "void" (every label id outside the 19 classes) as class 19.
        size: ``(height, width)``; the paper's protocol uses ``(256, 512)``.
        ignore_index: label of ignored pixels (unused as a class when ``void_as_class``).
        settings: ``augment``, ``scale_range`` and the loader settings of
            :class:`~pat_seg.data.disk.DiskDataModule`.
    """

    label = "Cityscapes"  # its name in the report's tables

    def __init__(
        self,
        root: str,
        void_as_class: bool = False,
        size: tuple[int, int] = (512, 1024),
        ignore_index: int = 255,
        **settings: Any,
    ) -> None:
        super().__init__(root, size, **settings)
        self.void_as_class = void_as_class
        self.set_classes(TRAIN_CLASS_NAMES + (["void"] if void_as_class else []), ignore_index)
        self.from_label_ids, self.from_train_ids = label_tables(19 if void_as_class else ignore_index)
        require_paths([self.root, self.root / "leftImg8bit", self.root / "gtFine"], LAYOUT)

    def protocol_options(self) -> dict[str, Any]:
        return {"void_as_class": self.void_as_class, "ignore_index": self.ignore_index}

    def build_samples(self, split: str, transform: SampleTransform) -> ImageLabelFiles:
        if split == "test":
            log.info("Cityscapes test labels are not public: the 'test' split is the val set")
        images_dir = self.root / "leftImg8bit" / SPLIT_DIRS[split]
        labels_dir = self.root / "gtFine" / SPLIT_DIRS[split]
        require_paths([images_dir, labels_dir], LAYOUT)
        images = sorted(images_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetLayoutError(f"no *_leftImg8bit.png images under {images_dir}/<city>/; expected:\n{LAYOUT}")
        samples = []
        for image in images:
            stem = image.name[: -len("_leftImg8bit.png")]
            label_dir = labels_dir / image.parent.name
            train_id_path = label_dir / f"{stem}_gtFine_labelTrainIds.png"
            if train_id_path.exists():
                samples.append((image, train_id_path, self.from_train_ids))
            else:
                label_id_path = label_dir / f"{stem}_gtFine_labelIds.png"
                require_paths([label_id_path], LAYOUT)
                samples.append((image, label_id_path, self.from_label_ids))
        return ImageLabelFiles(samples, transform)
