"""``pat-seg predict`` output: label PNGs a user can read back, for the test split and for own images."""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pat_seg.callbacks import PredictionWriter
from pat_seg.callbacks.prediction_writer import label_image
from pat_seg.callbacks.predictions import class_palette
from pat_seg.data import DatasetLayoutError, ImageFolderDataModule
from pat_seg.losses import CrossEntropyLoss
from pat_seg.module import SegmentationModule


class ThresholdNet(nn.Module):
    """Class 2 where the red channel is above 0.5, else class 0: predictions the test knows in advance."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        red = image[:, 0]
        logits = torch.stack([1 - red, torch.zeros_like(red), red], dim=1)
        return logits + self.unused


def write_images(folder: Path) -> dict[str, np.ndarray]:
    """Two photos of different sizes and formats (a nested one too), each half red."""
    images = {}
    for name, (height, width), suffix in (("wide", (20, 36), ".png"), ("nested/tall", (30, 14), ".jpg")):
        rgb = np.zeros((height, width, 3), dtype=np.uint8)
        rgb[:, : width // 2, 0] = 250  # left half red
        path = folder / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path, quality=100)
        images[name] = rgb  # outputs keep the image's path below the folder
    return images


def test_predicting_an_image_folder_writes_label_maps_of_each_images_size(tmp_path: Path) -> None:
    images = write_images(tmp_path / "photos")
    data = ImageFolderDataModule(
        str(tmp_path / "photos"), num_classes=3, class_names=["a", "b", "c"], size=(16, 16)
    )  # resized for the network, written back at the image's size
    module = SegmentationModule(ThresholdNet(), CrossEntropyLoss(), num_classes=3)
    writer = PredictionWriter(overlay=True, output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[writer]
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    for name, rgb in images.items():
        labels = np.asarray(Image.open(tmp_path / "out" / "labels" / f"{name}.png"))
        assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint8
        width = rgb.shape[1]
        assert (labels[:, : width // 2 - 1] == 2).all() and (labels[:, width // 2 + 1 :] == 0).all()
        overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{name}.png")).astype(float)
        height = rgb.shape[0]
        assert overlay.shape[0] >= height and overlay.shape[1] > width  # the legend to the right
        # Top left, the image as it was, half covered by class 2's colour: red (stretched to 255 by
        # displayable), away from the edge that resizing to 16x16 and back blurs, blends half and half.
        palette = class_palette(3).numpy().astype(float) * 255
        painted = overlay[:height, : width // 2 - 4]
        np.testing.assert_allclose(painted, np.broadcast_to((palette[2] + [255, 0, 0]) / 2, painted.shape), atol=1)
        legend = overlay[:, width:].reshape(-1, 3)
        for colour in palette:  # each class's patch in the legend
            assert (np.abs(legend - colour).max(1) <= 1).any()
    assert writer.written == 2


def test_images_of_one_name_in_different_folders_or_formats_get_outputs_of_their_own(tmp_path: Path) -> None:
    # Five files whose stems collide: by subfolder (a/x, b/x) and by format (y.jpg, y.png); z is alone.
    # Each is filled with its own shade of red (above or below 0.5), so each output can be traced back.
    reds = {"a/x.png": 250, "b/x.png": 10, "y.jpg": 250, "y.png": 10, "z.png": 250}
    for name, red in reds.items():
        path = tmp_path / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), (red, 0, 0), dtype=np.uint8)).save(path, quality=100)
    data = ImageFolderDataModule(str(tmp_path / "photos"), num_classes=3)
    writer = PredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[writer]
    )
    module = SegmentationModule(ThresholdNet(), CrossEntropyLoss(), num_classes=3)
    trainer.predict(module, datamodule=data, return_predictions=False)
    expected = {"a/x.png": 2, "b/x.png": 0, "y_jpg.png": 2, "y_png.png": 0, "z.png": 2}
    labels = tmp_path / "out" / "labels"
    written = {path.relative_to(labels).as_posix() for path in (tmp_path / "out").rglob("*.png")}
    assert written == set(expected) and writer.written == 5
    for name, label in expected.items():
        assert (np.asarray(Image.open(labels / name)) == label).all(), name


def test_an_unreadable_image_is_skipped_named_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path / "photos")
    broken = tmp_path / "photos" / "broken.png"
    broken.write_bytes(b"not a PNG")
    data = ImageFolderDataModule(str(tmp_path / "photos"), num_classes=3, size=(16, 16), batch_size=2)
    module = SegmentationModule(ThresholdNet(), CrossEntropyLoss(), num_classes=3)
    writer = PredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[writer]
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    # Sorted, broken.png shares the first batch with nested/tall.jpg; wide.png is the second batch.
    written = sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*.png"))
    assert written == ["labels/nested/tall.png", "labels/wide.png"]
    assert (writer.written, writer.skipped) == (2, 1)
    assert f"cannot read image {broken}" in caplog.text
    assert "wrote 2 label maps" in caplog.text and "skipped 1 unreadable image(s)" in caplog.text


def test_a_batch_of_unreadable_images_only_predicts_nothing(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a PNG")
    data = ImageFolderDataModule(str(tmp_path / "photos"), num_classes=3)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert "image" not in batch and batch["unreadable"][0].startswith(f"cannot read image {tmp_path}")
    module = SegmentationModule(ThresholdNet(), CrossEntropyLoss(), num_classes=3)
    assert module.predict_step(batch, 0).numel() == 0


def test_image_folder_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="is not a folder"):
        ImageFolderDataModule(str(tmp_path / "missing"), num_classes=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="holds no .jpg"):
        ImageFolderDataModule(str(tmp_path / "empty"), num_classes=3)
    write_images(tmp_path / "photos")
    with pytest.raises(
        ValueError, match=r"num_classes must be an integer >= 2 \(the trained model's number of classes\); got None"
    ):
        ImageFolderDataModule(str(tmp_path / "photos"))
    with pytest.raises(ValueError, match="serves `pat-seg predict`"):
        ImageFolderDataModule(str(tmp_path / "photos"), num_classes=3).setup("fit")


def test_label_pngs_hold_class_indices_in_8_or_16_bits(tmp_path: Path) -> None:
    labels = torch.tensor([[0, 1], [254, 2]])
    label_image(labels, num_classes=255).save(tmp_path / "small.png")
    assert np.asarray(Image.open(tmp_path / "small.png")).tolist() == [[0, 1], [254, 2]]
    many = torch.tensor([[0, 300], [511, 2]])
    label_image(many, num_classes=512).save(tmp_path / "many.png")
    assert np.asarray(Image.open(tmp_path / "many.png")).astype(int).tolist() == [[0, 300], [511, 2]]


def test_image_folder_gives_each_byte_over_255_as_float32(tmp_path: Path) -> None:
    rgb = np.array([[[0, 51, 255], [1, 128, 254]]], dtype=np.uint8)  # [1, 2, 3]
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = ImageFolderDataModule(str(tmp_path), num_classes=3).build_dataset("test")[0]["image"]
    assert image.dtype == torch.float32
    expected = torch.from_numpy(rgb.astype(np.float64) / 255).permute(2, 0, 1)
    assert torch.allclose(image.double(), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("prepared", ["off", "require"])
def test_predicting_a_folder_data_sets_test_split_names_each_output_after_its_image(
    tmp_path: Path, prepared: str
) -> None:
    """The test split of one's own folders (SegNet's CamVid layout), read from the files or from the
    split `pat-seg prepare` stored: each label map is named after its image and has its size, so it
    lies on the image's ground-truth mask."""
    from pat_seg.cli.prepare import prepare
    from pat_seg.data import SegmentationFolderDataModule

    sizes = {"0001TP_008550": (20, 36), "Seq05VD_f02370": (30, 14)}
    for split, names in (("train", ["a", "b"]), ("val", ["c"]), ("test", list(sizes))):
        for name in names:
            height, width = sizes.get(name, (20, 36))
            rgb = np.zeros((height, width, 3), dtype=np.uint8)
            rgb[:, : width // 2, 0] = 250  # left half red: class 2 by ThresholdNet
            for folder, array in ((split, rgb), (f"{split}annot", np.zeros((height, width), np.uint8))):
                (tmp_path / folder).mkdir(exist_ok=True)
                Image.fromarray(array).save(tmp_path / folder / f"{name}.png")
    data = SegmentationFolderDataModule(
        str(tmp_path),
        class_names=["a", "b", "c"],
        size=(16, 16),
        augment=False,
        prepared=prepared,
        num_workers=0,
        image_dir="{split}",
        mask_dir="{split}annot",
        image_suffix=".png",
    )
    if prepared == "require":
        prepare(data, ["test"], workers=1, stream=io.StringIO())
    module = SegmentationModule(ThresholdNet(), CrossEntropyLoss(), num_classes=3)
    writer = PredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[writer]
    )
    trainer.predict(module, datamodule=data, return_predictions=False)
    assert sorted(path.name for path in (tmp_path / "out" / "labels").iterdir()) == [f"{n}.png" for n in sorted(sizes)]
    for name, (height, width) in sizes.items():
        labels = np.asarray(Image.open(tmp_path / "out" / "labels" / f"{name}.png"))
        assert labels.shape == (height, width)
        assert (labels[:, : width // 2 - 1] == 2).all() and (labels[:, width // 2 + 1 :] == 0).all()
