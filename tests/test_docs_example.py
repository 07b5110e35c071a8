"""The plain-PyTorch training loop of docs/losses.md ("In your own training loop") runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "losses.md"


def example_code() -> str:
    text = DOC.read_text()
    section = text.split("## In your own training loop", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under 'In your own training loop'"
    return match.group(1)


def test_the_plain_loop_example_runs_without_lightning() -> None:
    # Afterwards, in the same interpreter: the counts against a count made here pixel by pixel, and
    # no Lightning or torchmetrics among the imported modules.
    check = """
import sys
expected_pixels, expected_images = [0, 0, 0], [0, 0, 0]
for index in range(len(dataset)):
    labels = dataset[index][1]
    for c in range(3):
        n = int((labels == c).sum())
        expected_pixels[c] += n
        expected_images[c] += n > 0
assert stats.pixels == expected_pixels and stats.images == expected_images, (stats, expected_pixels, expected_images)
assert terms.shape == targets.shape and bool((terms[targets == 255] == 0).all())
assert not {"lightning", "pytorch_lightning", "torchmetrics"} & set(sys.modules), sorted(sys.modules)
print("EXAMPLE OK")
"""
    result = subprocess.run(
        [sys.executable, "-c", example_code() + check], capture_output=True, text=True, timeout=600, cwd=DOC.parents[1]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "EXAMPLE OK" in result.stdout
    assert "PATLoss last loss" in result.stdout and "ClassBalancedLoss last loss" in result.stdout
