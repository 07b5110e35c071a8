"""Oxford-IIIT Pet (Parkhi et al., CVPR 2012) trimaps, from the official tree or torchvision's copy.

Trimap pixel values are mapped by a FIXED table (docs/datasets.md): 1 pet -> 0, 2 background -> 1,
3 border -> 2. Mapping by rank (``np.unique``) would silently swap classes in an image missing one
of the values, so any other value is an error. Splits: ``annotations/trainval.txt`` and
``annotations/test.txt``; the validation split is carved from trainval at random with ``split_seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pat_seg.arguments import OpenUnitInterval, check_number
from pat_seg.data.disk import DiskDataModule, ImageLabelFiles, SampleTransform, seeded_split
from pat_seg.data.io import DatasetLayoutError, LabelTable, require_paths

CLASS_NAMES = ["pet", "background", "border"]
TRIMAP_TO_CLASS = {1: 0, 2: 1, 3: 2}
LAYOUT = """\
  <root>/images/<name>.jpg
  <root>/annotations/trimaps/<name>.png          (1 pet, 2 background, 3 border)
  <root>/annotations/trainval.txt, test.txt      (lines "<name> <class id> <species> <breed id>")
or the same under <root>/oxford-iiit-pet/ (torchvision.datasets.OxfordIIITPet's download).
(images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/)"""


def read_split_file(path: Path) -> list[str]:
    """Image names of a split list: the first field of every non-empty, non-comment line."""
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise DatasetLayoutError(f"{path} lists no images; expected lines '<name> <class id> <species> <breed id>'")
    return names


class OxfordPetDataModule(DiskDataModule):
    """Oxford-IIIT Pet foreground/background/border segmentation, 3 classes.

    Args:
        root: directory holding ``images/`` and ``annotations/`` (or ``oxford-iiit-pet/`` holding them).
        size: ``(height, width)``; images are resized (not cropped) to it for evaluation, 256x256 in
            the paper.
        val_fraction: share of trainval held out for validation.
        split_seed: seed of that hold-out (independent of the loaders' ``seed``).
        ignore_index: fill value of padded mask pixels (no trimap pixel is ignored).
        settings: ``augment``, ``scale_range`` and the loader settings of
            :class:`~pat_seg.data.disk.DiskDataModule`.
    """

    label = "Oxford Pet"  # its name in the report's tables

    def __init__(
        self,
        root: str,
        size: tuple[int, int] = (256, 256),
        val_fraction: OpenUnitInterval = 0.1,
        split_seed: int = 0,
        ignore_index: int = 255,
        **settings: Any,
    ) -> None:
        super().__init__(root, size, **settings)
        self.val_fraction = check_number("val_fraction", val_fraction, above=0, below=1)
        self.set_classes(CLASS_NAMES, ignore_index)
        self.split_seed = split_seed
        self.labels = LabelTable.from_mapping(TRIMAP_TO_CLASS, 0, 255, "Oxford-IIIT Pet trimaps hold 1, 2 and 3")
        nested = self.root / "oxford-iiit-pet"
        self.data_dir = nested if nested.is_dir() else self.root
        annotations = self.data_dir / "annotations"
        require_paths(
            [
                self.root,
                self.data_dir / "images",
                annotations / "trimaps",
                annotations / "trainval.txt",
                annotations / "test.txt",
            ],
            LAYOUT,
        )

    def protocol_options(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction, "split_seed": self.split_seed}

    def split_names(self, split: str) -> list[str]:
        """Image names of ``split``: test.txt, or trainval.txt minus / restricted to the held-out part."""
        annotations = self.data_dir / "annotations"
        if split == "test":
            return read_split_file(annotations / "test.txt")
        names = read_split_file(annotations / "trainval.txt")
        train, val = seeded_split(len(names), [1 - self.val_fraction, self.val_fraction], self.split_seed)
        return [names[i] for i in (train if split == "train" else val)]

    def build_samples(self, split: str, transform: SampleTransform) -> ImageLabelFiles:
        samples = []
        for name in self.split_names(split):
            image = self.data_dir / "images" / f"{name}.jpg"
            trimap = self.data_dir / "annotations" / "trimaps" / f"{name}.png"
            require_paths([image, trimap], LAYOUT)
            samples.append((image, trimap, self.labels))
        return ImageLabelFiles(samples, transform)
