"""Prediction overlays (Fig. 4) and the row-normalised confusion matrix, as pictures and in TensorBoard."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pat_seg.callbacks.predictions import (
    EMPTY_ROW_COLOUR,
    HEAT_COLOUR,
    PredictionImages,
    class_palette,
    colourise,
    confusion_matrix_image,
    prediction_grid,
)
from pat_seg.cli import DEFAULT_CONFIG, cli_main


def test_palette_is_golden_ratio_hsv_and_distinct() -> None:
    palette = class_palette(20)
    for c in (0, 1, 7):  # colorsys is an independent HSV -> RGB
        hue, sat, value = (c * 0.6180339887498949) % 1, 0.85 if c % 2 == 0 else 0.55, 0.95 if (c // 2) % 2 == 0 else 0.7
        assert palette[c].tolist() == pytest.approx(colorsys.hsv_to_rgb(hue, sat, value), abs=1e-6)
    assert len({tuple(round(v, 3) for v in colour) for colour in palette.tolist()}) == 20


def test_colourise_paints_classes_and_blacks_out_ignored_pixels() -> None:
    palette = class_palette(3)
    labels = torch.tensor([[0, 2], [255, 1]])
    rgb = colourise(labels, palette, ignore_index=255)
    assert rgb.shape == (3, 2, 2)
    assert rgb[:, 0, 1].tolist() == palette[2].tolist() and rgb[:, 1, 1].tolist() == palette[1].tolist()
    assert rgb[:, 1, 0].tolist() == [0.0, 0.0, 0.0]


def test_grid_rows_are_image_truth_prediction() -> None:
    images = torch.zeros(2, 3, 4, 5)
    images[1, :, 0, 0] = 2.0  # the one bright pixel of image 1 -> white after min-max stretching
    targets = torch.zeros(2, 4, 5, dtype=torch.long)
    predictions = torch.ones(2, 4, 5, dtype=torch.long)
    targets[1, 3, 4] = 255
    grid = prediction_grid(images, targets, predictions, num_classes=2, ignore_index=255, gap=2)
    assert grid.shape == (3, 2 * 4 + 2, 3 * 5 + 2 * 2)
    palette = class_palette(2)
    top = 4 + 2  # second row of the grid
    assert grid[:, top, 0].tolist() == [1.0, 1.0, 1.0] and grid[:, top, 1].tolist() == [0.0, 0.0, 0.0]
    assert grid[:, top, 5 + 2].tolist() == palette[0].tolist()  # ground truth panel
    assert grid[:, top + 3, 5 + 2 + 4].tolist() == [0.0, 0.0, 0.0]  # its ignored pixel
    assert grid[:, top, 2 * (5 + 2)].tolist() == palette[1].tolist()  # prediction panel
    assert grid[:, 4, :].eq(1).all()  # the white gap between rows
    with pytest.raises(ValueError, match=r"must be \[N, C, H, W\]"):
        prediction_grid(images, targets, predictions[:1], 2, 255)


def test_confusion_matrix_image_is_row_normalised() -> None:
    confmat = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    cell = 6
    image = confusion_matrix_image(confmat, cell=cell)
    strip = cell // 3
    assert image.shape == (3, strip + 3 * cell, strip + 3 * cell)

    def at(row: int, col: int) -> list[float]:
        return image[:, strip + row * cell + cell // 2, strip + col * cell + cell // 2].tolist()

    white, dark = np.ones(3), HEAT_COLOUR.numpy()
    for (row, col), fraction in {(0, 0): 0.75, (0, 1): 0.25, (0, 2): 0.0, (2, 0): 0.5, (2, 2): 0.5}.items():
        assert at(row, col) == pytest.approx(list((1 - fraction) * white + fraction * dark), abs=1e-6)
    assert at(1, 1) == pytest.approx(list(EMPTY_ROW_COLOUR))  # no ground-truth pixels of class 1
    assert image[:, 0, strip + cell * 2].tolist() == class_palette(3)[2].tolist()  # colour key on top
    with pytest.raises(ValueError, match=r"square \[L, L\] matrix; got shape \[2, 3\]"):
        confusion_matrix_image(torch.zeros(2, 3))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="num_images must be >= 1; got 0"):
        PredictionImages(num_images=0)
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1; got 0"):
        PredictionImages(every_n_epochs=0)


def decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"), dtype=np.float64) / 255


@pytest.mark.slow
def test_images_are_in_tensorboard_after_a_short_run(tmp_path: Path) -> None:
    """A 2-epoch fit with the default callbacks writes both images each epoch; the confusion matrix
    image matches a confusion matrix the test computes itself from the trained model."""
    cli = cli_main([
        "--config", DEFAULT_CONFIG, "--trainer.max_epochs=2", "--trainer.limit_train_batches=2", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false", "--data.init_args.num_train=8", "--data.init_args.num_val=6",
        "--data.init_args.image_size=32", "--data.init_args.batch_size=4", "--model.model.init_args.base_channels=4",
        "--model.model.init_args.depth=2", "--model.optimizer.init_args.lr=0.05"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    accumulator = EventAccumulator(cli.trainer.logger.log_dir, size_guidance={"images": 0})
    accumulator.Reload()
    predictions, confusion = accumulator.Images("val/predictions"), accumulator.Images("val/confusion_matrix")
    assert [e.step for e in predictions] == [e.step for e in confusion] == [2, 4]  # one per epoch, no sanity check

    # Four images of 32 px, enlarged 4x to 128 px, 2-px gaps (also enlarged): image | truth | prediction.
    grid = decode(predictions[-1])
    assert grid.shape == (4 * 128 + 3 * 8, 3 * 128 + 2 * 8, 3)
    dataset = cli.datamodule.dataset("val")
    palette = class_palette(9).numpy()
    for row, index in enumerate([0, 2, 3, 5]):  # evenly spaced over the 6 validation images
        truth = dataset[index]["target"].numpy()
        panel = grid[row * 136:row * 136 + 128:4, 136:136 + 128:4]
        expected = np.where((truth == 255)[..., None], 0.0, palette[np.clip(truth, 0, 8)])
        assert np.abs(panel - expected).max() <= 1 / 255 + 1e-9

    model = cli.model.eval()
    counts = np.zeros((9, 9))
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            prediction = model(sample["image"][None]).argmax(1)[0].numpy()
            valid = sample["target"].numpy() != 255
            np.add.at(counts, (sample["target"].numpy()[valid], prediction[valid]), 1)
    heat = decode(confusion[-1])
    cell = 256 // 9
    strip = cell // 3
    for gt in range(9):
        for pred in range(9):
            pixel = heat[strip + gt * cell + cell // 2, strip + pred * cell + cell // 2]
            if counts[gt].sum() == 0:
                expected = np.array(EMPTY_ROW_COLOUR)
            else:
                fraction = counts[gt, pred] / counts[gt].sum()
                expected = 1 - fraction * (1 - HEAT_COLOUR.numpy())
            assert np.abs(pixel - expected).max() <= 1 / 255 + 1e-6, (gt, pred)
