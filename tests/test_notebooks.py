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

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["pat_weight_curves", "class_frequency", "results", "ablation", "beyond_pat", "camvid"]
# What the notebooks read besides docs/studies, copied into the scratch repository as they are.
READ_FILES = ["configs/sweeps/camvid_table3.yaml", "docs/camvid.md"]


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
    if name == "camvid":  # the committed CamVid study is not complete yet: its figure is not written
        assert not (scratch / "docs" / "figures" / "camvid.png").exists()
        assert "provisional" in _text(notebook) and "figure not written" in _text(notebook)
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
