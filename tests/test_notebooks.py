"""The notebooks run top to bottom on the embedded default and draw their figures (nbclient, kernel python3)."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from report_labels import LOSS_LABELS

from pat_seg.data.synthetic import CLASS_NAMES
from pat_seg.experiments.report import RUN_COLUMNS

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["pat_weight_curves", "class_frequency", "results", "ablation", "beyond_pat", "camvid"]
# What the notebooks read besides docs/studies, copied into the scratch repository as they are.
READ_FILES = [
    "configs/sweeps/camvid_table3.yaml",
    "configs/sweeps/synthetic_ablation.yaml",
    "configs/sweeps/synthetic_table3.yaml",
    "docs/camvid.md",
]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def _execute(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, studies: dict[str, str] | None = None
) -> tuple[nbformat.NotebookNode, Path]:
    """Execute notebook ``name`` in a scratch repository (``studies``: files of docs/studies to replace, by
    name); the executed notebook and the scratch repository's root."""
    # The kernel inherits the environment: make it import this checkout's pat_seg, and give it a
    # temporary folder of its own, to see what it leaves there.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    kernel_tmp = tmp_path / "kernel_tmp"
    kernel_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))
    # A scratch copy of what the notebooks read (../docs/studies and READ_FILES), so a figure a notebook
    # writes to ../docs/figures lands there and not in the repository.
    scratch = tmp_path / "repository"
    shutil.copytree(REPO / "docs" / "studies", scratch / "docs" / "studies")
    for relative in READ_FILES:
        (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, scratch / relative)
    for file_name, text in (studies or {}).items():
        (scratch / "docs" / "studies" / file_name).write_text(text)
    (scratch / "docs" / "figures").mkdir()
    (scratch / "notebooks").mkdir()
    notebook = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(scratch / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    stderr = [
        output["text"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("name") == "stderr"
    ]
    assert not stderr, f"{name} printed to stderr: {stderr[:3]}"
    assert not [path.name for path in kernel_tmp.iterdir() if path.name.startswith("pat_seg")], (
        "left in the temp folder"
    )
    return notebook, scratch


def _figures(notebook: nbformat.NotebookNode) -> list[dict]:
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


def _text(notebook: nbformat.NotebookNode) -> str:
    """What the notebook printed and displayed as text or Markdown."""
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    return "".join(output.get("text", "") + output.get("data", {}).get("text/markdown", "") for output in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_draws_a_figure_prints_no_stderr_and_leaves_no_files(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notebook, scratch = _execute(name, monkeypatch, tmp_path)
    if name == "beyond_pat":  # the committed curves study is complete: its figure is drawn from it
        assert (scratch / "docs" / "figures" / "budget_curves.png").stat().st_size > 0
    if name == "camvid":  # the figure is written once the committed study holds all 44 runs, not before
        with (REPO / "docs" / "studies" / "camvid_table3.csv").open(newline="") as handle:
            tested = {row["run"] for row in csv.DictReader(handle) if row["split"] == "test"}
        complete = len(tested) == 44  # configs/sweeps/camvid_table3.yaml's grid
        assert (scratch / "docs" / "figures" / "camvid.png").exists() == complete
        assert complete or ("provisional" in _text(notebook) and "figure not written" in _text(notebook))
    assert _figures(notebook), f"{name} drew no figure"


def _complete_camvid_study() -> tuple[str, int]:
    """A complete CamVid study file: every run the sweep plans (arm x seed), each a copy of one committed
    run's lines (cycled through them) under its own run name and seed; and the number of runs."""
    with (REPO / "docs" / "studies" / "camvid_table3.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_run: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    committed = list(by_run.values())
    # The sweep's grid, written out by hand from configs/sweeps/camvid_table3.yaml's axes.
    planned = [(arm, seed) for arm in ("ce", "cbfocal", "pat", "patcb") for seed in range(5)]
    planned += [
        (arm, seed)
        for arm in ("focal", "cb", "ldam", "bms", "blv", "cbfocal_b09999", "pat_no_eq4", "pat_beta_minmax")
        for seed in range(3)
    ]
    lines = [
        {**row, "run": f"camvid_table3/s{seed}-{arm}", "seed": str(seed), "data_seed": str(seed)}
        for index, (arm, seed) in enumerate(planned)
        for row in committed[index % len(committed)]
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue(), len(planned)


@pytest.mark.slow
def test_camvid_notebook_writes_its_figure_once_the_study_is_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    study, planned = _complete_camvid_study()
    assert planned == 44  # docs/camvid.md: 4 core arms x 5 seeds + 8 arms x 3 seeds
    notebook, scratch = _execute("camvid", monkeypatch, tmp_path, {"camvid_table3.csv": study})
    assert (scratch / "docs" / "figures" / "camvid.png").stat().st_size > 0
    text = _text(notebook)
    assert f"{planned} of {planned} runs" in text and "provisional" not in text


def _study_text(runs: list[dict[str, object]]) -> str:
    """A per-run study file (the columns `pat-seg report --format csv --per-run` writes for the synthetic
    data, one `val` line per run) of ``runs``: each a dict of those columns; a class IoU not given is 0.9."""
    columns = [*RUN_COLUMNS, "data.imbalance", "data.rarity", "dice_error", "miou", "miou_head", "miou_tail"]
    columns += ["pixel_accuracy", *(f"iou/{name}" for name in CLASS_NAMES)]
    defaults = {"model": "UNet", "split": "val", "step": 383, "dice_error": 0.1, "miou_head": 0.8}
    defaults |= {"pixel_accuracy": 0.9, **{f"iou/{name}": 0.9 for name in CLASS_NAMES}}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**defaults, **run} for run in runs)
    return buffer.getvalue()


# The synthetic ablation's grid, written out by hand from configs/sweeps/synthetic_ablation.yaml's axes,
# with the method label the report gives each loss over that grid.
ABLATION_REGIMES = [("small", 10), ("small", 100), ("small", 1000), ("infrequent", 100), ("infrequent", 1000)]
ABLATION_LOSSES = {
    "ce": "CE",
    "cbfocal": "CBFocal",
    "pat": "PAT (T=20)",
    "pat_nobeta": "PAT w/o beta",
    "pat_noeq4": "PAT w/o Eq. 4 (T=20)",
}


def _ablation_run(index: int, rarity: str, imbalance: int, loss: str, seed: int) -> dict[str, object]:
    """One run of the ablation (regime number ``index``) with values whose paired differences and learned
    counts are worked out by hand in the tests below (IoU as fractions)."""
    miou = {"ce": 0.50, "cbfocal": 0.59 - 0.01 * seed, "pat": 0.60 + 0.01 * seed, "pat_nobeta": 0.60}
    miou["pat_noeq4"] = 0.60 + 0.02 * seed
    tail = {"ce": 0.0, "cbfocal": 0.25 - 0.01 * index, "pat": 0.30, "pat_nobeta": 0.30 - 0.01 * seed}
    tail["pat_noeq4"] = 0.30
    light = [0.30, 0.40, 0.50] if loss == "pat" else [0.0, 0.05, 0.11]
    return {
        "run": f"synthetic_ablation/{rarity}{imbalance}-{loss}-s{seed}",
        "dataset": f"Synthetic (imbalance={imbalance}, rarity={rarity})",
        "method": ABLATION_LOSSES[loss],
        "is_pat": int(loss.startswith("pat")),
        "seed": seed,
        "data_seed": seed,
        "data.imbalance": float(imbalance),
        "data.rarity": rarity,
        "miou": miou[loss],
        "miou_tail": tail[loss],
        "iou/person": 0.5,
        "iou/pole": 0.0,
        "iou/sign": [0.10, 0.25, 0.0][seed],  # 10 points exactly is not learned (IoU > 10)
        "iou/light": light[seed],
    }


def _ablation_study(leave_out: str | None = None) -> str:
    """The whole grid (75 runs) but ``leave_out``; the CB-Focal runs in reverse seed order, so pairing
    by position instead of by seed would give other differences."""
    runs = []
    for index, (rarity, imbalance) in enumerate(ABLATION_REGIMES):
        for loss in ABLATION_LOSSES:
            seeds = (2, 1, 0) if loss == "cbfocal" else (0, 1, 2)
            runs += [_ablation_run(index, rarity, imbalance, loss, seed) for seed in seeds]
    return _study_text([run for run in runs if run["run"] != leave_out])


# Student-t quantiles t(0.975, df) from a table: 2 degrees of freedom 4.302653, 1 degree 12.706205.
# PAT - CB-Focal mIoU per seed: 1, 3, 5 points -> mean 3, sd 2, half-width 4.302653 * 2 / sqrt(3) = 4.968.
# PAT - PAT w/o beta (mIoU and tail): 0, 1, 2 -> mean 1, sd 1, half-width 4.302653 / sqrt(3) = 2.484.
# PAT - PAT w/o Eq. 4 mIoU: 0, -1, -2 -> mean -1; its tail: 0 at every seed.
# PAT - CB-Focal tail: 5 + the regime's number at every seed (no spread).
ABLATION_PAIRED = [
    "| small | 10 | PAT − CB-Focal (n=3) | +3.00 [-1.97, +7.97] | +5.00 [+5.00, +5.00] |",
    "| small | 10 | PAT − PAT w/o beta (n=3) | +1.00 [-1.48, +3.48] | +1.00 [-1.48, +3.48] |",
    "| small | 10 | PAT − PAT w/o Eq. 4 (n=3) | -1.00 [-3.48, +1.48] | +0.00 [+0.00, +0.00] |",
    "| small | 1000 | PAT − CB-Focal (n=3) | +3.00 [-1.97, +7.97] | +7.00 [+7.00, +7.00] |",
    "| infrequent | 100 | PAT − CB-Focal (n=3) | +3.00 [-1.97, +7.97] | +8.00 [+8.00, +8.00] |",
]
# Learned = IoU > 10 points: person (50 everywhere) 3/3, pole (0) 0/3, sign (10, 25, 0) 1/3; light 3/3
# for PAT (30, 40, 50), 1/3 for the others (0, 5, 11).
ABLATION_LEARNED = [
    "| small | 100 | PAT | 3/3 (s0 50.0, s1 50.0, s2 50.0) | 0/3 (s0 0.0, s1 0.0, s2 0.0) | "
    "1/3 (s0 10.0, s1 25.0, s2 0.0) | 3/3 (s0 30.0, s1 40.0, s2 50.0) |",
    "| infrequent | 1000 | PAT w/o Eq. 4 | 3/3 (s0 50.0, s1 50.0, s2 50.0) | 0/3 (s0 0.0, s1 0.0, s2 0.0) | "
    "1/3 (s0 10.0, s1 25.0, s2 0.0) | 1/3 (s0 0.0, s1 5.0, s2 11.0) |",
]


def test_ablation_notebook_rebuilds_its_tables_and_figure_from_the_complete_study(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notebook, scratch = _execute("ablation", monkeypatch, tmp_path, {"synthetic_ablation.csv": _ablation_study()})
    assert (scratch / "docs" / "figures" / "ablation.png").stat().st_size > 0
    text = _text(notebook)
    assert "75 of 75 runs" in text and "provisional" not in text
    for line in ABLATION_PAIRED + ABLATION_LEARNED:
        assert line in text, f"missing: {line}"
    assert _figures(notebook)


def test_ablation_notebook_draws_an_incomplete_study_as_provisional_and_writes_no_figure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    study = _ablation_study(leave_out="synthetic_ablation/small10-pat-s2")
    notebook, scratch = _execute("ablation", monkeypatch, tmp_path, {"synthetic_ablation.csv": study})
    assert not (scratch / "docs" / "figures" / "ablation.png").exists()
    text = _text(notebook)
    assert "74 of 75 runs: provisional" in text and "figure not written" in text
    # small10 PAT - CB-Focal over seeds 0 and 1: 1 and 3 points, half-width 12.706205 * sqrt(2) / sqrt(2).
    assert "| small | 10 | PAT − CB-Focal (n=2) | +2.00 [-10.71, +14.71] | +5.00 [+5.00, +5.00] |" in text
    assert "| small | 10 | PAT | 2/2 (s0 50.0, s1 50.0) |" in text
    assert _figures(notebook)


def test_ablation_notebook_refuses_a_study_whose_method_column_does_not_tell_the_variants_apart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The PAT w/o beta runs labelled as PAT: the variants from the run names no longer match the labels.
    study = _ablation_study().replace("PAT w/o beta", "PAT (T=20)")
    with pytest.raises(CellExecutionError, match="does not tell the variants apart"):
        _execute("ablation", monkeypatch, tmp_path, {"synthetic_ablation.csv": study})


# The synthetic Table 3 grid, from configs/sweeps/synthetic_table3.yaml's axes, with the report's labels.
TABLE3_LOSSES = LOSS_LABELS


def test_results_notebook_prints_the_report_of_the_complete_table3_study(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Loss number i, seed s: mIoU 40 + 2 i + (s - 1) points (mean 40 + 2 i, sd 1); the light learned
    # (IoU > 10) by PAT's seed 2 alone (5, 10, 30 points), by no CE seed; every other class by all.
    runs = [
        {
            "run": f"synthetic_table3/{loss}-s{seed}",
            "dataset": "Synthetic",
            "method": label,
            "is_pat": int(loss == "pat"),
            "seed": seed,
            "data_seed": seed,
            "data.imbalance": "null",
            "data.rarity": "small",
            "miou": 0.40 + 0.02 * index + 0.01 * (seed - 1),
            "miou_tail": 0.2,
            "iou/light": [0.05, 0.10, 0.30][seed] if loss == "pat" else 0.0,
        }
        for index, (loss, label) in enumerate(TABLE3_LOSSES.items())
        for seed in range(3)
    ]
    notebook, _ = _execute("results", monkeypatch, tmp_path, {"synthetic_table3.csv": _study_text(runs)})
    text = _text(notebook)
    assert "24 of 24 runs" in text and "tiny" not in text
    assert "| CE | 40.00 ± 1.00 (n=3) |" in text
    assert "| PAT (T=20) | **54.00 ± 1.00 (n=3)** |" in text  # the best mIoU, in bold
    assert "| PAT (T=20) | " + "3/3 | " * 8 + "1/3 |" in text
    assert "| CE | " + "3/3 | " * 8 + "0/3 |" in text
    assert _figures(notebook)
