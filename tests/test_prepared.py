"""Prepared splits (``pat-seg prepare``) on tiny generated data sets in each publisher's layout.

The reference is always the same data module reading its source files (``prepared="off"``), which
tests/test_data_*.py check against hand-written label tables; the class statistics are recomputed
here with numpy from those source-read targets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from data_batches import model_samples
from test_data_cityscapes import write_cityscapes
from test_data_folder import CLASSES, SEGNET, write_segnet, write_split
from test_data_nyuv2 import write_mat, write_npy
from test_data_oxford_pet import write_pet
from test_resume import REPO

from pat_seg.cli.prepare import prepare
from pat_seg.data import CityscapesDataModule, NYUv2DataModule, OxfordPetDataModule, SegmentationFolderDataModule
from pat_seg.data.batch_augment import augment_batch
from pat_seg.data.disk import PreparedSamples
from pat_seg.data.prepared import MANIFEST, TEMPORARY_PREFIX, PreparedSplitError
from pat_seg.losses import CrossEntropyLoss
from pat_seg.models import UNet
from pat_seg.module import SegmentationModule

SPLITS = ("train", "val", "test")
PALETTE = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]


# (writer of the publisher's layout, data module, its protocol options) per protocol; sizes are the fixtures' own.
PUBLISHERS: dict[str, tuple[Callable[[Path], Any], type, dict[str, Any]]] = {
    "cityscapes": (
        lambda root: write_cityscapes(root, train=4, val=2),
        CityscapesDataModule,
        {"void_as_class": True, "size": (8, 16)},
    ),
    "cityscapes_resized": (lambda root: write_cityscapes(root, train=4, val=2), CityscapesDataModule, {"size": (5, 7)}),
    "nyuv2_npy_13": (write_npy, NYUv2DataModule, {"layout": "npy", "num_classes": 13, "size": (6, 8)}),
    "nyuv2_npy_14_paper": (
        lambda root: write_npy(root, train=8, val=2),
        NYUv2DataModule,
        {"layout": "npy", "num_classes": 14, "size": (4, 5)},
    ),
    "nyuv2_mat_40": (write_mat, NYUv2DataModule, {"layout": "mat", "num_classes": 40, "size": (6, 8)}),
    "oxford_pet": (write_pet, OxfordPetDataModule, {"size": (7, 9)}),
    # Your own folders: SegNet's layout with a void value, and colour masks with a palette.
    "folder_index": (
        lambda root: write_segnet(root, [0, 1, 2, 3]),
        SegmentationFolderDataModule,
        {**SEGNET, "class_names": CLASSES, "void_values": [3], "size": (9, 11)},
    ),
    "folder_rgb": (
        lambda root: write_colour_masks(root),
        SegmentationFolderDataModule,
        {**SEGNET, "class_names": CLASSES, "mask_format": "rgb", "palette": PALETTE, "size": (9, 11)},
    ),
}


def write_colour_masks(root: Path) -> None:
    """SegNet's layout with colour masks: each pixel one of the PALETTE colours (every colour in every mask)."""
    rng = np.random.default_rng(4)
    colours = np.array(PALETTE, dtype=np.uint8)
    for seed, (split, count) in enumerate({"train": 6, "val": 3, "test": 2}.items()):
        masks = {}
        for i in range(count):
            index = rng.integers(0, len(PALETTE), (12, 16))
            index.flat[: len(PALETTE)] = range(len(PALETTE))
            masks[f"{split}_{i:03d}"] = colours[index]
        write_split(root / split, root / f"{split}annot", masks, seed=seed)


def publisher_module(publisher: str, root: Path, **kwargs: Any) -> Any:
    """The data module of ``publisher``'s protocol on ``root``: unaugmented, batches of 2, unless ``kwargs`` say otherwise."""
    _, cls, options = PUBLISHERS[publisher]
    return cls(str(root), **{**options, "augment": False, "batch_size": 2, **kwargs})


def cityscapes(root: Path, **kwargs: Any) -> CityscapesDataModule:
    return publisher_module("cityscapes", root, **kwargs)


