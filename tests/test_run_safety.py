"""A new user's mistakes through the ``pat-seg`` console script: runs stay intact, errors say what is wrong.

- A failed resume (``--ckpt_path last`` with another network) writes nothing into any run: every
  file is byte-identical afterwards, the error is short, and ``pat-seg report`` prints the same table.
- A checkpoint whose pickle would run code is refused by fit, test and predict; the code never runs.
- A torch error inside a network's ``forward`` keeps its traceback; a label out of range does not need one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from test_checkpoint_files import crafted_checkpoint

REPO = Path(__file__).resolve().parents[1]
PAT_SEG = str(Path(sys.executable).parent / "pat-seg")
MAX_ERROR_LINES = 15
TINY_DATA = {"num_train": 8, "num_val": 2, "num_test": 2, "image_size": 16, "batch_size": 4}
TINY_TRAINER = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


def pat_seg(
    *args: str, cwd: Path | None = None, debug: bool = False, timeout: float = 300, python_path: Sequence[Path] = ()
) -> subprocess.CompletedProcess:
    """The ``pat-seg`` console script on this checkout (and tests/, for test-only classes; ``python_path``:
    more folders to import from), in ``cwd`` (default: the repository), with ``PAT_SEG_DEBUG`` set only
    when ``debug``."""
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), *map(str, python_path)]),
    }
    environment.pop("PAT_SEG_DEBUG", None)
    if debug:
        environment["PAT_SEG_DEBUG"] = "1"
    return subprocess.run(
        [PAT_SEG, *args], cwd=cwd or REPO, env=environment, capture_output=True, text=True, timeout=timeout
    )


def write(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


def short_error(result: subprocess.CompletedProcess, *names: str, after_log: bool = False) -> None:
    """A non-zero exit without a traceback, in <= 15 lines (``after_log``: from the error line on,
    for a run that failed part-way and logged its progress before)."""
    assert result.returncode not in (0, None), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    if after_log:
        lines = lines[next(index for index, line in enumerate(lines) if ": error: " in line) :]
    assert len(lines) <= MAX_ERROR_LINES, result.stderr
    for name in names:
        assert name in result.stderr, result.stderr


def digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_a_failed_resume_leaves_every_run_as_it_was(tmp_path: Path) -> None:
    tiny = write(
        tmp_path / "tiny_pat.yaml",
        {
            "trainer": TINY_TRAINER,
            "data": {"init_args": TINY_DATA},
            "model": {"model": {"class_path": "pat_seg.models.UNet", "init_args": {"base_channels": 4, "depth": 1}}},
        },
    )
    # The second network as a config piece, composed like configs/model/*.yaml.
    other = write(
        tmp_path / "attention_unet.yaml",
        {
            "model": {
                "model": {"class_path": "pat_seg.models.AttentionUNet", "init_args": {"base_channels": 4, "depth": 1}}
            }
        },
    )
    assert pat_seg("fit", "--config", str(tiny), cwd=tmp_path).returncode == 0
    trained = pat_seg(
        "fit",
        "--config",
        str(tiny),
        "--config",
        str(other),
        "--name",
        "tiny_attention",
        "--seed_everything",
        "1",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    before = digest(tmp_path)
    report_before = pat_seg("report", "--logdir", "lightning_logs", cwd=tmp_path)
    assert report_before.returncode == 0 and "AttUNet" in report_before.stdout, report_before.stderr[-3000:]

    resumed = pat_seg(
        "fit",
        "--config",
        str(tiny),
        "--config",
        str(other),
        "--seed_everything",
        "1",
        "--ckpt_path",
        "last",
        cwd=tmp_path,
    )
    short_error(resumed, "tiny_pat/version_0", "pat_seg.models.AttentionUNet")
    assert digest(tmp_path) == before
    assert pat_seg("report", "--logdir", "lightning_logs", cwd=tmp_path).stdout == report_before.stdout


@pytest.mark.slow
def test_a_checkpoint_that_would_run_code_is_refused_by_fit_test_and_predict(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    run = tmp_path / "lightning_logs" / "default" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    last = crafted_checkpoint(run / "checkpoints" / "last.ckpt", marker)
    tiny = ["--trainer.logger=false", *[f"--data.{key}={value}" for key, value in TINY_DATA.items()]]
    for command in (
        ["fit", "--ckpt_path", "last"],
        ["fit", "--ckpt_path", str(last)],
        ["test", "--ckpt_path", str(last), *tiny],
        ["predict", "--ckpt_path", str(last), *tiny],
    ):
        result = pat_seg(*command, cwd=tmp_path)
        short_error(result, str(last), "system", "weights_only=True")
        assert result.returncode == 2
        assert not marker.exists(), " ".join(command)


@pytest.mark.slow
def test_a_torch_error_in_a_networks_forward_keeps_its_traceback(tmp_path: Path) -> None:
    result = pat_seg(
        "fit",
        "--model.model",
        "cli_fixtures.ShapeBugNetwork",
        "--trainer.logger=false",
        *[f"--data.{key}={value}" for key, value in TINY_DATA.items()],
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "torch.cat" in result.stderr, result.stderr[-3000:]
    assert "Sizes of tensors must match" in result.stderr
    assert "pat-seg fit: error" not in result.stderr


@pytest.mark.slow
def test_a_label_out_of_range_is_a_short_run_failure(tmp_path: Path) -> None:
    result = pat_seg(
        "fit",
        "--data",
        "cli_fixtures.OutOfRangeValidationLabels",
        "--trainer.logger=false",
        *[f"--data.{key}={value}" for key, value in TINY_DATA.items()],
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    short_error(result, "label 12", "batch 0", after_log=True)
    assert result.returncode == 1
