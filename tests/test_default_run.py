"""The README's default run: `pat-seg fit` with no arguments learns, and CE shows the long-tail gap."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard_utils import read_scalars

REPO = Path(__file__).resolve().parents[1]


def run_default_fit(cwd: Path, *args: str) -> dict[str, list[float]]:
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pat_seg", "fit", "--trainer.enable_progress_bar=false", *args]
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, timeout=900)
    (version,) = (cwd / "lightning_logs" / "default").iterdir()
    return read_scalars(version)


@pytest.mark.slow
def test_default_fit_learns_and_pat_narrows_the_tail_gap(tmp_path):
    pat = run_default_fit(tmp_path / "pat")
    assert pat["val/miou"][-1] >= 0.3, pat["val/miou"]
    assert 12 == len(pat["val/miou"])  # the default budget: 12 epochs

    ce = run_default_fit(tmp_path / "ce", "--model.loss=pat_seg.losses.CrossEntropyLoss")
    # Cross-entropy leaves a clear head/tail gap on the default data ...
    assert ce["val/miou_tail"][-1] < ce["val/miou_head"][-1] - 0.3
    # ... which PAT narrows by lifting the tail, after the same budget.
    assert pat["val/miou_tail"][-1] > ce["val/miou_tail"][-1] + 0.1
