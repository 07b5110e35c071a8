"""Cityscapes from a tiny tree in the official leftImg8bit / gtFine layout."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_batches import model_samples
from PIL import Image

from pat_seg.data import CityscapesDataModule, DatasetLayoutError

H, W = 8, 16
# cityscapesscripts' labels.py, (labelId, trainId) with 255 = not evaluated; written out here in full
# so the test does not share the package's table. -1 (license plate) is stored as 255 in a uint8 PNG.
CITYSCAPES_IDS = [
    (0, 255),
    (1, 255),
    (2, 255),
    (3, 255),
    (4, 255),
    (5, 255),
    (6, 255),
    (7, 0),
    (8, 1),
    (9, 255),
    (10, 255),
    (11, 2),
    (12, 3),
    (13, 4),
    (14, 255),
    (15, 255),
    (16, 255),
    (17, 5),
    (18, 255),
    (19, 6),
    (20, 7),
    (21, 8),
    (22, 9),
    (23, 10),
    (24, 11),
    (25, 12),
    (26, 13),
    (27, 14),
    (28, 15),
    (29, 255),
    (30, 255),
    (31, 16),
    (32, 17),
    (33, 18),
    (255, 255),
]
ALL_LABEL_IDS = np.array([label_id for label_id, _ in CITYSCAPES_IDS])


def every_id_label(shift: int) -> np.ndarray:
    """An HxW labelIds image cycling through all 35 stored values (0..33 and 255), rolled by ``shift``."""
    return np.roll(ALL_LABEL_IDS, shift)[np.arange(H * W) % len(ALL_LABEL_IDS)].reshape(H, W).astype(np.uint8)


def expected_train_ids(label_ids: np.ndarray, void: int) -> np.ndarray:
    lookup = {label_id: (void if train_id == 255 else train_id) for label_id, train_id in CITYSCAPES_IDS}
    return np.vectorize(lookup.get)(label_ids)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_cityscapes(root: Path, train: int = 3, val: int = 2) -> dict[str, list[np.ndarray]]:
    """Official layout with ``train`` / ``val`` frames in two cities; returns the labelIds written."""
    rng = np.random.default_rng(0)
    written: dict[str, list[np.ndarray]] = {}
    for split, count in (("train", train), ("val", val)):
        written[split] = []
        for i in range(count):
            city = ("aachen", "bochum")[i // 2]  # sorted paths keep the order written
            stem = f"{city}_{i:06d}_000019"
            write_png(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8),
            )
            label_ids = every_id_label(shift=i)
            write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
            written[split].append(label_ids)
    return written


def labels_of(datamodule: CityscapesDataModule, split: str) -> list[np.ndarray]:
    return [sample["target"].numpy() for sample in model_samples(datamodule, split)]


def make(root: Path, **kwargs) -> CityscapesDataModule:
    return CityscapesDataModule(str(root), size=(H, W), augment=False, **kwargs)


def test_label_ids_map_to_the_19_train_ids_and_255(tmp_path: Path) -> None:
    written = write_cityscapes(tmp_path)
    datamodule = make(tmp_path)
    assert datamodule.num_classes == 19 and datamodule.class_names[13] == "car"
    for label_ids, target in zip(written["train"], labels_of(datamodule, "train")):
        np.testing.assert_array_equal(target, expected_train_ids(label_ids, void=255))
    target = labels_of(datamodule, "train")[0]
    assert target[every_id_label(0) == 26].tolist() == [13] * int((every_id_label(0) == 26).sum())  # car
    assert set(target[every_id_label(0) == 4].tolist()) == {255}
    assert set(target[every_id_label(0) == 255].tolist()) == {255}  # -1, license plate


def test_void_as_class_gives_the_papers_20_classes(tmp_path: Path) -> None:
    written = write_cityscapes(tmp_path)
    datamodule = make(tmp_path, void_as_class=True)
    assert datamodule.num_classes == 20 and datamodule.class_names[19] == "void"
    for label_ids, target in zip(written["val"], labels_of(datamodule, "val")):
        np.testing.assert_array_equal(target, expected_train_ids(label_ids, void=19))
    assert set(labels_of(datamodule, "val")[0][every_id_label(0) == 4].tolist()) == {19}


@pytest.mark.parametrize("ignore_index", [-1, 300])
def test_ignore_index_outside_a_byte_is_kept_exactly(tmp_path: Path, ignore_index: int) -> None:
    # Label maps are held as uint8 when every class and the ignore value fit; -1 and 300 do not.
    written = write_cityscapes(tmp_path)
    datamodule = CityscapesDataModule(str(tmp_path), size=(H, W), scale_range=(0.5, 0.5), ignore_index=ignore_index)
    for label_ids, target in zip(written["train"], labels_of(make(tmp_path, ignore_index=ignore_index), "train")):
        np.testing.assert_array_equal(target, expected_train_ids(label_ids, void=ignore_index))
    # Training padding (3/4 of the crop at scale 0.5) holds the same value, not its low byte.
    target = model_samples(datamodule, "train")[0]["target"]
    assert int((target == ignore_index).sum()) >= H * W - (H // 2) * (W // 2) and target.dtype == torch.long
    assert set(target.unique().tolist()) <= set(range(19)) | {ignore_index}


def test_label_train_ids_png_is_preferred_when_present(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=1, val=1)
    train_ids = np.full((H, W), 13, dtype=np.uint8)
    train_ids[0, :3] = [0, 18, 255]
    write_png(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", train_ids)
    target = labels_of(make(tmp_path, void_as_class=True), "train")[0]
    assert target[0, :3].tolist() == [0, 18, 19] and int((target == 13).sum()) == H * W - 3


def test_splits_and_test_is_val(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=3, val=2)
    datamodule = make(tmp_path)
    assert [len(datamodule.dataset(s)) for s in ("train", "val", "test")] == [3, 2, 2]
    sample = datamodule.dataset("val")[1]
    assert sample["image"].shape == (3, H, W) and sample["target"].dtype.is_floating_point is False
    assert sample["index"] == 1


def test_class_counts_are_exact_and_cached_by_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAT_SEG_CACHE_DIR", str(tmp_path / "cache"))
    written = write_cityscapes(tmp_path, train=4)
    # The fourth frame shows road (labelId 7) only, so most classes are in 3 of the 4 images.
    road_only = np.full((H, W), 7, dtype=np.uint8)
    write_png(tmp_path / "gtFine/train/bochum/bochum_000003_000019_gtFine_labelIds.png", road_only)
    written["train"][3] = road_only
    for void, classes in ((False, 19), (True, 20)):
        mapped = np.concatenate([expected_train_ids(x, 19 if void else 255).ravel() for x in written["train"]])
        expected = np.bincount(mapped[mapped != 255], minlength=classes).tolist()
        images = [
            sum(int((expected_train_ids(x, 19 if void else 255) == c).any()) for x in written["train"])
            for c in range(classes)
        ]
        datamodule = make(tmp_path, void_as_class=void)
        assert datamodule.class_counts == expected
        assert datamodule.class_statistics.images == images and datamodule.class_statistics.num_images == len(
            written["train"]
        )
        assert images[0] == 4 and images[18] == 3  # road in every frame, bicycle not in the road-only one
        cache = datamodule.class_counts_cache_file()
        stored = json.loads(cache.read_text())
        assert cache.parent == tmp_path / "cache" and stored["class_counts"] == expected
        assert stored["class_image_counts"] == images and stored["num_images"] == len(written["train"])
    # Both protocols cached side by side, a second module reads the file instead of rescanning.
    assert len(list((tmp_path / "cache").glob("class_counts-*.json"))) == 2
    cached = make(tmp_path)
    cached.build_samples = None  # type: ignore[assignment]  # any scan would fail now
    assert sum(cached.class_counts) == int(sum((expected_train_ids(x, 255) != 255).sum() for x in written["train"]))


def test_a_cache_without_image_counts_is_counted_again(tmp_path: Path) -> None:
    """A cache file written before the image counts existed holds pixel counts only: scanned once more."""
    write_cityscapes(tmp_path)
    datamodule = make(tmp_path)
    statistics = datamodule.class_statistics
    cache = datamodule.class_counts_cache_file()
    cache.write_text(json.dumps({"class_names": datamodule.class_names, "class_counts": statistics.pixels}))
    again = make(tmp_path)
    assert again.class_statistics == statistics
    assert json.loads(cache.read_text())["class_image_counts"] == statistics.images


def test_a_cache_that_cannot_be_written_is_named_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_cityscapes(tmp_path)
    datamodule = make(tmp_path)

    def disk_full(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with caplog.at_level(logging.WARNING):
        counts = datamodule.class_counts  # training goes on with the counts it made
    monkeypatch.undo()
    cache = datamodule.class_counts_cache_file()
    assert sum(counts) > 0 and f"could not cache class counts at {cache}" in caplog.text
    # Neither a cache nor a half-written temporary file of it (the folder holds other tests' caches).
    assert not cache.exists() and not [p for p in cache.parent.iterdir() if cache.name in p.name]


def test_the_cache_stays_out_of_the_data_root_and_two_roots_never_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for copy in ("a", "b"):
        write_cityscapes(tmp_path / copy)
    monkeypatch.delenv("PAT_SEG_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = {path for path in (tmp_path / "a").rglob("*")}
    with caplog.at_level("INFO"):
        counts = make(tmp_path / "a").class_counts
    cache = tmp_path / "xdg" / "pat_seg"
    (written,) = cache.glob("class_counts-*.json")
    assert json.loads(written.read_text())["class_counts"] == counts
    assert {path for path in (tmp_path / "a").rglob("*")} == before  # nothing added to the user's data
    assert [record.getMessage() for record in caplog.records if "cached" in record.getMessage()] == [
        f"class counts cached in {written} (set PAT_SEG_CACHE_DIR to choose the folder)"
    ]
    # The same files (seeded) under another root: the same counts, in an entry of its own.
    assert make(tmp_path / "b").class_counts == counts
    assert len(list(cache.glob("class_counts-*.json"))) == 2
    monkeypatch.setenv("PAT_SEG_CACHE_DIR", str(tmp_path / "chosen"))
    assert make(tmp_path / "a").class_counts_cache_file().parent == tmp_path / "chosen"


def test_training_samples_have_the_protocol_size_and_aligned_padding(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    # void_as_class leaves no ignored label, so every 255 in the batch is padding.
    datamodule = CityscapesDataModule(
        str(tmp_path), void_as_class=True, size=(H, W), scale_range=(0.5, 0.5), batch_size=2
    )
    datamodule.setup("fit")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert batch["image"].shape == (2, 3, H, W) and batch["target"].shape == (2, H, W)
    padded = batch["target"] == 255
    assert int(padded.sum()) == 2 * (H * W - (H // 2) * (W // 2))
    assert bool((batch["image"].permute(1, 0, 2, 3)[:, padded] == 0).all())


# --- errors -------------------------------------------------------------------------------------
def test_missing_root_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"(?s)nowhere does not exist.*leftImg8bit/\{train,val\}"):
        make(tmp_path / "nowhere")


def test_missing_label_file_is_named(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    missing = tmp_path / "gtFine/val/aachen/aachen_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
        make(tmp_path).dataset("val")


def test_missing_gtfine_is_named(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    (tmp_path / "gtFine").rename(tmp_path / "gtCoarse")
    with pytest.raises(ValueError, match=f"{tmp_path / 'gtFine'} does not exist"):
        make(tmp_path)


def test_label_outside_the_ids_names_file_and_value(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    path = tmp_path / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    label = every_id_label(0)
    label[3, 3] = 40
    write_png(path, label)
    with pytest.raises(ValueError, match=f"label 40 found in {path}; Cityscapes labelIds are 0..33"):
        make(tmp_path).dataset("train")[1]


def test_truncated_image_is_named(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    path = tmp_path / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match=f"cannot read image {path}"):
        make(tmp_path).dataset("train")[0]


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    label = tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    write_png(label, np.zeros((H, W - 2), dtype=np.uint8))
    image = tmp_path / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    with pytest.raises(ValueError, match=f"image {image} is 8x16 but its label {label} is 8x14"):
        make(tmp_path).dataset("train")[0]


def test_ignore_index_inside_the_classes_is_refused(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    with pytest.raises(ValueError, match="ignore_index 19 collides"):
        make(tmp_path, void_as_class=True, ignore_index=19)


def test_augmented_batches_repeat_with_the_same_seed_in_worker_processes(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, train=4, val=1)

    def batches(seed: int) -> list:
        datamodule = CityscapesDataModule(str(tmp_path), size=(H, W), batch_size=2, num_workers=2, seed=seed)
        augmented = [datamodule.on_after_batch_transfer(b, 0) for b in datamodule.train_dataloader()]
        return [(b["index"].tolist(), b["target"]) for b in augmented]

    first, again, other = batches(0), batches(0), batches(1)
    assert all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert any(a[0] != b[0] or not torch.equal(a[1], b[1]) for a, b in zip(first, other))
