"""``benchmarks/gpu_check.py --smoke``: the GPU check runs at tiny sizes on the CPU, so it cannot rot.

The smoke run executes every part of the real check (Triton under its CPU interpreter, wall clock
instead of CUDA events, ``pytest -m gpu`` collecting and skipping, DDP on two CPU processes); the
tests here read its ``results.json`` and check, against expectations written out here, that every
row the GPU run must produce is present and that Triton equals the PyTorch code. The checker's own
verdicts are tested on hand-made records below, so that a missing row cannot pass unnoticed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
# The loss table of docs/benchmarks.md: every loss of the paper in its PyTorch code, PAT through Triton, F.cross_entropy.
LOSS_ROWS = {
    "F.cross_entropy",
    "CrossEntropyLoss",
    "FocalLoss (g=2)",
    "ClassBalancedLoss",
    "ClassBalancedFocalLoss",
    "BalancedSoftmaxLoss",
    "LDAMLoss (+DRW)",
    "BLVLoss (s=0.5)",
    "PATLoss (T=20)",
    "PATLoss (T=20), Triton",
}
# 19 classes (Cityscapes-like) and 150 (ADE20K-like), float32 and bfloat16 logits.
KEYS = {(classes, dtype) for classes in (19, 150) for dtype in ("float32", "bfloat16")}
# Triton vs the PyTorch code, both float32 math: the loss to float32 summation error; the gradient to
# ~1e-6 of its largest entry in float32 and one bfloat16 unit (2^-7 relative) in bfloat16.
GRAD_TOLERANCE = {"float32": 1e-5, "bfloat16": 2**-7}
DATA_PROTOCOLS = 7  # Cityscapes x2, NYUv2 npy x2, NYUv2 .mat, Oxford Pet x2; each from the sources and prepared


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["gpu_check"])
    return sys.modules["gpu_check"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    return run, results, out


def part(results: dict[str, Any], name: str) -> dict[str, Any]:
    record = results["parts"][name]
    assert "data" in record, record.get("error")
    return record["data"]


@pytest.mark.slow
def test_smoke_run_passes_and_writes_summary_log_and_json(smoke: tuple) -> None:
    run, results, out = smoke
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert results["meta"]["passed"] and results["problems"] == {}
    summary = (out / "summary.md").read_text()
    for heading in (
        "1. `pytest -m gpu`",
        "2. Triton vs PyTorch code",
        "3. Loss forward+backward",
        "4. Training step",
        "5. Two-process DDP",
        "6. Data loaders",
    ):
        assert f"## {heading}" in summary
    assert results["parts"]["tests"]["summary"] in (out / "pytest.log").read_text()


@pytest.mark.slow
def test_pytest_part_collects_the_gpu_tests(smoke: tuple) -> None:
    counts = smoke[1]["parts"]["tests"]["counts"]
    # On a CPU every gpu test is collected and skipped by tests/conftest.py; none may fail or error.
    assert counts.get("skipped", 0) > 0 and not counts.get("failed") and not counts.get("error")


@pytest.mark.slow
def test_every_loss_row_at_both_shapes_and_dtypes(smoke: tuple) -> None:
    rows = part(smoke[1], "losses")["rows"]
    found = {(row["shape"][1], row["dtype"], row["loss"]) for row in rows}
    missing = {(c, d, name) for c, d in KEYS for name in LOSS_ROWS} - found
    assert not missing
    for row in rows:
        assert math.isfinite(row["median_ms"]) and row["median_ms"] > 0 and row["peak_mib"] >= 0, row
    reference = {(r["shape"][1], r["dtype"]): r["median_ms"] for r in rows if r["loss"] == "F.cross_entropy"}
    for row in rows:  # the ratio is to F.cross_entropy measured in the same run
        assert row["time_ratio"] == pytest.approx(row["median_ms"] / reference[(row["shape"][1], row["dtype"])])


@pytest.mark.slow
def test_triton_equals_the_pytorch_code_within_tolerance(smoke: tuple) -> None:
    rows = part(smoke[1], "diff")["rows"]
    assert {(row["shape"][1], row["dtype"]) for row in rows} == KEYS
    for row in rows:
        assert row["loss_abs_diff"] == pytest.approx(abs(row["loss_triton"] - row["loss_pytorch"]))
        assert row["loss_abs_diff"] <= 1e-5 * abs(row["loss_pytorch"]), row
        assert row["grad_abs_max"] > 0 and row["grad_dtype"] == row["dtype"]
        assert row["grad_abs_diff"] <= GRAD_TOLERANCE[row["dtype"]] * row["grad_abs_max"], row


@pytest.mark.slow
def test_training_step_rows_for_ce_and_both_pat_paths(smoke: tuple) -> None:
    data = part(smoke[1], "step")
    rows = {row["loss"]: row for row in data["rows"]}
    assert set(rows) == {"CE", "PAT (PyTorch)", "PAT (Triton)"}
    assert data["precision"] == "bf16-mixed" and data["channels_last"] and data["model"].startswith("DeepLabV3Plus")
    for row in rows.values():
        assert row["ms_per_step"] > 0
        assert row["images_per_s"] == pytest.approx(data["batch"] * 1000 / row["ms_per_step"])


@pytest.mark.slow
def test_ddp_runs_two_processes_that_end_with_equal_weights(smoke: tuple) -> None:
    data = part(smoke[1], "ddp")
    ranks = data["ranks"]
    assert sorted(r["rank"] for r in ranks) == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["weight_checksum"] == ranks[1]["weight_checksum"]
    assert data["steps"] > 0 and 0 <= data["val_miou"] <= 1


@pytest.mark.slow
def test_data_loader_rows_and_workers_needed(smoke: tuple) -> None:
    results = part(smoke[1], "data")["results"]
    assert len(results) == 2 * DATA_PROTOCOLS
    assert {r["dataset"] for r in results} == {"Cityscapes", "NYUv2 npy", "NYUv2 .mat", "Oxford Pet"}
    assert sorted(r["path"] for r in results) == ["prepared"] * DATA_PROTOCOLS + ["sources"] * DATA_PROTOCOLS
    for row in results:  # the prepared build's own time, and the on-device augmentation's where it applies
        assert (row["prepare"] is not None) == (row["path"] == "prepared")
        augmented = "augment" in row["protocol"]  # from the sources too: both paths augment on the device
        assert (row["device_augment_ms_per_batch"] is not None) == augmented
    for row in results:
        # One worker's images/s on a core of its own: the inverse of its CPU time per image.
        per_worker = 1000 / row["cpu_ms_per_image"]["1"]
        assert row["images_per_s_per_worker"] == pytest.approx(per_worker)
        assert row["workers_needed"] == math.ceil(row["required_images_per_s"] / per_worker)
        assert all(rate > 0 for rate in row["wall_images_per_s"].values())


# --- the checker's verdicts on hand-made records (fast) -------------------------------------------------
def loss_rows(drop: tuple[int, str, str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for classes, dtype in sorted(KEYS):
        for name in sorted(LOSS_ROWS):
            if (classes, dtype, name) != drop:
                rows.append(
                    {"shape": [2, classes, 4, 4], "dtype": dtype, "loss": name, "median_ms": 1.0, "peak_mib": 1.0}
                )
    return rows


def test_checker_reports_a_missing_loss_row() -> None:
    checker = load_checker()
    assert checker.check("losses", {"data": {"rows": loss_rows()}}, smoke=True) == []
    problems = checker.check(
        "losses", {"data": {"rows": loss_rows(drop=(150, "bfloat16", "FocalLoss (g=2)"))}}, smoke=True
    )
    assert len(problems) == 1 and "FocalLoss (g=2) at 150 classes, bfloat16" in problems[0]


def diff_rows(grad_diff_over_max: float, loss_rel_diff: float = 0.0) -> list[dict[str, Any]]:
    return [
        {"shape": [2, c, 4, 4], "dtype": d, "loss_rel_diff": loss_rel_diff, "grad_diff_over_max": grad_diff_over_max}
        for c, d in sorted(KEYS)
    ]


def test_checker_reports_a_difference_over_tolerance() -> None:
    checker = load_checker()
    assert checker.check("diff", {"data": {"rows": diff_rows(1e-6)}}, smoke=True) == []
    # 1e-3 of the largest gradient: within one bfloat16 unit, far beyond float32 rounding.
    problems = checker.check("diff", {"data": {"rows": diff_rows(1e-3)}}, smoke=True)
    assert len(problems) == 2 and all("float32: gradient differs" in p for p in problems)
    assert len(checker.check("diff", {"data": {"rows": diff_rows(0.0, loss_rel_diff=1e-3)}}, smoke=True)) == 4
    assert checker.check("diff", {"data": {"rows": diff_rows(float("nan"))}}, smoke=True)  # NaN fails too


def test_checker_reports_a_failed_part_and_a_failing_pytest() -> None:
    checker = load_checker()
    assert checker.check("step", {"error": "exit status 1; ..."}, smoke=False) == ["step: exit status 1; ..."]
    failing = {"status": 1, "summary": "1 failed, 35 passed", "counts": {"failed": 1, "passed": 35}}
    assert checker.check("tests", failing, smoke=False)
    all_skipped_on_gpu = {"status": 0, "summary": "36 skipped", "counts": {"skipped": 36}}
    assert checker.check("tests", all_skipped_on_gpu, smoke=False)  # on a GPU machine the tests must run
    assert checker.check("tests", all_skipped_on_gpu, smoke=True) == []
