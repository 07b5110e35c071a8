"""NYUv2 from a tiny preprocessed npy tree and a tiny official .mat set (HDF5 + MATLAB level-5 meta files)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from data_batches import model_samples

from pat_seg.data import DatasetLayoutError, NYUv2DataModule
from pat_seg.data.io import read_mat

H, W = 6, 8


# --- npy tree ------------------------------------------------------------------------------------
def npy_label(seed: int) -> np.ndarray:
    """Every value -1..12 at least once, stored as float like the preprocessed set."""
    values = np.arange(-1, 13)
    return np.roll(values, seed)[np.arange(H * W) % len(values)].reshape(H, W).astype(np.float32)


def write_npy(root: Path, train: int = 6, val: int = 4) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    labels: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for split, count in (("train", train), ("val", val)):
        for kind in ("image", "label"):
            (root / split / kind).mkdir(parents=True)
        for i in range(count):
            np.save(root / split / "image" / f"{i}.npy", rng.random((H, W, 3), dtype=np.float32))
            labels[split].append(npy_label(seed=i + 100 * (split == "val")))
            np.save(root / split / "label" / f"{i}.npy", labels[split][-1])
    return labels


def targets(datamodule: NYUv2DataModule, split: str) -> list[np.ndarray]:
    return [sample["target"].numpy() for sample in model_samples(datamodule, split)]


def make(root: Path, **kwargs) -> NYUv2DataModule:
    return NYUv2DataModule(str(root), size=(H, W), augment=False, **kwargs)


def test_npy_13_classes_ignore_unlabelled(tmp_path: Path) -> None:
    labels = write_npy(tmp_path)
    datamodule = make(tmp_path)
    assert datamodule.layout == "npy" and datamodule.num_classes == 13 and datamodule.class_names[0] == "bed"
    for label, target in zip(labels["train"], targets(datamodule, "train")):
        np.testing.assert_array_equal(target, np.where(label == -1, 255, label))
    assert [len(datamodule.dataset(s)) for s in ("train", "val", "test")] == [6, 4, 4]


def test_npy_paper_protocol_14_classes_and_seeded_split(tmp_path: Path) -> None:
    labels = write_npy(tmp_path)
    datamodule = make(tmp_path, num_classes=14)
    assert datamodule.class_names[0] == "unlabelled" and len(datamodule.class_names) == 14
    sizes = [len(datamodule.dataset(s)) for s in ("train", "val", "test")]
    assert sizes == [8, 1, 1]
    # Every one of the 10 images lands in exactly one split, with label + 1 (-1 -> 0).
    expected = sorted((label + 1).astype(np.int64).tobytes() for label in labels["train"] + labels["val"])
    found = sorted(t.tobytes() for s in ("train", "val", "test") for t in targets(datamodule, s))
    assert found == expected
    assert targets(make(tmp_path, num_classes=14), "val")[0].tobytes() == targets(datamodule, "val")[0].tobytes()


def test_npy_class_counts(tmp_path: Path) -> None:
    labels = write_npy(tmp_path)
    raw = np.concatenate([x.ravel() for x in labels["train"]]).astype(np.int64)
    assert make(tmp_path).class_counts == np.bincount(raw[raw >= 0], minlength=13).tolist()


def test_npy_uint8_images_are_scaled_to_unit_range(tmp_path: Path) -> None:
    write_npy(tmp_path)
    np.save(tmp_path / "val" / "image" / "0.npy", np.full((H, W, 3), 255, dtype=np.uint8))
    assert float(model_samples(make(tmp_path), "val")[0]["image"].min()) == 1.0


def test_npy_label_outside_classes_names_file_and_value(tmp_path: Path) -> None:
    write_npy(tmp_path)
    path = tmp_path / "train" / "label" / "2.npy"
    np.save(path, np.where(npy_label(0) == 5, 13, npy_label(0)))
    with pytest.raises(ValueError, match=f"label 13 found in {path}; the NYUv2 npy labels are -1"):
        make(tmp_path).dataset("train")[2]


def test_npy_size_mismatch_names_both_files(tmp_path: Path) -> None:
    write_npy(tmp_path)
    image, label = tmp_path / "val" / "image" / "1.npy", tmp_path / "val" / "label" / "1.npy"
    np.save(label, np.zeros((H, W + 1), dtype=np.float32))
    with pytest.raises(ValueError, match=f"image {image} is 6x8 but its label {label} is 6x9"):
        make(tmp_path).dataset("val")[1]


def test_npy_truncated_file_is_named(tmp_path: Path) -> None:
    write_npy(tmp_path)
    path = tmp_path / "train" / "image" / "0.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"cannot read {path}"):
        make(tmp_path).dataset("train")[0]


def test_npy_missing_label_file_is_named(tmp_path: Path) -> None:
    write_npy(tmp_path)
    (tmp_path / "val" / "label" / "3.npy").unlink()
    with pytest.raises(DatasetLayoutError, match=f"{tmp_path / 'val' / 'label' / '3.npy'} does not exist"):
        make(tmp_path).dataset("val")


def test_missing_root_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"(?s)absent does not exist.*<i>\.npy.*nyu_depth_v2_labeled\.mat"):
        make(tmp_path / "absent")


def test_npy_tree_without_val_names_it(tmp_path: Path) -> None:
    write_npy(tmp_path)
    (tmp_path / "val" / "image").rename(tmp_path / "val" / "images")
    with pytest.raises(DatasetLayoutError, match=f"{tmp_path / 'val' / 'image'} does not exist"):
        make(tmp_path)


@pytest.mark.parametrize(("layout", "classes"), [("npy", 40), ("bad", 13)])
def test_bad_options_are_refused(tmp_path: Path, layout: str, classes: int) -> None:
    write_npy(tmp_path)
    with pytest.raises(ValueError, match="num_classes must be one of|layout must be"):
        make(tmp_path, layout=layout, num_classes=classes)


# --- official .mat ---------------------------------------------------------------------------------
def mat5(variables: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """A MATLAB level-5 file (MathWorks "MAT-File Format") holding numeric matrices and char arrays."""

    def element(kind: int, payload: bytes) -> bytes:
        if len(payload) <= 4 and kind != 14:  # small data element format, as MATLAB writes short names
            return struct.pack("<HH", kind, len(payload)) + payload.ljust(4, b"\0")
        return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)

    classes = {
        np.dtype(np.float64): (6, 9),
        np.dtype(np.uint8): (9, 2),
        np.dtype(np.uint16): (11, 4),
        np.dtype(np.int32): (12, 5),
        np.dtype("<U1"): (4, 4),
    }
    body = b""
    for name, value in variables.items():
        value = np.atleast_2d(value)
        if value.dtype.kind == "U":  # a char array: UTF-16 code units
            mx_class, data = 4, element(4, np.array([ord(c) for c in value.ravel(order="F")], "<u2").tobytes())
        else:
            mx_class, mi_type = classes[value.dtype]
            data = element(mi_type, value.ravel(order="F").astype(value.dtype.newbyteorder("<")).tobytes())
        matrix = element(
            14,
            element(6, struct.pack("<II", mx_class, 0))
            + element(5, struct.pack(f"<{value.ndim}i", *value.shape))
            + element(1, name.encode())
            + data,
        )
        if compress:
            packed = zlib.compress(matrix)
            matrix = struct.pack("<II", 15, len(packed)) + packed
        body += matrix
    header = b"MATLAB 5.0 MAT-file, written by pat-seg tests".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    return header + body


# 894 -> 40: raw class k maps to 40-class ((k - 1) % 40) + 1, so raw 1..40 cover every 40-class id.
MAP_CLASS = (np.arange(894) % 40 + 1).astype(np.float64)
# The 40 -> 13 map (1-based) of docs/datasets.md, written out again here.
TO_13 = {
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
N_IMAGES = 5


def mat_label(seed: int) -> np.ndarray:
    """Raw labels 0 (unlabelled) and 1..40 plus a few high raw ids (up to 894)."""
    values = np.concatenate([np.arange(0, 41), [100, 894]])
    return np.roll(values, seed)[np.arange(H * W) % len(values)].reshape(H, W).astype(np.uint16)


def write_mat(root: Path, compress: bool = True) -> list[np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = [mat_label(i) for i in range(N_IMAGES)]
    images = rng.integers(0, 255, (N_IMAGES, H, W, 3), dtype=np.uint8)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as file:
        # MATLAB v7.3 stores HxWx3xN as N x 3 x W x H and HxWxN as N x W x H.
        file["images"] = images.transpose(0, 3, 2, 1)
        file["labels"] = np.stack(labels).transpose(0, 2, 1)
    (root / "splits.mat").write_bytes(
        mat5({"trainNdxs": np.array([[1.0], [3.0], [5.0]]), "testNdxs": np.array([[2.0], [4.0]])}, compress)
    )
    (root / "classMapping40.mat").write_bytes(
        mat5({"mapClass": MAP_CLASS[None, :], "name": np.array(list("wall"))}, compress)
    )
    return labels


@pytest.mark.parametrize("compress", [False, True])
def test_level5_reader_reads_numeric_matrices_in_matlab_shape(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "x.mat"
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3)
    path.write_bytes(
        mat5({"a": matrix, "idx": np.array([[7], [9]], dtype=np.int32), "s": np.array(list("hi"))}, compress)
    )
    found = read_mat(path)
    assert sorted(found) == ["a", "idx"]  # the char array is skipped
    np.testing.assert_array_equal(found["a"], matrix)
    np.testing.assert_array_equal(found["idx"], [[7], [9]])


def test_v73_meta_file_is_read_through_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "splits.mat"
    with h5py.File(path, "w") as file:
        file["trainNdxs"] = np.array([[1.0, 3.0, 5.0]])  # MATLAB's 3x1, transposed by HDF5
    np.testing.assert_array_equal(read_mat(path)["trainNdxs"], [[1.0], [3.0], [5.0]])


def test_non_matlab_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "splits.mat"
    path.write_text("trainNdxs = [1 2 3]")
    with pytest.raises(ValueError, match=f"{path} is not a MATLAB file"):
        read_mat(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_level5_file_is_refused_by_name(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "splits.mat"
    data = mat5({"trainNdxs": np.arange(600.0).reshape(600, 1)}, compress)
    path.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(ValueError, match=f"cannot parse MATLAB file {path}"):
        read_mat(path)


@pytest.mark.parametrize("classes", [40, 13])
def test_mat_layout_maps_894_to_40_and_13(tmp_path: Path, classes: int) -> None:
    labels = write_mat(tmp_path)
    datamodule = make(tmp_path, num_classes=classes)
    assert datamodule.layout == "mat" and datamodule.num_classes == classes
    train = targets(datamodule, "train")
    assert len(train) == 3 and len(targets(datamodule, "val")) == 2 == len(targets(datamodule, "test"))
    for raw, target in zip([labels[0], labels[2], labels[4]], train):  # trainNdxs 1, 3, 5 (1-based)
        for value in np.unique(raw):
            to_40 = int(MAP_CLASS[value - 1]) if value else None
            expected = 255 if value == 0 else (to_40 - 1 if classes == 40 else TO_13.get(to_40, 7) - 1)
            assert set(target[raw == value].tolist()) == {expected}, f"raw label {value}"


def test_mat_images_come_back_in_height_width_order(tmp_path: Path) -> None:
    write_mat(tmp_path)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat") as file:
        first = np.asarray(file["images"][1]).transpose(2, 1, 0)  # test image 1 is image number 2
    image = model_samples(make(tmp_path, num_classes=40), "test")[0]["image"]
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), first / 255, atol=1e-6)


def test_mat_uncompressed_meta_and_class_counts(tmp_path: Path) -> None:
    labels = write_mat(tmp_path, compress=False)
    raw = np.concatenate([labels[i].ravel() for i in (0, 2, 4)]).astype(np.int64)
    to_40 = MAP_CLASS[raw[raw > 0] - 1].astype(np.int64) - 1
    assert make(tmp_path, num_classes=40).class_counts == np.bincount(to_40, minlength=40).tolist()


def test_mat_label_outside_894_names_file_and_value(tmp_path: Path) -> None:
    write_mat(tmp_path)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "r+") as file:
        file["labels"][0, 0, 0] = 900
    with pytest.raises(ValueError, match=r"label 900 found in .*nyu_depth_v2_labeled\.mat \(image 1\)"):
        make(tmp_path, num_classes=40).dataset("train")[0]


def test_mat_missing_meta_file_is_named(tmp_path: Path) -> None:
    write_mat(tmp_path)
    (tmp_path / "classMapping40.mat").unlink()
    with pytest.raises(DatasetLayoutError, match=r"(?s)classMapping40\.mat does not exist.*nyuv2-meta-data"):
        make(tmp_path, num_classes=40)


def test_mat_split_index_out_of_range_is_refused(tmp_path: Path) -> None:
    write_mat(tmp_path)
    (tmp_path / "splits.mat").write_bytes(mat5({"trainNdxs": np.array([[1.0], [6.0]]), "testNdxs": np.array([[2.0]])}))
    with pytest.raises(ValueError, match=r"'trainNdxs' in .*splits\.mat must hold 1-based image numbers in 1\.\.5"):
        make(tmp_path, num_classes=40).dataset("train")


def test_paper_split_of_too_few_images_is_refused(tmp_path: Path) -> None:
    write_npy(tmp_path, train=3, val=1)  # 0.1 of 4 images rounds to an empty validation split
    with pytest.raises(ValueError, match=r"cannot split 4 samples into fractions \[0.8, 0.1, 0.1\]"):
        make(tmp_path, num_classes=14).dataset("val")
