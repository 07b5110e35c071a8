"""What a person reads from the ``pat-seg`` console script: help that fits, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from test_run_safety import MAX_ERROR_LINES, pat_seg

from pat_seg.cli.errors import configuration_error, project_error
from pat_seg.exceptions import ConfigurationError
from pat_seg.experiments.run_folder import ResumeError


def test_top_level_help_names_every_command() -> None:
    result = pat_seg("--help")
    assert result.returncode == 0
    listed = {
        line.split()[0]
        for line in result.stdout.split("commands:")[1].split("examples:")[0].splitlines()
        if line.strip()
    }
    assert listed == {"prepare", "fit", "validate", "test", "predict", "report", "sweep"}


def test_fit_help_fits_in_600_lines_and_lists_pat_segs_classes() -> None:
    result = pat_seg("fit", "--help")
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) <= 600
    assert "torch.nn.modules" not in result.stdout and "timm.models" not in result.stdout
    for name in ("PATLoss", "CrossEntropyLoss", "BLVLoss", "PATCBMixtureLoss", "SegNet", "DeepLabV3Plus"):
        assert name in result.stdout
    # Abstract bases are no choice: jsonargparse leaves them out of a type's known subclasses.
    assert "SegmentationFolderDataModule" in result.stdout and "DiskDataModule" not in result.stdout


def short_error(result: subprocess.CompletedProcess, code: int, *names: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr[-3000:]
    assert len(lines) <= MAX_ERROR_LINES, result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in result.stderr, result.stderr


@pytest.mark.slow
def test_missing_cityscapes_root_is_a_short_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "cityscapes"
    result = pat_seg("fit", "--config", "configs/cityscapes_pat.yaml", "--data.root", str(missing))
    short_error(result, 2, f"{missing} does not exist", "leftImg8bit")


@pytest.mark.slow
def test_empty_cityscapes_root_is_a_short_configuration_error(tmp_path: Path) -> None:
    for folder in ("leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val"):
        (tmp_path / folder).mkdir(parents=True)
    result = pat_seg(
        "fit", "--config", "configs/cityscapes_pat.yaml", "--data.root", str(tmp_path), "--trainer.logger=false"
    )
    short_error(result, 2, str(tmp_path), "train")


@pytest.mark.slow
def test_bad_temperature_is_named() -> None:
    result = pat_seg("fit", "--model.loss.init_args.temperature=-1")
    short_error(result, 2, "temperature", "-1")
    debug = pat_seg("fit", "--model.loss.init_args.temperature=-1", debug=True)
    assert "Traceback" in debug.stderr  # PAT_SEG_DEBUG=1 keeps the whole story


@pytest.mark.slow
def test_resume_past_the_budget_is_named(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        json.dumps(
            {
                "trainer": {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False},
                "model": {"model": {"init_args": {"base_channels": 4, "depth": 1}}},
                "data": {"init_args": {"num_train": 8, "num_val": 2, "num_test": 2, "image_size": 16, "batch_size": 4}},
            }
        )
    )
    trained = pat_seg("fit", "--config", str(config), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = pat_seg("fit", "--config", str(config), "--ckpt_path", "last", "--trainer.max_epochs=1", cwd=tmp_path)
    short_error(result, 2, "max_epochs=1", "completed 2 epochs")
    finished = pat_seg("fit", "--config", str(config), "--ckpt_path", "last", cwd=tmp_path)
    short_error(finished, 2, "already finished", "completed 2 epochs", "raise --trainer.max_epochs")


def test_only_pat_segs_own_errors_are_shortened() -> None:
    from pat_seg.losses import PATLoss

    def another_librarys_class() -> None:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=-1.0)

    with pytest.raises(ValueError) as rejected:
        another_librarys_class()
    # A constructor rejecting its configured arguments with a plain ValueError, wrapped as jsonargparse wraps it.
    try:
        try:
            another_librarys_class()
        except ValueError as error:
            raise RuntimeError("Does not validate against any of the Union subtypes") from error
    except RuntimeError as wrapper:
        converted = configuration_error(wrapper)
        assert isinstance(converted, ConfigurationError) and str(converted) == str(rejected.value)
    # pat-seg's own classes reject with a ConfigurationError, found through any wrapping.
    try:
        try:
            PATLoss(temperature=-1.0)
        except ValueError as error:
            raise RuntimeError("Does not validate against any of the Union subtypes") from error
    except RuntimeError as wrapper:
        assert isinstance(project_error(wrapper), ConfigurationError) and configuration_error(wrapper) is None
    ours = ResumeError("cannot resume")
    try:
        raise RuntimeError("wrapped by Lightning") from ours
    except RuntimeError as wrapper:
        assert project_error(wrapper) is ours
    # Errors are told apart by type: a torch error raised in pat-seg's own code is not shortened.
    with pytest.raises(RuntimeError) as torch_error:
        torch.cat([torch.zeros(1, 2), torch.zeros(1, 3)], dim=0)
    assert project_error(torch_error.value) is None and configuration_error(torch_error.value) is None
    with pytest.raises(ValueError) as theirs:
        int("x")
    assert project_error(theirs.value) is None
