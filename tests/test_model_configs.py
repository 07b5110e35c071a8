"""configs/model/*.yaml pieces compose with a data/loss config, print, and train through the CLI."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download in tests

from pathlib import Path

import pytest
import torch
import yaml

from pat_seg.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
PIECES = ROOT / "configs" / "model"
BASE = str(ROOT / "configs" / "synthetic_pat.yaml")

# What each piece must resolve to once composed over pat_seg/configs/default.yaml (a UNet with
# base_channels 16, depth 3): the piece's class and every init argument at the paper's setting, so
# none of the default UNet's values may survive the switch of class_path.
EXPECTED = {
    "segnet": ("pat_seg.models.SegNet", {"in_channels": 3, "base_channels": 64}),
    "unet": ("pat_seg.models.UNet", {"in_channels": 3, "base_channels": 64, "depth": 4}),
    "attention_unet": ("pat_seg.models.AttentionUNet", {"in_channels": 3, "base_channels": 64, "depth": 4}),
    "unet_plus_plus": (
        "pat_seg.models.UNetPlusPlus",
        {"in_channels": 3, "base_channels": 32, "depth": 4, "deep_supervision": False},
    ),
    "deeplabv3": (
        "pat_seg.models.DeepLabV3",
        {"in_channels": 3, "backbone": "resnet50", "output_stride": 16, "pretrained": False, "pretrained_path": None},
    ),
    "deeplabv3plus": (
        "pat_seg.models.DeepLabV3Plus",
        {"in_channels": 3, "backbone": "resnet50", "output_stride": 16, "pretrained": False, "pretrained_path": None},
    ),
}
# Flags that shrink each model for a 2-step CPU run.
SMALL = {
    "segnet": ["--model.model.init_args.base_channels", "4"],
    "unet": ["--model.model.init_args.base_channels", "4", "--model.model.init_args.depth", "2"],
    "attention_unet": ["--model.model.init_args.base_channels", "4", "--model.model.init_args.depth", "2"],
    "unet_plus_plus": [
        "--model.model.init_args.base_channels",
        "4",
        "--model.model.init_args.depth",
        "2",
        "--model.model.init_args.deep_supervision",
        "true",
    ],
    "deeplabv3": ["--model.model.init_args.backbone", "resnet18"],
    "deeplabv3plus": ["--model.model.init_args.backbone", "resnet18", "--model.model.init_args.output_stride", "8"],
}
HEAVY = {"deeplabv3", "deeplabv3plus"}


def piece_params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


def test_every_piece_is_covered() -> None:
    assert sorted(p.stem for p in PIECES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_print_config_composes_the_piece(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", BASE, "--config", str(PIECES / f"{name}.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    class_path, init_args = EXPECTED[name]
    assert config["model"]["model"] == {"class_path": class_path, "init_args": init_args}
    assert config["model"]["loss"]["class_path"] == "pat_seg.losses.PATLoss"  # the base config still applies
    assert config["data"]["class_path"] == "pat_seg.data.SyntheticLongTailDataModule"


def tiny_fit_args(name: str, tmp_path: Path) -> list[str]:
    return [
        "fit",
        "--config",
        BASE,
        "--config",
        str(PIECES / f"{name}.yaml"),
        *SMALL[name],
        "--data.num_train",
        "4",
        "--data.num_val",
        "2",
        "--data.image_size",
        "32",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.logger",
        "false",
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.callbacks",
        "[]",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]


@pytest.mark.parametrize("name", piece_params(EXPECTED))
def test_each_piece_trains_two_steps_through_the_cli(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cli = cli_main(tiny_fit_args(name, tmp_path))
    model = cli.model.model
    assert f"pat_seg.models.{type(model).__name__}" == EXPECTED[name][0]
    assert cli.trainer.global_step == 2
    # The same seed rebuilds the weights the run started from.
    initial = cli_main(tiny_fit_args(name, tmp_path)[1:], run=False).model.model.state_dict()
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert moved, "two optimizer steps changed no weight"
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


# torch.compile's C++ code generation for the CPU takes minutes on a 2-core machine; on a GPU it is quick.
@pytest.mark.slow
@pytest.mark.gpu
def test_compile_and_channels_last_switches_train_through_the_cli(tmp_path: Path) -> None:
    args = tiny_fit_args("segnet", tmp_path) + [
        "--model.compile_model",
        "true",
        "--model.channels_last",
        "true",
        "--trainer.accelerator",
        "gpu",
        "--trainer.devices",
        "1",
    ]
    cli = cli_main(args)
    assert cli.trainer.global_step == 2
    # Compiled in place: the checkpoint keys stay those of the plain network.
    assert all(not key.startswith("_orig_mod") for key in cli.model.model.state_dict())
    assert cli.model.model.encoders[0][0][0].weight.is_contiguous(memory_format=torch.channels_last)
