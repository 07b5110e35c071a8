"""Your own data set: a folder of images and masks, in mmsegmentation's, SegNet's or a VOC-style layout.

    data:
      class_path: pat_seg.data.SegmentationFolderDataModule
      init_args:
        root: data/my_set
        class_names: [background, road, car]
        size: [512, 512]

reads ``<root>/img_dir/{train,val,test}/<name>.jpg`` with ``<root>/ann_dir/{split}/<name>.png`` (the
layout of mmsegmentation's custom data set); ``image_dir``, ``mask_dir``, the suffixes, ``split_dirs``
and ``split_files`` describe other layouts (SegNet's CamVid: ``{split}`` and ``{split}annot``; VOC:
one folder of each and a list of names per split). Images and masks are paired by name (the file name
without its suffix, below the folder). Masks hold class indices (``mask_format: index``) or colours of
a ``palette`` (``rgb``), mapped by a fixed table (:mod:`pat_seg.data.masks`). Options, layouts and
errors: docs/datasets.md, "Your own folder of images and masks". ``pat-seg report`` names the data
set ``name``, else after its folder (``my_set``): :meth:`SegmentationFolderDataModule.data_set_name`.

Every problem with the files of a split a command uses -- a missing folder, an image without a mask
or a mask without an image, sizes that differ, a mask value that is neither a class nor void -- is a
:class:`~pat_seg.data.io.DatasetLayoutError` or :class:`~pat_seg.exceptions.ConfigurationError`
naming the file, raised in :meth:`SegmentationFolderDataModule.prepare_data`, which Lightning runs
before it creates the run's folder: a bad file stops ``pat-seg fit`` before anything is written.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pat_seg.arguments import check_choice
from pat_seg.data.base import Split
from pat_seg.data.disk import DiskDataModule, SampleTransform, SegmentationSamples
from pat_seg.data.io import DatasetLayoutError, check_same_size, image_size, read_rgb, require_paths
from pat_seg.data.masks import ColourMasks, IndexMasks, check_colours
from pat_seg.exceptions import ConfigurationError
from pat_seg.table_text import table_text_problem

SPLITS: tuple[str, ...] = get_args(Split)
# The splits each command reads (SegmentationDataModule.setup's, which runs after the run folder exists).
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
SHOWN_NAMES = 5  # file names an error lists before "..."
# A mask holds class values ("index": one channel, or a palette PNG read as its indices) or colours ("rgb").
MaskFormat = Literal["index", "rgb"]

MaskReader = IndexMasks | ColourMasks
# Last components of a root that name no folder of the data set's own (``root: .``, ``..``, ``~``).
UNNAMED = frozenset({"", ".", "..", "~"})


def root_name(root: str) -> str | None:
    """The last folder name of ``root`` as the config writes it, not resolved (``data/CamVid/`` ->
    ``CamVid``; ``C:\\data\\CamVid`` too), so the same data set on two machines has one name; None for
    a root that has none of its own (``.``, ``/``, ``~``, ``..``)."""
    last = PurePosixPath(root.replace("\\", "/")).name
    return None if last in UNNAMED else last


def checked_data_set_name(name: str | None, root: str) -> str | None:
    """The data set's name, ``name`` or else :func:`root_name`; a :class:`ConfigurationError` naming it
    when it cannot head a column of the report's tables (:func:`~pat_seg.table_text.table_text_problem`)."""
    text = name if name is not None else root_name(str(root))
    if text is None:
        return None
    problem = table_text_problem(text) if isinstance(text, str) else "it is not a string"
    if problem is None:
        return text
    what = f"name {text!r}" if name is not None else f"{text!r}, the last folder name of root {root!r},"
    raise ConfigurationError(
        f"{what} cannot name the data set in the report's tables: {problem}. Give name a text without "
        "control characters or a space at either end, e.g. name: my_set"
    )


def files_by_name(folder: Path, suffix: str, longer_suffix: str | None = None) -> dict[str, Path]:
    """Files under ``folder`` (recursively) whose names end with ``suffix``, by name: the path below
    ``folder`` without the suffix (``aachen/x_leftImg8bit.png`` -> ``aachen/x``).

    Hidden files and folders are skipped (macOS leaves ``._x.png`` beside every ``x.png`` it copies).
    ``longer_suffix`` (a suffix that ends with ``suffix``, of the other kind of file in the same
    folder, e.g. ``_mask.png`` beside ``.png`` images) marks files that are not of this kind.
    """
    found: dict[str, Path] = {}
    for directory, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in names:
            if name.startswith(".") or not name.endswith(suffix):
                continue
            if longer_suffix is not None and name.endswith(longer_suffix):
                continue
            path = Path(directory) / name
            found[path.relative_to(folder).as_posix()[: -len(suffix)]] = path
    return dict(sorted(found.items()))


