"""The traps a new user walked into, each replayed through the ``pat-seg`` console script."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count
from PIL import Image
from test_report import make_run, table, val
from test_run_safety import TINY_DATA, TINY_TRAINER, digest, pat_seg, short_error, write
from torch import nn

from pat_seg.callbacks.predictions import class_palette
from pat_seg.data import SyntheticLongTailDataModule
from pat_seg.losses import CrossEntropyLoss
from pat_seg.models import UNet
from pat_seg.module import SegmentationModule

TINY = [f"--data.{key}={value}" for key, value in TINY_DATA.items()] + [
    "--model.model.init_args.base_channels=4",
    "--model.model.init_args.depth=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.max_epochs=1",
]


@pytest.mark.slow
def test_a_mistyped_key_in_a_config_file_names_the_file_the_key_and_the_closest_one(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  loss:\n    class_path: pat_seg.losses.PATLoss\n    init_args:\n      temprature: 5\n")
    result = pat_seg("fit", "--config", str(typo), cwd=tmp_path)
    short_error(result, f"{typo} line 5", "model.loss.init_args.temprature", "did you mean temperature")
    assert result.returncode == 2 and result.stderr.count("temprature") == 1  # said once


@pytest.mark.slow
def test_an_abbreviated_flag_is_refused_with_the_full_name(tmp_path: Path) -> None:
    result = pat_seg("fit", "--trainer.max_epoch=3", cwd=tmp_path)
    short_error(result, "unknown option --trainer.max_epoch", "did you mean --trainer.max_epochs")
    assert result.returncode == 2


@pytest.mark.slow
@pytest.mark.parametrize("command", ["test", "predict"])
def test_a_missing_or_unusable_checkpoint_is_a_short_error(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.ckpt"
    short_error(pat_seg(command, "--ckpt_path", str(missing), *TINY, cwd=tmp_path), str(missing), "does not exist")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    short_error(pat_seg(command, "--ckpt_path", str(garbage), *TINY, cwd=tmp_path), f"cannot read checkpoint {garbage}")


@pytest.mark.slow
def test_best_without_the_runs_config_names_the_config_and_no_checkpoint_warns(tmp_path: Path) -> None:
    config = write(
        tmp_path / "tiny.yaml",
        {
            "trainer": TINY_TRAINER,
            "data": {"init_args": TINY_DATA},
            "model": {"model": {"init_args": {"base_channels": 4, "depth": 1}}},
        },
    )
    assert pat_seg("fit", "--config", str(config), cwd=tmp_path).returncode == 0
    run_config = tmp_path / "lightning_logs" / "tiny" / "version_0" / "config.yaml"
    result = pat_seg("test", "--ckpt_path", "best", cwd=tmp_path)
    short_error(result, "give that run's config", str(run_config))
    assert "ModelCheckpoint" not in result.stderr
    random_weights = pat_seg("test", "--config", str(config), cwd=tmp_path)
    assert random_weights.returncode == 0 and "random weights" in random_weights.stderr


@pytest.mark.slow
def test_an_ambiguous_paired_against_name_keeps_the_tables_and_names_the_choices(tmp_path: Path) -> None:
    # Three seeds of CE and of PAT at T = 5 and T = 20: "PAT" names two methods. By hand, PAT (T=20)
    # minus CE is 0.10 in every seed, so with the exact name the paired cell is +10.00 with no width.
    for seed in range(3):
        make_run(tmp_path, f"ce-s{seed}", val(0.40 + 0.01 * seed), seed=seed)
        for temperature, gain in ((5.0, 0.05), (20.0, 0.10)):
            loss_args = {"temperature": temperature}
            make_run(
                tmp_path, f"pat{temperature:g}-s{seed}", val(0.40 + 0.01 * seed + gain), "PATLoss", loss_args, seed=seed
            )
    ambiguous = pat_seg("report", "--logdir", str(tmp_path), "--paired-against", "PAT", cwd=tmp_path)
    assert ambiguous.returncode == 2
    assert "Table 3" in ambiguous.stdout and "Paired differences" not in ambiguous.stdout
    assert "--paired-against 'PAT (T=20)' or --paired-against 'PAT (T=5)'" in ambiguous.stderr
    assert len(ambiguous.stderr.strip().splitlines()) <= 15
    exact = pat_seg("report", "--logdir", str(tmp_path), "--paired-against", "PAT (T=20)", cwd=tmp_path)
    assert exact.returncode == 0, exact.stderr
    rows = {row[1]: row for row in table(exact.stdout, "Paired differences against PAT (T=20)")}
    assert rows["CE"][2] == "-10.00 [-10.00, -10.00] (n=3)"


@pytest.mark.slow
def test_evaluations_say_where_they_wrote_and_own_images_get_their_own_folder(tmp_path: Path) -> None:
    config = write(
        tmp_path / "tiny.yaml",
        {
            "trainer": TINY_TRAINER,
            "data": {"init_args": {**TINY_DATA, "num_test": 3}},
            "model": {"model": {"init_args": {"base_channels": 4, "depth": 1}}},
        },
    )
    assert pat_seg("fit", "--config", str(config), cwd=tmp_path).returncode == 0
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    from_run = ["--config", str(run / "config.yaml"), "--ckpt_path", "last"]
    tested = pat_seg("test", *from_run, cwd=tmp_path)
    assert f"pat-seg test: metrics written to {run / 'test'}\n" in tested.stderr + tested.stdout
    assert list((run / "test").glob("events.out.tfevents.*"))
    assert pat_seg("predict", *from_run, "--predictions.overlay=true", cwd=tmp_path).returncode == 0
    split = digest(run / "predictions")
    assert sorted(name for name in split if name.endswith(".png")) == [
        f"{kind}/00000{i}.png" for kind in ("labels", "overlays") for i in range(3)
    ]

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("street", "yard"):
        Image.fromarray(np.zeros((16, 24, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"not a JPEG")
    own = pat_seg(
        "predict",
        *from_run,
        "--predictions.overlay=true",
        "--data=ImageFolderDataModule",
        f"--data.root={photos}",
        cwd=tmp_path,
    )
    assert own.returncode == 0, own.stderr[-3000:]
    assert digest(run / "predictions") == split  # the test split's files and config.yaml are untouched
    folder = run / "predictions_photos"
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png")) == [
        "labels/street.png",
        "labels/yard.png",
        "overlays/street.png",
        "overlays/yard.png",
    ]
    assert "ImageFolderDataModule" in (folder / "config.yaml").read_text()
    assert f"cannot read image {photos / 'broken.jpg'}" in own.stderr  # skipped and named
    assert (
        f"wrote 2 label maps to {folder / 'labels'} and overlays to {folder / 'overlays'}; "
        "skipped 1 unreadable image(s)" in own.stderr
    )
    # Label PNGs hold class indices 0-8, near-black in a viewer; the overlay carries the legend of the
    # nine class colours to the right of the 16x24 image.
    assert np.asarray(Image.open(folder / "labels" / "street.png")).max() < 9
    overlay = np.asarray(Image.open(folder / "overlays" / "street.png")).astype(float)
    assert overlay.shape[0] >= 16 and overlay.shape[1] > 24
    legend = overlay[:, 24:].reshape(-1, 3)
    for colour in class_palette(9).numpy() * 255:
        assert (np.abs(legend - colour).max(1) <= 1).any(), colour


def hand_counted_flops(network: nn.Module, image: torch.Tensor) -> int:
    """Multiply-adds x 2 of every convolution in one forward, counted from the layer shapes."""
    total = 0

    def count(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))
        kernel = layer.kernel_size[0] * layer.kernel_size[1]
        if isinstance(layer, nn.ConvTranspose2d):  # each input pixel spreads over a kernel of outputs
            total += 2 * inputs[0].numel() * layer.out_channels // layer.groups * kernel
        else:  # each output pixel gathers a kernel of inputs
            total += 2 * output.numel() * layer.in_channels // layer.groups * kernel

    for layer in network.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            layer.register_forward_hook(count)
    network.eval()
    with torch.no_grad():
        network(image)
    return total


@pytest.mark.slow
def test_the_model_summary_counts_the_flops_of_one_validation_image(tmp_path: Path) -> None:
    tiny = [flag for flag in TINY if "model_summary" not in flag] + ["--trainer.limit_train_batches=1"]
    result = pat_seg("fit", *tiny, "--trainer.enable_model_summary=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = next(line for line in (result.stdout + result.stderr).splitlines() if line.endswith("Total Flops"))
    image_size = TINY_DATA["image_size"]
    network = UNet(num_classes=SyntheticLongTailDataModule().num_classes, base_channels=4, depth=1)
    expected = hand_counted_flops(network, torch.zeros(1, 3, image_size, image_size))
    assert expected > 0 and printed.split("Total")[0].strip() == get_human_readable_count(expected)


@pytest.mark.slow
def test_prepare_help_shows_its_own_options_not_fits(tmp_path: Path) -> None:
    result = pat_seg("prepare", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage: pat-seg prepare") and len(lines) <= 15  # fit's help is over 500 lines
    assert "--splits" in result.stdout and "--workers" in result.stdout and "pat-seg fit --help" in result.stdout
    assert "--trainer." not in result.stdout


@pytest.mark.parametrize(
    "summary, compile_model, expected",
    [(True, False, (1, 3, 16, 16)), (False, False, None), (True, True, None)],
    ids=["summary", "no-summary", "compiled"],
)
def test_an_example_input_is_made_only_for_a_summary_that_counts_flops(
    summary: bool, compile_model: bool, expected: tuple[int, ...] | None
) -> None:
    # Not a console test: it checks that no other fit pays for the summary's example forward (with
    # compile_model it would also be one more compilation), so it calls setup as fit does.
    network = UNet(num_classes=9, base_channels=4, depth=1)
    module = SegmentationModule(network, CrossEntropyLoss(), num_classes=9, compile_model=compile_model)
    data = SyntheticLongTailDataModule(num_train=4, num_val=2, num_test=2, image_size=16, batch_size=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_model_summary=summary, enable_checkpointing=False)
    trainer.strategy.connect(module)
    module.trainer = trainer
    trainer.datamodule = data  # type: ignore[misc]
    data.setup("fit")
    module.setup("fit")
    shape = None if module.example_input_array is None else tuple(module.example_input_array.shape)
    assert shape == expected