def numpy_statistics(targets: list[np.ndarray], num_classes: int, ignore_index: int) -> tuple[list[int], list[int]]:
    """Pixels per class and images containing each class, by numpy over the source-read targets."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    presence = np.zeros(num_classes, dtype=np.int64)
    for target in targets:
        labels = target[target != ignore_index]
        pixels += np.bincount(labels, minlength=num_classes)
        presence[np.unique(labels)] += 1
    return pixels.tolist(), presence.tolist()


def folder_of(datamodule: Any, split: str) -> Path:
    """Where ``split`` of ``datamodule`` is prepared."""
    return datamodule.split_request(split, datamodule.build_samples(split, datamodule.sample_transform(split))).folder


def manifest_of(datamodule: Any, split: str) -> dict[str, Any]:
    return json.loads((folder_of(datamodule, split) / MANIFEST).read_text())


@pytest.mark.parametrize("publisher", sorted(PUBLISHERS))
def test_prepared_split_gives_the_bits_statistics_and_batches_of_the_sources(tmp_path: Path, publisher: str) -> None:
    PUBLISHERS[publisher][0](tmp_path)
    # Two worker processes for one protocol (the pool path), this process for the others.
    prepare(publisher_module(publisher, tmp_path), list(SPLITS), workers=2 if publisher == "cityscapes" else 1)
    sources = publisher_module(publisher, tmp_path, prepared="off")
    prepared = publisher_module(publisher, tmp_path, prepared="require")
    for split in SPLITS:
        assert isinstance(prepared.dataset(split), PreparedSamples)
        assert not isinstance(sources.dataset(split), PreparedSamples)
        expected, actual = model_samples(sources, split), model_samples(prepared, split)
        assert len(actual) == len(expected)
        for want, got in zip(expected, actual):
            assert got["image"].dtype == want["image"].dtype == torch.float32
            assert got["target"].dtype == want["target"].dtype == torch.long
            assert torch.equal(got["image"], want["image"]) and torch.equal(got["target"], want["target"])
            assert got["index"] == want["index"]
        stored = prepared.dataset(split)[0]  # what the loader moves: the stored dtypes
        assert stored["target"].dtype == torch.uint8 and stored["image"].dtype in (torch.uint8, torch.float32)
        statistics = manifest_of(prepared, split)["class_statistics"]
        pixels, presence = numpy_statistics(
            [s["target"].numpy() for s in expected], sources.num_classes, sources.ignore_index
        )
        assert statistics["pixels"] == pixels and statistics["images_containing"] == presence
    first_expected = sources.on_after_batch_transfer(next(iter(sources.train_dataloader())), 0)
    first_actual = prepared.on_after_batch_transfer(next(iter(prepared.train_dataloader())), 0)
    assert torch.equal(first_actual["index"], first_expected["index"])
    assert torch.equal(first_actual["image"], first_expected["image"])
    assert torch.equal(first_actual["target"], first_expected["target"])


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
@pytest.mark.parametrize("publisher", sorted(PUBLISHERS))
def test_loaders_give_the_same_batches_from_the_sources_and_a_prepared_split(
    tmp_path: Path, publisher: str, augment: bool
) -> None:
    """A plain loop over the loaders sees one contract (pat_seg/data/base.py) on either path: the stored
    dtypes, bit-identical batches (augmentation parameters included: one seeded loader worker each),
    and bit-identical float32 / long batches after the transfer hook."""
    PUBLISHERS[publisher][0](tmp_path)
    settings = {"augment": augment, "scale_range": (0.5, 1.5), "num_workers": 1, "seed": 3}
    prepare(publisher_module(publisher, tmp_path, **settings), ["train", "val"], workers=1)
    sources = publisher_module(publisher, tmp_path, prepared="off", **settings)
    prepared = publisher_module(publisher, tmp_path, prepared="require", **settings)
    assert isinstance(prepared.dataset("train"), PreparedSamples) and not isinstance(
        sources.dataset("train"), PreparedSamples
    )
    float_files = publisher.startswith("nyuv2_npy")  # MTAN's tree holds float32 images in [0, 1]
    height, width = sources.size
    for loader in ("train_dataloader", "val_dataloader"):
        expected, actual = list(getattr(sources, loader)()), list(getattr(prepared, loader)())
        assert len(actual) == len(expected) > 0
        for want, got in zip(expected, actual):
            augmented = augment and loader == "train_dataloader"
            assert set(got) == set(want) == {"image", "target", "index"} | ({"augment"} if augmented else set())
            for key in want:
                assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), (loader, key)
            assert want["image"].dtype == (torch.float32 if float_files else torch.uint8)
            assert want["target"].dtype == torch.uint8
            # An augmented split travels at its stored size, 1.5 times the protocol size here.
            stored = (round(1.5 * height), round(1.5 * width)) if augmented else (height, width)
            assert tuple(want["image"].shape[-2:]) == stored
            model_want = sources.on_after_batch_transfer(dict(want), 0)
            model_got = prepared.on_after_batch_transfer(dict(got), 0)
            assert model_want["image"].dtype == model_got["image"].dtype == torch.float32
            assert model_want["target"].dtype == model_got["target"].dtype == torch.long
            assert model_want["image"].shape == (len(want["index"]), 3, height, width)
            assert torch.equal(model_got["image"], model_want["image"])
            assert torch.equal(model_got["target"], model_want["target"])
            if not augmented:  # the conversion alone: x / 255 for uint8 (to float32 rounding), the same labels
                pixels = want["image"] if float_files else (want["image"].double() / 255).float()
                torch.testing.assert_close(model_want["image"], pixels, rtol=0, atol=1e-7)
                assert torch.equal(model_want["target"], want["target"].long())


def test_the_model_summary_counts_on_a_float32_image_of_a_prepared_split(tmp_path: Path) -> None:
    """Lightning's model summary runs the network on ``example_input_array``; with a prepared split's
    uint8 validation image as that input, the first convolution failed (Byte input, Float weights)."""
    write_cityscapes(tmp_path, train=4, val=2)
    prepare(cityscapes(tmp_path), list(SPLITS), workers=1)
    datamodule = cityscapes(tmp_path, prepared="require")
    module = SegmentationModule(UNet(num_classes=20, base_channels=4, depth=1), CrossEntropyLoss(), num_classes=20)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=True,
    )
    trainer.fit(module, datamodule=datamodule)
    assert (
        isinstance(datamodule.dataset("val"), PreparedSamples)
        and datamodule.dataset("val")[0]["image"].dtype == torch.uint8
    )
    example = module.example_input_array
    assert isinstance(example, torch.Tensor) and example.dtype == torch.float32 and example.shape == (1, 3, 8, 16)
    assert trainer.global_step == 1


def test_class_statistics_come_from_the_manifest_without_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    expected = cityscapes(tmp_path, prepared="off").class_statistics  # scans the sources (and caches)
    prepare(cityscapes(tmp_path), ["train"], workers=1)
    cityscapes(tmp_path).class_counts_cache_file().unlink()

    def no_scan(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the training split was scanned")

    monkeypatch.setattr("pat_seg.data.base.class_statistics", no_scan)
    prepared = cityscapes(tmp_path, prepared="require")
    assert prepared.class_statistics == expected
    assert prepared.class_counts == expected.pixels and prepared.class_presence == expected.presence


def test_augmented_training_split_is_stored_at_the_largest_scale(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=4, val=2)

    def make(**kwargs: Any) -> CityscapesDataModule:
        return CityscapesDataModule(str(tmp_path), size=(4, 8), augment=True, scale_range=(0.5, 1.5), **kwargs)

    prepare(make(), ["train", "val"], workers=1)
    datamodule = make(prepared="require")
    train = manifest_of(datamodule, "train")
    assert train["image"]["shape"] == [3, 6, 12] and train["label"]["shape"] == [6, 12]
    assert train["class_statistics"]["size"] == [4, 8]  # statistics at the protocol size, as class_counts
    assert train["class_statistics"]["pixels"] == make(prepared="off").class_counts
    torch.manual_seed(0)
    sample = model_samples(datamodule, "train")[0]  # random scale, crop and flip, back at the protocol size
    assert sample["image"].shape == (3, 4, 8) and sample["target"].shape == (4, 8)
    for want, got in zip(
        model_samples(make(prepared="off"), "val"), model_samples(datamodule, "val")
    ):  # evaluation: exact
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["target"], want["target"])


def test_protocol_change_falls_back_in_auto_and_is_named_in_require(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    prepare(cityscapes(tmp_path), ["train"], workers=1)
    other_size = CityscapesDataModule(str(tmp_path), void_as_class=True, size=(4, 8), augment=False)
    assert not isinstance(other_size.dataset("train"), PreparedSamples)
    with pytest.raises(PreparedSplitError, match=r"size \[8, 16\] \(this run: \[4, 8\]\)") as error:
        CityscapesDataModule(str(tmp_path), void_as_class=True, size=(4, 8), augment=False, prepared="require").dataset(
            "train"
        )
    assert "pat-seg prepare" in str(error.value)
    with pytest.raises(PreparedSplitError, match=r"void_as_class True \(this run: False\)"):
        CityscapesDataModule(str(tmp_path), size=(8, 16), augment=False, prepared="require").dataset("train")


def test_changed_source_file_makes_the_split_stale(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    prepare(cityscapes(tmp_path), ["train"], workers=1)
    image = sorted((tmp_path / "leftImg8bit" / "train").glob("*/*.png"))[1]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the same bytes, touched
    with pytest.raises(PreparedSplitError, match=f"stale: source file .*{image.name}"):
        cityscapes(tmp_path, prepared="require").dataset("train")
    assert not isinstance(cityscapes(tmp_path).dataset("train"), PreparedSamples)  # auto: the sources


def test_corrupted_chunk_is_a_named_error_even_after_a_passing_check(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    prepare(cityscapes(tmp_path), ["train"], workers=1)
    cityscapes(tmp_path, prepared="require").dataset("train")  # passes, and records the chunk as verified
    folder = folder_of(cityscapes(tmp_path), "train")
    chunk = folder / manifest_of(cityscapes(tmp_path), "train")["chunks"][0]["images"]
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF  # one pixel of the last image
    chunk.write_bytes(bytes(data))
    with pytest.raises(PreparedSplitError, match=f"{chunk.name} fails its SHA-256 checksum"):
        cityscapes(tmp_path, prepared="require").dataset("train")


KILLED_BUILD = """
import os, signal, sys
from pat_seg.data import CityscapesDataModule
from pat_seg.data.disk import ImageLabelFiles
from pat_seg.cli.prepare import prepare