def longer_suffix(mine: str, other: str, same_folder: bool) -> str | None:
    """``other`` when files of both kinds share a folder and ``other`` ends with ``mine`` (``_mask.png``
    and ``.png``): a name ending with it belongs to the other kind (:func:`files_by_name`)."""
    return other if same_folder and len(other) > len(mine) and other.endswith(mine) else None


def suffixes_in(folder: Path) -> str:
    """What ``folder`` holds, for an error that found none of the expected files: ``"367 .png files"``."""
    counts = Counter(Path(name).suffix or "(no suffix)" for _, _, names in os.walk(folder) for name in names)
    if not counts:
        return "it is empty"
    return "it holds " + ", ".join(f"{count} {suffix} files" for suffix, count in counts.most_common(3))


def listed_names(path: Path) -> list[str]:
    """The names a split list file holds: the first field of every line that is not blank or a ``#`` comment."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"cannot read split list {path}: {error}") from error
    names = [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise DatasetLayoutError(f"split list {path} names no images; expected one image name (no suffix) per line")
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ConfigurationError(f"split list {path} names {repeated[0]!r} {names.count(repeated[0])} times")
    return names


def shown(names: list[str]) -> str:
    """The first few of ``names``, for an error message."""
    return ", ".join(names[:SHOWN_NAMES]) + (", ..." if len(names) > SHOWN_NAMES else "")


class FolderSamples(SegmentationSamples):
    """One split of a folder data set: ``pairs`` of (image file, mask file), masks read by ``masks``.

    ``listing`` is the split list file the pairs were selected by (None: every pair of the folders).
    """

    def __init__(
        self, pairs: list[tuple[Path, Path]], masks: MaskReader, transform: SampleTransform, listing: Path | None = None
    ) -> None:
        super().__init__(transform)
        self.pairs = pairs
        self.masks = masks
        self.listing = listing

    def __len__(self) -> int:
        return len(self.pairs)

    def source_files(self) -> list[Path]:
        return [path for pair in self.pairs for path in pair]

    def image_files(self) -> list[Path]:
        return [image for image, _ in self.pairs]

    def load(self, index: int) -> tuple[Tensor, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_rgb(image_path)
        label = self.masks(mask_path)
        check_same_size(image.shape[-2:], label.shape, str(image_path), str(mask_path))
        return image, label

    def check(self, index: int) -> None:
        """What :meth:`load` would refuse in sample ``index``, found by decoding its mask and only the
        image's header: an unreadable file, a mask value outside the classes, different sizes."""
        image_path, mask_path = self.pairs[index]
        size = image_size(image_path)
        label = self.masks(mask_path)
        check_same_size(size, label.shape, str(image_path), str(mask_path))


