"""Readers of pat_seg.data.io: RGB decoding and label tables, against the values written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pat_seg.data.io import LabelTable, read_label_image, read_rgb


def test_png_is_read_as_the_rgb_bytes_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels[..., 1]).save(tmp_path / "grey.png")
    image = read_rgb(tmp_path / "rgb.png")
    assert image.dtype == torch.uint8 and torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1))
    grey = read_rgb(tmp_path / "grey.png")  # one channel repeated three times
    assert torch.equal(grey, torch.from_numpy(pixels[..., 1]).expand(3, 5, 7))


def test_a_16_bit_png_goes_through_pil_and_comes_back_as_8_bit_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((3, 4), 7, dtype=np.uint16)).save(tmp_path / "deep.png")
    image = read_rgb(tmp_path / "deep.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 3, 4)


@pytest.mark.parametrize("value", [165, 90, 0])
def test_a_png_whose_rows_hold_one_value_reads_back_exactly(tmp_path: Path, value: int) -> None:
    # The readers fill the decoding memory with 165, then 90, to see whether the last row was reached:
    # an image whose last row (or every row) holds one of those values is still read as written.
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    pixels[-1] = value
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    assert torch.equal(read_rgb(tmp_path / "rgb.png"), torch.from_numpy(pixels).permute(2, 0, 1))
    flat = np.full((6, 5), value, dtype=np.uint8)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    assert np.array_equal(read_label_image(tmp_path / "flat.png"), flat)
    white = np.ones((6, 5), dtype=bool)  # mode "1": filled with 255, then 0
    Image.fromarray(white).save(tmp_path / "white.png")
    assert torch.equal(read_rgb(tmp_path / "white.png"), torch.full((3, 6, 5), 255, dtype=torch.uint8))


def test_label_png_keeps_its_byte_values(tmp_path: Path) -> None:
    labels = np.array([[0, 7, 255], [33, 1, 2]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "label.png")
    raw = read_label_image(tmp_path / "label.png")
    assert raw.dtype == np.uint8 and np.array_equal(raw, labels)


def test_table_maps_bytes_to_uint8_and_refuses_an_unlisted_value_by_name() -> None:
    table = LabelTable.from_mapping({1: 0, 2: 1, 3: 2, 255: 255}, 0, 255, "1, 2, 3 and 255")
    raw = np.array([[1, 2], [3, 255]], dtype=np.uint8)
    mapped = table(raw, "x.png")
    assert mapped.dtype == np.uint8 and mapped.tolist() == [[0, 1], [2, 255]]
    for bad in (0, 4, 254):  # 4 is what the table uses to mark refused values: still refused
        with pytest.raises(ValueError, match=f"label {bad} found in x.png; 1, 2, 3 and 255"):
            table(np.array([[1, bad]], dtype=np.uint8), "x.png")


def test_table_of_values_beyond_a_byte_maps_any_integer_dtype() -> None:
    # NYUv2's npy labels: -1..12 stored as float; -1 -> ignore index -1 needs a signed table.
    table = LabelTable.from_mapping({-1: -1, **{k: k for k in range(13)}}, -1, 12, "-1..12")
    mapped = table(np.array([[-1.0, 0.0], [12.0, 5.0]], dtype=np.float32), "l.npy")
    assert mapped.dtype == np.int64 and mapped.tolist() == [[-1, 0], [12, 5]]
    with pytest.raises(ValueError, match="label 13 found in l.npy"):
        table(np.array([13], dtype=np.int16), "l.npy")
    with pytest.raises(ValueError, match="label -2 found in l.npy"):
        table(np.array([-2], dtype=np.int64), "l.npy")
    wide = LabelTable.from_mapping({0: 255, 894: 39}, 0, 894, "0..894")  # uint16 raw ids of the NYUv2 .mat
    assert wide(np.array([894, 0], dtype=np.uint16), "m").tolist() == [39, 255]
