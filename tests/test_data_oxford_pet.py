"""Oxford-IIIT Pet from tiny trees in the official layout and torchvision's ``oxford-iiit-pet/`` copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pat_seg.data import DatasetLayoutError, OxfordPetDataModule

H, W = 12, 10
TRAINVAL = [f"Abyssinian_{i}" for i in range(1, 9)] + ["yorkshire_terrier_1", "yorkshire_terrier_2"]
TEST = ["Bengal_1", "Bengal_2", "beagle_3"]


def trimap(seed: int) -> np.ndarray:
    """A trimap with all three values: pet (1) inside a border (3) on background (2)."""
    label = np.full((H, W), 2, dtype=np.uint8)
    label[2:10, 2:8] = 3
    label[3:9, 3:7] = 1
    label[0, seed % W] = 1  # differs per image, so each sample's counts are its own
    return label


def write_pet(root: Path, trainval: list[str] = TRAINVAL, test: list[str] = TEST) -> dict[str, np.ndarray]:
    """Official layout: images/*.jpg, annotations/trimaps/*.png, annotations/{trainval,test}.txt."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    trimaps = {}
    for seed, name in enumerate(trainval + test):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        trimaps[name] = trimap(seed)
        Image.fromarray(trimaps[name]).save(root / "annotations" / "trimaps" / f"{name}.png")
    for split, names in (("trainval", trainval), ("test", test)):
        lines = [f"{name} {i + 1} {1 + i % 2} {i + 1}" for i, name in enumerate(names)]
        (root / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return trimaps


def make(root: Path, **kwargs) -> OxfordPetDataModule:
    return OxfordPetDataModule(str(root), size=(H, W), augment=False, **kwargs)


def test_trimap_values_map_by_the_fixed_table(tmp_path: Path) -> None:
    trimaps = write_pet(tmp_path)
    dataset = make(tmp_path).dataset("test")
    target = dataset[0]["target"].numpy()
    source = trimaps["Bengal_1"]
    # 1 pet -> 0, 2 background -> 1, 3 border -> 2 (docs/datasets.md), whatever the image holds.
    assert set(target[source == 1].tolist()) == {0}
    assert set(target[source == 2].tolist()) == {1}
    assert set(target[source == 3].tolist()) == {2}


def test_an_image_without_pet_pixels_keeps_the_fixed_map(tmp_path: Path) -> None:
    trimaps = write_pet(tmp_path)
    only_border_background = np.where(trimaps["Bengal_1"] == 1, 3, trimaps["Bengal_1"]).astype(np.uint8)
    Image.fromarray(only_border_background).save(tmp_path / "annotations/trimaps/Bengal_1.png")
    target = make(tmp_path).dataset("test")[0]["target"].numpy()
    # By rank, background and border would become 0 and 1; the fixed table keeps them 1 and 2.
    assert sorted(set(target.ravel().tolist())) == [1, 2]


def test_splits_from_the_files_with_a_seeded_validation_hold_out(tmp_path: Path) -> None:
    write_pet(tmp_path)
    datamodule = make(tmp_path, val_fraction=0.2)
    train, val = datamodule.split_names("train"), datamodule.split_names("val")
    assert (len(train), len(val), len(datamodule.dataset("test"))) == (8, 2, 3)
    assert sorted(train + val) == sorted(TRAINVAL)
    assert make(tmp_path, val_fraction=0.2).split_names("val") == val  # same seed, same hold-out
    other_seeds = {tuple(make(tmp_path, val_fraction=0.2, split_seed=s).split_names("val")) for s in range(1, 6)}
    assert other_seeds - {tuple(val)}, "the hold-out does not depend on split_seed"


def test_torchvision_layout_and_exact_class_counts(tmp_path: Path) -> None:
    trimaps = write_pet(tmp_path / "oxford-iiit-pet")
    datamodule = make(tmp_path, val_fraction=0.2)
    assert datamodule.data_dir == tmp_path / "oxford-iiit-pet"
    train = datamodule.split_names("train")
    raw = np.concatenate([trimaps[name].ravel() for name in train])
    expected = [int((raw == 1).sum()), int((raw == 2).sum()), int((raw == 3).sum())]
    assert datamodule.class_counts == expected


def test_comment_lines_in_split_files_are_skipped(tmp_path: Path) -> None:
    write_pet(tmp_path)
    path = tmp_path / "annotations" / "test.txt"
    header = " ".join(["#Image", "CLASS-ID", "species".upper(), "BREED", "ID"])  # the publisher's header line
    path.write_text(header + "\n" + path.read_text())
    assert len(make(tmp_path).dataset("test")) == len(TEST)


def test_images_are_resized_to_the_protocol_size(tmp_path: Path) -> None:
    write_pet(tmp_path)
    sample = OxfordPetDataModule(str(tmp_path), size=(24, 20), augment=False).dataset("test")[0]
    assert sample["image"].shape == (3, 24, 20) and sample["target"].shape == (24, 20)
    # Doubling by nearest: the trimap's 2x2 blocks carry the mapped values.
    expected = np.kron(np.vectorize({1: 0, 2: 1, 3: 2}.get)(trimap(len(TRAINVAL))), np.ones((2, 2), dtype=int))
    np.testing.assert_array_equal(sample["target"].numpy(), expected)


# --- errors -------------------------------------------------------------------------------------
def test_incomplete_root_names_the_first_missing_path(tmp_path: Path) -> None:
    write_pet(tmp_path)
    (tmp_path / "annotations" / "test.txt").unlink()
    with pytest.raises(
        DatasetLayoutError, match=rf"(?s){tmp_path / 'annotations' / 'test.txt'} does not exist.*trimaps"
    ):
        make(tmp_path)


def test_missing_image_is_named(tmp_path: Path) -> None:
    write_pet(tmp_path)
    (tmp_path / "images" / "Bengal_2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'images' / 'Bengal_2.jpg'} does not exist"):
        make(tmp_path).dataset("test")


def test_trimap_value_outside_1_to_3_names_file_and_value(tmp_path: Path) -> None:
    write_pet(tmp_path)
    path = tmp_path / "annotations" / "trimaps" / "Bengal_1.png"
    Image.fromarray(np.where(trimap(0) == 3, 4, trimap(0)).astype(np.uint8)).save(path)
    with pytest.raises(ValueError, match=f"label 4 found in {path}; Oxford-IIIT Pet trimaps hold 1, 2 and 3"):
        make(tmp_path).dataset("test")[0]


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    write_pet(tmp_path)
    path = tmp_path / "images" / "Bengal_1.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=f"cannot read image {path}"):
        make(tmp_path).dataset("test")[0]


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    write_pet(tmp_path)
    image, label = tmp_path / "images" / "Bengal_1.jpg", tmp_path / "annotations" / "trimaps" / "Bengal_1.png"
    Image.fromarray(np.full((H + 1, W, 3), 9, dtype=np.uint8)).save(image)
    with pytest.raises(ValueError, match=f"image {image} is 13x10 but its label {label} is 12x10"):
        make(tmp_path).dataset("test")[0]


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_val_fraction_outside_the_open_interval_is_refused(tmp_path: Path, fraction: float) -> None:
    write_pet(tmp_path)
    with pytest.raises(ValueError, match=f"val_fraction must be a number in \\(0, 1\\); got {fraction}"):
        make(tmp_path, val_fraction=fraction)