class FileCheck(Dataset):
    """Sample ``i`` of ``samples`` checked (:meth:`FolderSamples.check`): ``""``, or the reason it is refused.

    The reason travels as a string: an exception raised in a loader worker reaches the main process
    wrapped in the worker's traceback text, which would not make a short error.
    """

    def __init__(self, samples: FolderSamples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> str:
        try:
            self.samples.check(index)
        except ConfigurationError as error:
            return str(error)
        return ""


def as_list(messages: list[str]) -> list[str]:
    """Collate function of :class:`FileCheck` batches: the messages as they are."""
    return messages


class SegmentationFolderDataModule(DiskDataModule):
    """Images and masks from folders you describe; any number of classes (docs/datasets.md).

    Args:
        root: the data set's folder; every other path is relative to it.
        name: the data set's name in ``pat-seg report``'s tables (None: the last folder name of
            ``root``, ``data/CamVid`` -> ``CamVid``): runs on data sets of different names are never
            pooled (:meth:`data_set_name`). No control character or space at either end, which no
            table can show (:func:`~pat_seg.table_text.table_text_problem`); the report escapes the rest.
        class_names: one name per class, in class-index order; ``num_classes`` is their number. Each
            heads a column of the report's per-class tables: no control character or space at either end.
        size: ``(height, width)`` of every sample (the protocol size; evaluation resizes to it).
        image_dir: folder of a split's images; ``{split}`` is replaced by the split's folder name
            (``split_dirs``). mmsegmentation: ``img_dir/{split}``; SegNet's CamVid: ``{split}``.
        mask_dir: folder of a split's masks, as ``image_dir``. mmsegmentation: ``ann_dir/{split}``;
            SegNet's CamVid: ``{split}annot``.
        split_dirs: folder name of each split, ``{"train": ..., "val": ..., "test": ...}``; a split left
            out keeps its own name (``{"test": "val"}`` tests on the validation folder).
        split_files: a list file per split (relative to ``root``, ``{split}`` allowed) naming the
            split's images without suffix, one per line, like VOC's ``ImageSets/Segmentation/train.txt``;
            then ``image_dir`` and ``mask_dir`` need no ``{split}``, and a split without a list is
            not configured. None: a split is every image of its folder.
        image_suffix: how image file names end (``.jpg``, ``.png``, ``_sat.jpg``).
        mask_suffix: how mask file names end (``.png``, ``_mask.png``); the same name with it is the
            image's mask.
        mask_format: ``"index"``: single-channel masks of class values (palette-mode PNGs are read as
            their indices); ``"rgb"``: colour masks, each colour a class of ``palette``.
        palette: one ``[r, g, b]`` per class, in class order (``"rgb"`` only, and required there).
        void_values: index-mask values that are ignored (e.g. CamVid's 11, "Unlabelled"); the value
            ``ignore_index`` is always ignored.
        void_colors: colours of ignored pixels in ``"rgb"`` masks (e.g. ``[[0, 0, 0]]``).
        reduce_zero_label: mmsegmentation's: value 0 is ignored and value ``v`` is class ``v - 1``
            (for masks whose 0 is "unlabelled"); ``"index"`` only.
        ignore_index: class value of ignored pixels (and of padding); must not be a class index.
        check_files: before a command starts, pair every image of the splits it uses with its mask,
            read each image's header and decode each mask once, so that a bad file stops it before
            anything is written, not in the middle of an epoch (splits read from ``pat-seg prepare``'s
            arrays, checked when prepared, are skipped).
        settings: ``augment``, ``scale_range``, ``prepared``, ``prepared_dir`` and the loader settings
            (``batch_size``, ``num_workers``, ...) of :class:`~pat_seg.data.disk.DiskDataModule`.
    """

    def __init__(
        self,
        root: str,
        class_names: list[str],
        size: tuple[int, int],
        name: str | None = None,
        image_dir: str = "img_dir/{split}",
        mask_dir: str = "ann_dir/{split}",
        split_dirs: dict[str, str] | None = None,
        split_files: dict[str, str] | None = None,
        image_suffix: str = ".jpg",
        mask_suffix: str = ".png",
        mask_format: MaskFormat = "index",
        palette: list[list[int]] | None = None,
        void_values: list[int] | None = None,
        void_colors: list[list[int]] | None = None,
        reduce_zero_label: bool = False,
        ignore_index: int = 255,
        check_files: bool = True,
        **settings: Any,
    ) -> None:
        super().__init__(root, size, **settings)
        self.name = checked_data_set_name(name, root)  # LightningDataModule's attribute for it
        if len(class_names) < 2 or not all(isinstance(name, str) and name for name in class_names):
            raise ConfigurationError(f"class_names must name at least 2 classes; got {class_names!r}")
        for index, class_name in enumerate(class_names):  # each heads a column of the report's per-class tables
            if (problem := table_text_problem(class_name)) is not None:
                raise ConfigurationError(
                    f"class_names[{index}] {class_name!r} cannot name a class in the report's tables: {problem}"
                )
        repeated = [name for name, count in Counter(class_names).items() if count > 1]
        if repeated:
            raise ConfigurationError(f"class_names lists {repeated[0]!r} twice; each class needs a name of its own")
        self.set_classes(list(class_names), ignore_index)
        check_choice("mask_format", mask_format, MaskFormat)
        for name, value in (("image_suffix", image_suffix), ("mask_suffix", mask_suffix)):
            if not value:
                raise ConfigurationError(f"{name} must not be empty; it is how file names end, e.g. '.png'")
        if image_dir == mask_dir and image_suffix == mask_suffix:
            raise ConfigurationError(
                f"images and masks are both '{image_dir}/<name>{image_suffix}'; give masks another "
                "folder (mask_dir) or suffix (mask_suffix, e.g. '_mask.png')"
            )
        self.image_dir, self.mask_dir = image_dir, mask_dir
        self.image_suffix, self.mask_suffix = image_suffix, mask_suffix
        unknown = sorted(set(split_dirs or {}) - set(SPLITS)) + sorted(set(split_files or {}) - set(SPLITS))
        if unknown:
            raise ConfigurationError(f"split {unknown[0]!r} is not one of train, val, test (split_dirs, split_files)")
        self.split_dirs = {split: (split_dirs or {}).get(split, split) for split in SPLITS}
        self.split_files = dict(split_files) if split_files is not None else None
        if self.split_files is None:
            for name, template in (("image_dir", image_dir), ("mask_dir", mask_dir)):
                if "{split}" not in template:
                    raise ConfigurationError(
                        f"{name} {template!r} has no {{split}}: every split would read the same folder; put "
                        "{split} where the split's folder name goes, or give split_files"
                    )
        self.mask_format = mask_format
        self.reduce_zero_label = reduce_zero_label
        self.void_values = sorted(set(void_values or []))
        self.palette = check_colours(palette, "palette") if palette is not None else None
        self.void_colors = check_colours(void_colors or [], "void_colors")
        self.masks = self._mask_reader()
        self.check_files = check_files
        require_paths([self.root], self.layout())
        self._pairs: dict[str, tuple[list[tuple[Path, Path]], Path | None]] = {}
        self._checked: set[str] = set()

    def _mask_reader(self) -> MaskReader:
        """The mask table of the configured format, after the checks the options need between them."""
        if self.mask_format == "index":
            for name, given in (("palette", self.palette), ("void_colors", self.void_colors)):
                if given:
                    raise ConfigurationError(
                        f"{name} is for mask_format: rgb; index masks hold class values (use void_values)"
                    )
            return IndexMasks.build(self.class_names, self.void_values, self.reduce_zero_label, self.ignore_index)
        if self.palette is None:
            raise ConfigurationError(
                f"mask_format rgb needs a palette: one [r, g, b] per class, {self.num_classes} in class order"
            )
        if len(self.palette) != self.num_classes:
            raise ConfigurationError(
                f"palette has {len(self.palette)} colours for {self.num_classes} class_names; give one [r, g, b] per class"
            )
        if self.void_values or self.reduce_zero_label:
            option = "void_values" if self.void_values else "reduce_zero_label"
            raise ConfigurationError(f"{option} is for mask_format: index; colour masks use void_colors")
        return ColourMasks.build(self.class_names, self.palette, self.void_colors, self.ignore_index)

    @classmethod
    def data_set_name(cls, init_args: Mapping[str, Any]) -> str | None:
        """The report's name of a run's data set: ``name``, else the last folder name of ``root`` as the
        config gives it (:func:`root_name`), so the same folder on two machines pools and two folders
        do not; None (the class's label, ``SegmentationFolder``) for a root without one (``.``) or a
        name that cannot stand in a table (a config saved before names were checked)."""
        name, root = init_args.get("name"), init_args.get("root")
        if name is None and isinstance(root, str):
            name = root_name(root)
        return name if isinstance(name, str) and table_text_problem(name) is None else None

    # --- layout ----------------------------------------------------------------------------------
    def layout(self) -> str:
        """The configured layout, for errors about missing files."""
        splits = ", ".join(f"{s} -> {d}" for s, d in self.split_dirs.items())
        lines = [
            f"  <root>/{self.image_dir}/<name>{self.image_suffix}",
            f"  <root>/{self.mask_dir}/<name>{self.mask_suffix}",
        ]
        if self.split_files is not None:
            lines += [f"  <root>/{path}   (names of the {split!r} split)" for split, path in self.split_files.items()]
        return "\n".join([*lines, f"with {{split}}: {splits}"])

    def split_path(self, template: str, split: str) -> Path:
        """``root / template`` with ``{split}`` replaced by ``split``'s folder name."""
        return self.root / template.replace("{split}", self.split_dirs[split])

    def pairs(self, split: str) -> tuple[list[tuple[Path, Path]], Path | None]:
        """The (image, mask) files of ``split`` and its list file; a named error for a missing folder
        or list, an image without a mask, a mask without an image, or no image at all."""
        check_choice("split", split, Split)
        if split not in self._pairs:
            self._pairs[split] = self._find_pairs(split)
        return self._pairs[split]

    def _find_pairs(self, split: str) -> tuple[list[tuple[Path, Path]], Path | None]:
        image_dir, mask_dir = self.split_path(self.image_dir, split), self.split_path(self.mask_dir, split)
        listing = None
        if self.split_files is not None:
            if split not in self.split_files:
                raise DatasetLayoutError(
                    f"the {split!r} split is not configured: split_files lists only "
                    f"{', '.join(self.split_files) or 'none'}"
                )
            listing = self.split_path(self.split_files[split], split)
        for path in (listing, image_dir, mask_dir):
            if path is not None and not path.exists():
                raise DatasetLayoutError(f"the {split!r} split: {path} does not exist; expected:\n{self.layout()}")
        # Images and masks in one folder: a name ending with the other kind's longer suffix is not ours.
        same_folder = image_dir.resolve() == mask_dir.resolve()
        images = files_by_name(
            image_dir, self.image_suffix, longer_suffix(self.image_suffix, self.mask_suffix, same_folder)
        )
        masks = files_by_name(
            mask_dir, self.mask_suffix, longer_suffix(self.mask_suffix, self.image_suffix, same_folder)
        )
        mask_file = f"{mask_dir}/<name>{self.mask_suffix}"
        image_file = f"{image_dir}/<name>{self.image_suffix}"
        problems = []
        if listing is not None:
            names = listed_names(listing)
            for kind, found, pattern in (("image", images, image_file), ("mask", masks, mask_file)):
                missing = [name for name in names if name not in found]
                if missing:
                    problems.append(
                        f"{len(missing)} of {len(names)} names in {listing} have no {kind} {pattern}: {shown(missing)}"
                    )
        else:
            if not images:
                raise DatasetLayoutError(
                    f"the {split!r} split is empty: no *{self.image_suffix} images in {image_dir} "
                    f"({suffixes_in(image_dir)}); set image_suffix to how its image names end"
                )
            names = list(images)
            unmasked = [name + self.image_suffix for name in images if name not in masks]
            if unmasked:
                problems.append(f"{len(unmasked)} of {len(names)} images have no mask {mask_file}: {shown(unmasked)}")
            orphans = [name + self.mask_suffix for name in masks if name not in images]
            if orphans:
                problems.append(f"{len(orphans)} of {len(masks)} masks have no image {image_file}: {shown(orphans)}")
        if problems:
            raise DatasetLayoutError(f"the {split!r} split: " + "\n".join(problems))
        return [(images[name], masks[name]) for name in names], listing

    # --- the DiskDataModule hooks ------------------------------------------------------------------
    def build_samples(self, split: str, transform: SampleTransform) -> FolderSamples:
        pairs, listing = self.pairs(split)
        return FolderSamples(pairs, self.masks, transform, listing)

    def protocol_options(self) -> dict[str, Any]:
        # Everything that changes a split's files or its labels (JSON types: a prepared split's manifest
        # stores them and is compared with these).
        return {
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "image_dir": self.image_dir,
            "mask_dir": self.mask_dir,
            "split_dirs": dict(self.split_dirs),
            "split_files": self.split_files,
            "image_suffix": self.image_suffix,
            "mask_suffix": self.mask_suffix,
            "mask_format": self.mask_format,
            "palette": [list(colour) for colour in self.palette] if self.palette is not None else None,
            "void_values": list(self.void_values),
            "void_colors": [list(colour) for colour in self.void_colors],
            "reduce_zero_label": self.reduce_zero_label,
        }

    def source_files(self, samples: SegmentationSamples) -> list[Path]:
        # A split list selects the samples: a prepared split made from another list is stale.
        listing = getattr(samples, "listing", None)
        return samples.source_files() + ([listing] if listing is not None else [])

    # --- checks before a command starts ---------------------------------------------------------------
    def prepare_data(self) -> None:
        """Check the splits the running command uses (:meth:`check_splits`). Lightning calls this before
        it creates the loggers' run folder (``setup`` comes after), so a bad file leaves no trace."""
        trainer = self.trainer
        stage = getattr(getattr(trainer, "state", None), "fn", None)
        if stage is not None and str(stage.value) in STAGE_SPLITS:
            self.check_splits(list(STAGE_SPLITS[str(stage.value)]))

    def check_splits(self, splits: list[str]) -> None:
        """Pair the files of ``splits`` and, with ``check_files``, check every pair once (:meth:`FolderSamples.check`,
        in ``num_workers`` loader workers); the first problem as a :class:`ConfigurationError`."""
        for split in splits:
            if split in self._checked:
                continue
            samples = self.build_samples(split, self.sample_transform(split))
            if self.check_files and self.prepared_manifest(split, samples) is None:
                loader = DataLoader(FileCheck(samples), batch_size=16, num_workers=self.num_workers, collate_fn=as_list)
                for messages in loader:
                    problem = next((message for message in messages if message), None)
                    if problem is not None:
                        raise ConfigurationError(f"the {split!r} split: {problem}")
            self._checked.add(split)
