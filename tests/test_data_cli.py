"""`pat-seg fit --config configs/<data set>_<loss>.yaml --data.root <fixture>` for every data-set config.

Each config runs in-process on a fixture in the publisher's layout, 2 steps on CPU with its SegNet
shrunk to base_channels 4. A class that a config names but this checkout lacks (a renamed loss, data
module or network) fails the fast test below, never skips.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml
from test_data_cityscapes import write_cityscapes
from test_data_nyuv2 import write_npy
from test_data_oxford_pet import write_pet

from pat_seg.cli import cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# config prefix -> (fixture writer, size flag value, expected classes of the paper protocol). Sizes are
# at least 32: SegNet pools 5 times.
DATA_SETS = {
    "cityscapes": (write_cityscapes, "[32,64]", 20),
    "nyuv2": (write_npy, "[32,40]", 14),
    "oxford_pet": (write_pet, "[36,32]", 3),
}
CONFIG_FILES = sorted(p for prefix in DATA_SETS for p in CONFIGS.glob(f"{prefix}_*.yaml"))


def class_paths(config: Path) -> dict[str, str]:
    """The class path of the network, loss and data module that ``config`` names, through its pieces."""
    text = yaml.safe_load(config.read_text())
    return {
        "model.model": text["model"]["model"]["class_path"],
        "model.loss": yaml.safe_load((CONFIGS / text["model"]["loss"]).read_text())["class_path"],
        "data": yaml.safe_load((CONFIGS / text["data"]).read_text())["class_path"],
    }


def missing_classes(config: Path) -> list[str]:
    """``"<key>: <class path>"`` for every class of ``config`` that does not import."""
    missing = []
    for key, class_path in class_paths(config).items():
        module, _, name = class_path.rpartition(".")
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            missing.append(f"{key}: {class_path}")
    return missing


def test_every_data_set_has_all_eight_loss_configs() -> None:
    losses = {"pat", "ce", "focal", "cb", "cbfocal", "bms", "ldam", "blv"}
    for prefix in DATA_SETS:
        assert {p.stem[len(prefix) + 1 :] for p in CONFIGS.glob(f"{prefix}_*.yaml")} == losses


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_class_a_config_names_imports(config: Path) -> None:
    assert not missing_classes(config), f"{config.name} names classes this checkout lacks: {missing_classes(config)}"


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_fit_runs_two_steps_on_a_fixture(config: Path, tmp_path: Path) -> None:
    assert not missing_classes(config), f"{config.name} names classes this checkout lacks: {missing_classes(config)}"
    text = yaml.safe_load(config.read_text())
    assert text["trainer"]["max_steps"] == 30000 and text["model"]["model"]["class_path"] == "pat_seg.models.SegNet"
    text["model"]["model"]["init_args"] = {"base_channels": 4}
    # The copy lives in tmp_path: keep the data and loss pieces found.
    text["data"] = str(CONFIGS / text["data"])
    text["model"]["loss"] = str(CONFIGS / text["model"]["loss"])
    local = tmp_path / config.name
    local.write_text(yaml.safe_dump(text))

    prefix = next(p for p in DATA_SETS if config.stem.startswith(p + "_"))
    write, size, classes = DATA_SETS[prefix]
    write(tmp_path / "data")  # at most 8 training images: batch_size 8 makes each epoch one step,
    # so 2 steps run validation twice. (--trainer.limit_train_batches=1 would parse as 1.0 = 100%.)
    cli = cli_main(
        [
            "fit",
            "--config",
            str(local),
            "--data.root",
            str(tmp_path / "data"),
            f"--data.size={size}",
            "--data.batch_size=8",
            "--data.num_workers=0",
            "--trainer.max_steps=2",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
        ]
    )
    assert cli.trainer.global_step == 2
    assert cli.datamodule.num_classes == classes == cli.model.num_classes
    assert "val/miou" in cli.trainer.callback_metrics
    # What the loggers record, against counts taken here pixel by pixel (not with count_classes).
    hparams = yaml.safe_load((Path(cli.trainer.logger.log_dir) / "hparams.yaml").read_text())
    train = cli.datamodule.dataset("train")  # the paper configs do not augment: these are the counted pixels
    expected = torch.zeros(classes, dtype=torch.long)
    for index in range(len(train)):
        target = train[index]["target"]
        expected += torch.bincount(target[target != cli.datamodule.ignore_index], minlength=classes)
    assert hparams["class_counts"] == expected.tolist()