load = ImageLabelFiles.load
def load_then_die(self, index):
    if index == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a build killed midway: two samples written
    return load(self, index)
ImageLabelFiles.load = load_then_die
prepare(CityscapesDataModule(sys.argv[1], void_as_class=True, size=(8, 16), augment=False), ["train"], workers=1)
"""


def test_killed_build_is_never_read_and_the_next_build_replaces_it(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path)], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = list((tmp_path / ".pat_seg" / "prepared").glob(f"*/{TEMPORARY_PREFIX}train-*"))
    assert len(left) == 1 and not (left[0] / MANIFEST).exists()
    assert not isinstance(cityscapes(tmp_path).dataset("train"), PreparedSamples)
    with pytest.raises(PreparedSplitError, match="no prepared 'train' split"):
        cityscapes(tmp_path, prepared="require").dataset("train")
    prepare(cityscapes(tmp_path), ["train"], workers=1)
    assert not left[0].exists()  # the dead build's folder is removed
    expected = model_samples(cityscapes(tmp_path, prepared="off"), "train")
    for want, got in zip(expected, model_samples(cityscapes(tmp_path, prepared="require"), "train")):
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["target"], want["target"])


def test_prepared_split_is_kept_when_up_to_date(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    first = prepare(cityscapes(tmp_path), ["train"], workers=1)
    assert first["train"].startswith("prepared in")
    assert prepare(cityscapes(tmp_path), ["train"], workers=1)["train"].startswith("up to date")


def test_read_only_prepared_dir_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    monkeypatch.setattr("pat_seg.data.disk.os.access", lambda path, mode: False)  # root may write anywhere
    with pytest.raises(ValueError, match=r"read-only\); give a writable folder with --data.prepared_dir DIR"):
        prepare(cityscapes(tmp_path), ["train"], workers=1)


def test_prepared_dir_elsewhere_and_bad_options(tmp_path: Path) -> None:
    write_cityscapes(tmp_path / "data", train=4, val=2)
    elsewhere = tmp_path / "prepared"
    prepare(cityscapes(tmp_path / "data", prepared_dir=str(elsewhere)), ["val"], workers=1)
    assert list(elsewhere.glob(f"*/val/{MANIFEST}")) and not (tmp_path / "data" / ".pat_seg" / "prepared").exists()
    assert isinstance(
        cityscapes(tmp_path / "data", prepared="require", prepared_dir=str(elsewhere)).dataset("val"), PreparedSamples
    )
    with pytest.raises(ValueError, match="prepared must be one of 'auto', 'off', 'require'; got 'yes'"):
        cityscapes(tmp_path / "data", prepared="yes")
    with pytest.raises(ValueError, match="--splits must name some of train, val, test"):
        prepare(cityscapes(tmp_path / "data"), ["training"], workers=1)


def test_synthetic_data_needs_no_preparing() -> None:
    from pat_seg.data import SyntheticLongTailDataModule

    with pytest.raises(ValueError, match="SyntheticLongTailDataModule is not read from files"):
        prepare(SyntheticLongTailDataModule(), ["train"], workers=1)


def test_on_device_augmentation_draws_windows_and_flips_of_the_stored_image(tmp_path: Path) -> None:
    """Scale fixed at 2: the stored 8x16 image is the scaled one, so every 4x8 sample is a window of it
    (or of its mirror image), exactly; the windows and flips vary from sample to sample."""
    write_cityscapes(tmp_path, train=4, val=2)

    def make(**kwargs: Any) -> CityscapesDataModule:
        return CityscapesDataModule(
            str(tmp_path), size=(4, 8), augment=True, scale_range=(2.0, 2.0), batch_size=4, **kwargs
        )

    prepare(make(), ["train"], workers=1)
    stored = CityscapesDataModule(str(tmp_path), size=(8, 16), augment=False, prepared="off")
    full = model_samples(stored, "train")
    datamodule = make(prepared="require")
    torch.manual_seed(0)
    seen_windows, seen_flips = set(), set()
    for _ in range(8):
        batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
        assert batch["image"].shape == (4, 3, 4, 8) and batch["target"].shape == (4, 4, 8) and "augment" not in batch
        assert batch["image"].dtype == torch.float32 and batch["target"].dtype == torch.long
        for image, target, index in zip(batch["image"], batch["target"], batch["index"].tolist()):
            matches = [
                (top, left, flip)
                for flip in (False, True)
                for top in range(5)
                for left in range(9)
                if torch.equal(
                    target,
                    (full[index]["target"].flip(-1) if flip else full[index]["target"])[top : top + 4, left : left + 8],
                )
                and torch.allclose(
                    image,
                    (full[index]["image"].flip(-1) if flip else full[index]["image"])[
                        :, top : top + 4, left : left + 8
                    ],
                    atol=1e-6,
                )
            ]
            assert matches, f"sample {index} is no window of its stored image"
            seen_windows.add(matches[0][:2])
            seen_flips.add(matches[0][2])
    assert len(seen_windows) > 5 and seen_flips == {False, True}


def test_on_device_augmentation_pads_a_downscaled_sample_with_ignore(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    datamodule = CityscapesDataModule(str(tmp_path), size=(8, 16), augment=True, scale_range=(0.5, 0.5), batch_size=4)
    prepare(datamodule, ["train"], workers=1)
    datamodule = CityscapesDataModule(
        str(tmp_path), size=(8, 16), augment=True, scale_range=(0.5, 0.5), batch_size=4, prepared="require"
    )
    torch.manual_seed(0)
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    # Each 4x8 scaled sample sits whole somewhere in the 8x16 window; everything around it is padding:
    # black image, ignored labels.
    for image, target in zip(batch["image"], batch["target"]):
        placements = []
        for top in range(5):
            for left in range(9):
                outside = torch.ones(8, 16, dtype=torch.bool)
                outside[top : top + 4, left : left + 8] = False
                if (target[outside] == 255).all() and (image[:, outside] == 0).all():
                    placements.append((top, left))
        assert placements, "no 4x8 placement leaves only padding around it"


def test_on_device_augmentation_of_an_identity_window_is_each_byte_over_255() -> None:
    # Scale 1, window at the origin, no flip: no resampling, so the image is the conversion alone.
    images = torch.tensor([[0, 51], [128, 255]], dtype=torch.uint8).expand(1, 3, 2, 2)
    targets = torch.tensor([[[0, 1], [2, 255]]], dtype=torch.uint8)
    image, target = augment_batch(images, targets, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), (2, 2), ignore_index=255)
    assert image.dtype == torch.float32 and target.dtype == torch.long
    expected = torch.tensor([[0, 51], [128, 255]], dtype=torch.float64) / 255
    assert torch.allclose(image[0].double(), expected.expand(3, 2, 2), rtol=0, atol=1e-7)
    assert target.tolist() == [[[0, 1], [2, 255]]]


def test_auto_without_a_prepared_split_says_once_what_to_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_cityscapes(tmp_path, train=4, val=2)
    datamodule = cityscapes(tmp_path)
    with caplog.at_level("INFO"):
        for split in SPLITS:
            assert not isinstance(datamodule.dataset(split), PreparedSamples)
    told = [r.getMessage() for r in caplog.records if "pat-seg prepare" in r.getMessage()]
    assert len(told) == 1 and "reading the 'train' split from its source files" in told[0]
    assert len(told[0].splitlines()) == 1
