"""The notebooks run top to bottom on the embedded default and draw their figures (nbclient, kernel python3)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["pat_weight_curves", "class_frequency", "results", "ablation", "beyond_pat"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_draws_a_figure_prints_no_stderr_and_leaves_no_files(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The kernel inherits the environment: make it import this checkout's pat_seg, and give it a
    # temporary folder of its own, to see what it leaves there.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    kernel_tmp = tmp_path / "kernel_tmp"
    kernel_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))
    # A scratch copy of what the notebooks read (../docs/studies), so a figure a notebook writes to
    # ../docs/figures lands there and not in the repository.
    scratch = tmp_path / "repository"
    shutil.copytree(REPO / "docs" / "studies", scratch / "docs" / "studies")
    (scratch / "docs" / "figures").mkdir()
    (scratch / "notebooks").mkdir()
    notebook = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(scratch / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    if name == "beyond_pat":  # the committed curves study is complete: its figure is drawn from it
        assert (scratch / "docs" / "figures" / "budget_curves.png").stat().st_size > 0
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert figures, f"{name} drew no figure"
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
