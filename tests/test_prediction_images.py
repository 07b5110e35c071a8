"""Prediction overlays (Fig. 4) and the row-normalised confusion matrix, as pictures and in TensorBoard."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_data_cityscapes import write_cityscapes

from pat_seg.callbacks.predictions import (
    PredictionImages,
    class_palette,
    colourise,
    confusion_matrix_figure,
    figure_to_image,
    legend_figure,
    prediction_figure,
    prediction_grid,
    row_normalised,
)
from pat_seg.cli import DEFAULT_CONFIG, cli_main
from pat_seg.data import CityscapesDataModule


def test_palette_is_golden_ratio_hsv_and_distinct() -> None:
    palette = class_palette(20)
    for c in range(20):  # colorsys is an independent HSV -> RGB
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
    assert grid[:, :, 5:7].eq(1).all() and grid[:, :, 12:14].eq(1).all()  # and between columns
    assert grid[:, :, 0].ne(1).any() and grid[:, 0, :].ne(1).any()  # no white border outside the panels
    touching = prediction_grid(images, targets, predictions, num_classes=2, ignore_index=255, gap=0)
    assert touching.shape == (3, 2 * 4, 3 * 5) and touching[:, 4, 5].tolist() == palette[0].tolist()
    with pytest.raises(ValueError, match=r"must be \[N, C, H, W\]"):
        prediction_grid(images, targets, predictions[:1], 2, 255)


def test_confusion_matrix_figure_shows_rows_normalised_with_names_and_titles() -> None:
    confmat = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    names = ["sky", "road", "light"]
    figure = confusion_matrix_figure(confmat, names)
    axes = figure.axes[0]
    shown = axes.images[0].get_array()
    expected = np.array([[0.75, 0.25, 0.0], [np.nan, np.nan, np.nan], [0.5, 0.0, 0.5]])  # by hand
    assert np.ma.getmaskarray(shown)[1].all() and not np.ma.getmaskarray(shown)[[0, 2]].any()
    np.testing.assert_allclose(np.ma.filled(shown, np.nan), expected, equal_nan=True)
    assert [label.get_text() for label in axes.get_xticklabels()] == names
    assert [label.get_text() for label in axes.get_yticklabels()] == names
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("prediction", "ground truth")
    assert sorted(text.get_text() for text in axes.texts) == ["0.25", "0.50", "0.50", "0.75"]
    image = figure_to_image(figure)
    assert image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1 and image.shape[1] >= 300
    np.testing.assert_allclose(row_normalised(confmat)[2].numpy(), [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match=r"square \[L, L\] matrix; got shape \[2, 3\]"):
        row_normalised(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="got 2 class names for a 3x3"):
        confusion_matrix_figure(confmat, names[:2])


def test_prediction_figure_titles_columns_and_has_a_legend_of_class_colours() -> None:
    grid = prediction_grid(
        torch.rand(2, 3, 8, 8),
        torch.zeros(2, 8, 8, dtype=torch.long),
        torch.ones(2, 8, 8, dtype=torch.long),
        num_classes=3,
        ignore_index=255,
    )
    figure = prediction_figure(grid, ["sky", "road", "light"], ignore_index=255)
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["image", "ground truth", "prediction"]
    legend = axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["sky", "road", "light", "ignored (255)"]
    palette = class_palette(3).tolist()
    for patch, colour in zip(legend.get_patches(), palette):
        assert list(patch.get_facecolor()[:3]) == pytest.approx(colour)
    np.testing.assert_allclose(axes.images[0].get_array(), grid.permute(1, 2, 0).numpy())


def test_the_overlay_legend_numbers_each_class_by_its_label_value_and_wraps_long_lists() -> None:
    legend = legend_figure(["sky", "road", "light"]).legends[0]
    assert [text.get_text() for text in legend.get_texts()] == ["0 sky", "1 road", "2 light"]
    for patch, colour in zip(legend.get_patches(), class_palette(3).tolist()):
        assert list(patch.get_facecolor()[:3]) == pytest.approx(colour)
    wide = legend_figure([str(c) for c in range(61)])
    figure_to_image(wide)  # lays the legend out
    columns = {round(text.get_window_extent().x0) for text in wide.legends[0].get_texts()}
    assert len(columns) == 3  # 61 entries, at most 30 a column


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="num_images must be an integer >= 1; got 0"):
        PredictionImages(num_images=0)
    with pytest.raises(ValueError, match="every_n_epochs must be an integer >= 1; got 0"):
        PredictionImages(every_n_epochs=0)


def decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"), dtype=np.float64) / 255


def test_the_fixed_validation_images_are_what_the_network_gets_not_the_stored_bytes(tmp_path: Path) -> None:
    """A disk data set's loader yields uint8 images (pat_seg/data/base.py); the callback feeds the network
    and draws the panels from float32 images in [0, 1] (the stored bytes / 255) and long targets."""
    write_cityscapes(tmp_path, train=2, val=3)
    datamodule = CityscapesDataModule(str(tmp_path), size=(8, 16), augment=False, batch_size=2)
    loader = datamodule.val_dataloader()
    stored = [datamodule.dataset("val")[i] for i in (0, 2)]  # 2 images: the first and the last
    image, target = PredictionImages(num_images=2)._fixed_batch(
        SimpleNamespace(val_dataloaders=loader, datamodule=datamodule)
    )
    assert stored[0]["image"].dtype == torch.uint8
    assert image.dtype == torch.float32 and target.dtype == torch.long and image.shape == (2, 3, 8, 16)
    expected = torch.stack([sample["image"].double() / 255 for sample in stored]).float()
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-7)
    assert torch.equal(target, torch.stack([sample["target"].long() for sample in stored]))


@pytest.mark.slow
def test_images_are_in_tensorboard_after_a_short_run(tmp_path: Path) -> None:
    """A 2-epoch fit with the default callbacks writes both images each epoch; the matrix they draw is
    the one the test computes itself from the trained model."""
    cli = cli_main(
        [
            "--config",
            DEFAULT_CONFIG,
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.num_train=8",
            "--data.init_args.num_val=6",
            "--data.init_args.image_size=32",
            "--data.init_args.batch_size=4",
            "--model.model.init_args.base_channels=4",
            "--model.model.init_args.depth=2",
            "--model.optimizer.init_args.lr=0.05",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    accumulator = EventAccumulator(cli.trainer.logger.log_dir, size_guidance={"images": 0})
    accumulator.Reload()
    predictions, confusion = accumulator.Images("val/predictions"), accumulator.Images("val/confusion_matrix")
    assert [e.step for e in predictions] == [e.step for e in confusion] == [2, 4]  # one per epoch, no sanity check
    for event in (predictions[-1], confusion[-1]):
        picture = decode(event)
        assert picture.shape[0] >= 300 and picture.shape[1] >= 300 and picture.std() > 0.05

    model = cli.model.eval()
    dataset = cli.datamodule.dataset("val")
    counts = np.zeros((9, 9))
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            prediction = model(sample["image"][None]).argmax(1)[0].numpy()
            valid = sample["target"].numpy() != 255
            np.add.at(counts, (sample["target"].numpy()[valid], prediction[valid]), 1)
    np.testing.assert_array_equal(cli.model.confusion_matrices["val"].cpu().numpy(), counts)
