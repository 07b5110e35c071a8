"""``pat-seg prepare``'s data module comes from fit's parser, and a run that lacks a prepared split names
the command that prepares it, built from the run's own options (pat_seg/cli/prepare.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data_cityscapes import write_cityscapes
from test_prepared_runs import cityscapes_config

from pat_seg.cli import cli_main
from pat_seg.cli.prepare import data_module_from_args
from pat_seg.cli.prepare_hint import prepare_command
from pat_seg.data import CityscapesDataModule
from pat_seg.data.prepared import PreparedSplitError


class Note:
    """Test-only: a class-typed argument of a data module, given as a class path in a config."""

    def __init__(self, text: str = "") -> None:
        self.text = text


class NotedCityscapes(CityscapesDataModule):
    """Test-only: a disk data module with a nested class argument."""

    def __init__(self, note: Note, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.note = note


def test_prepare_command_keeps_the_runs_options_but_resume_and_prepared() -> None:
    options = ["--config", "my runs/a.yaml", "--ckpt_path", "last", "--data.prepared=require", "--data.root=/d"]
    assert prepare_command(options) == "pat-seg prepare --config 'my runs/a.yaml' --data.root=/d"
    assert prepare_command(["--ckpt_path=best", "--data.prepared", "auto", "--seed_everything=3"]) == (
        "pat-seg prepare --seed_everything=3"
    )


def test_a_run_requiring_a_missing_prepared_split_names_its_own_prepare_command(tmp_path: Path) -> None:
    write_cityscapes(tmp_path / "data")
    config = cityscapes_config(tmp_path / "run", tmp_path / "data")
    with pytest.raises(PreparedSplitError, match="no prepared 'train' split") as error:
        # Not deterministic: the trainer would switch torch's deterministic algorithms on for later tests.
        cli_main(["fit", "--config", str(config), "--trainer.deterministic=false"])
    assert f"run: pat-seg prepare --config {config} --trainer.deterministic=false\n" in str(error.value)


def test_prepare_builds_the_data_module_as_fit_does_nested_class_paths_too(tmp_path: Path) -> None:
    write_cityscapes(tmp_path / "data")
    config = json.loads(cityscapes_config(tmp_path / "run", tmp_path / "data").read_text())
    config["data"]["class_path"] = "test_prepare_cli.NotedCityscapes"
    config["data"]["init_args"]["note"] = {"class_path": "test_prepare_cli.Note", "init_args": {"text": "hi"}}
    path = tmp_path / "noted.yaml"
    path.write_text(json.dumps(config))
    datamodule, options = data_module_from_args(["--config", str(path), "--data.batch_size=3", "--workers=2"])
    assert isinstance(datamodule, NotedCityscapes) and datamodule.batch_size == 3
    assert isinstance(datamodule.note, Note) and datamodule.note.text == "hi"  # built, not left a dict
    assert options["workers"] == 2 and options["splits"] == ["train", "val", "test"]
