"""Data-module options through ``pat-seg``: the loader settings of every module, and a module used for the
wrong command refused before any work."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from test_run_safety import pat_seg, short_error

from pat_seg.cli import cli_main
from pat_seg.data import ImageFolderDataModule, SegmentationDataModule, SyntheticLongTailDataModule

# Every loader setting of SegmentationDataModule, each set away from its default.
LOADER_SETTINGS: dict[str, Any] = {
    "batch_size": 3,
    "num_workers": 2,
    "pin_memory": True,
    "persistent_workers": True,
    "eval_batch_size": 5,
    "seed": 7,
}


def photos(folder: Path) -> Path:
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder


def test_the_loader_settings_are_declared_once_in_the_base_module() -> None:
    base = inspect.signature(SegmentationDataModule.__init__).parameters
    assert sorted(base) == sorted(["self", *LOADER_SETTINGS])
    for module in (SyntheticLongTailDataModule, ImageFolderDataModule):
        own = inspect.signature(module.__init__).parameters
        # The synthetic set keeps its own default batch size (64x64 images); nothing else is repeated.
        assert set(own) & set(LOADER_SETTINGS) <= {"batch_size"}, module
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values()), module


@pytest.mark.parametrize("command,data", [("fit", "SyntheticLongTailDataModule"), ("predict", "ImageFolderDataModule")])
def test_every_loader_setting_parses_and_reaches_the_module(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: str, data: str
) -> None:
    folder = ["--data.root", str(photos(tmp_path / "photos")), "--data.num_classes=3", "--data.size=[8,8]"]
    flags = [f"--data.{key}={str(value).lower()}" for key, value in LOADER_SETTINGS.items()]
    with pytest.raises(SystemExit) as done:
        cli_main(
            [command, "--data", data, *(folder if data == "ImageFolderDataModule" else []), *flags, "--print_config"]
        )
    assert done.value.code in (0, None)
    init_args = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert {key: init_args[key] for key in LOADER_SETTINGS} == LOADER_SETTINGS
    module = {
        "SyntheticLongTailDataModule": SyntheticLongTailDataModule,
        "ImageFolderDataModule": ImageFolderDataModule,
    }
    built = module[data](**init_args)
    assert {key: getattr(built, key) for key in LOADER_SETTINGS} == LOADER_SETTINGS


@pytest.mark.parametrize("command", ["fit", "prepare"])
def test_an_image_folder_is_refused_for_training_first_naming_the_module_to_use(tmp_path: Path, command: str) -> None:
    folder = photos(tmp_path / "photos")
    result = pat_seg(command, "--data", "ImageFolderDataModule", "--data.root", str(folder), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    short_error(result, "serves `pat-seg predict` only", "SegmentationFolderDataModule")
    # Before any other work: not the missing num_classes, and nothing written beside the folder.
    assert "num_classes" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
