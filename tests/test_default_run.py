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


# The bounds come from docs/results.md's 3 seeds of this budget (mean ± sd, n = 3, its rerun): PAT mIoU
# 71.08 ± 0.64, tail mIoU 41.63 ± 2.35; CE mIoU 46.15 ± 2.98, head 69.23 ± 4.46, tail 0. This run is seed 0 (README:
# PAT 0.716, CE 0.480); another CPU or torch build rounds differently, so each bound sits about 3.5 sd
# (of the seeds) beyond the seeds' mean, not at the seed-0 value.
@pytest.mark.slow
def test_default_fit_learns_and_pat_narrows_the_tail_gap(tmp_path):
    pat = run_default_fit(tmp_path / "pat")
    assert 12 == len(pat["val/miou"])  # the default budget: 12 epochs
    assert pat["val/miou"][-1] >= 0.69, pat["val/miou"]

    ce = run_default_fit(tmp_path / "ce", "--model.loss=pat_seg.losses.CrossEntropyLoss")
    # Cross-entropy leaves a clear head/tail gap on the default data ...
    assert ce["val/miou_tail"][-1] < ce["val/miou_head"][-1] - 0.3
    # ... which PAT narrows by lifting the tail (0 -> about 0.4), after the same budget ...
    assert pat["val/miou_tail"][-1] > ce["val/miou_tail"][-1] + 0.3
    # ... for an mIoU about 25 points above CE's.
    assert pat["val/miou"][-1] > ce["val/miou"][-1] + 0.15
