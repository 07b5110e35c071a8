"""pat-seg report prints labels that hold markdown's or LaTeX's own characters, and its tables keep their shape.

Runs are hand-written (``test_report.make_run``), one per character, on a folder data set named
``d<c>x`` with a class ``c<c>x`` and a method labelled ``CE (tag=m<c>x)`` (a loss argument of the user's
own: the report reads only the config). The markdown is read back as GitHub renders it, by the rules
of the GitHub Flavored Markdown spec written out below (tables extension; backslash escapes), not by
the writer's code; each LaTeX spelling is written here by hand.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from test_decision import DECISION, run_rule, write_study
from test_report import make_run, val
from test_run_safety import pat_seg

from pat_seg.experiments.decision_render import render_markdown
from pat_seg.experiments.report import report

# Each character, and a backslash right before a pipe, as LaTeX must spell it in text mode.
LATEX = {
    "|": r"\textbar{}",
    "\\": r"\textbackslash{}",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "\\|": r"\textbackslash{}\textbar{}",
}
CHARACTERS = list(LATEX)
METRICS = ("mIoU↑", "Pix Acc↑", "Dice err↓")


def inline(text: str) -> str:
    """GFM backslash escapes: a backslash before an ASCII punctuation character shows that character."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def cells(line: str) -> list[str]:
    """A markdown table row as GitHub shows it: split at each ``|`` not right after a backslash, each
    cell's ``\\|`` made ``|``, then read as inline text."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    assert parts[0] == "" and parts[-1] == "", f"a row starts and ends with an unescaped '|': {line!r}"
    return [inline(part.strip().replace("\\|", "|")) for part in parts[1:-1]]


def markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """The rows of the table under each ``##`` or ``###`` heading (header first, the alignment rule left
    out), by the heading as shown."""
    tables: dict[str, list[list[str]]] = {}
    for section in re.split(r"^#{2,3} ", text, flags=re.MULTILINE)[1:]:
        heading, *lines = section.splitlines()
        rows = [line for line in lines if line.startswith("|")]
        if rows:
            tables[inline(heading)] = [cells(rows[0]), *map(cells, rows[2:])]
    return tables


def write_runs(logs: Path) -> dict[str, float]:
    """One run per character (mIoU 0.40, 0.41, ...); its mIoU by character."""
    mious = {}
    for i, character in enumerate(CHARACTERS):
        mious[character] = 0.40 + i / 100
        make_run(
            logs,
            f"run{i}",
            {**val(mious[character]), f"val/iou/c{character}x": [(1, 0.5)]},  # step 1, as make_run logs the others
            loss_args={"tag": f"m{character}x"},
            data="SegmentationFolderDataModule",
            data_args={"root": f"/data/run{i}", "name": f"d{character}x", "class_names": ["sky", f"c{character}x"]},
        )
    return mious


def test_markdown_rows_keep_their_cells_and_show_each_label(tmp_path: Path) -> None:
    mious = write_runs(tmp_path)
    tables = markdown_tables(report(str(tmp_path)))
    header, *rows = tables["Table 3: method x data set (UNet)"]
    assert len(header) == 1 + 3 * len(CHARACTERS)
    assert sorted(header[1:]) == sorted(f"d{c}x {metric}" for c in CHARACTERS for metric in METRICS)
    assert all(len(row) == len(header) for row in rows)
    shown = {row[0]: dict(zip(header, row)) for row in rows}
    assert sorted(shown) == sorted(f"CE (tag=m{c}x)" for c in CHARACTERS)
    for character, miou in mious.items():
        by_column = shown[f"CE (tag=m{character}x)"]
        assert by_column[f"d{character}x mIoU↑"] == f"{miou * 100:.2f} (n=1)"
        assert sum(value != "" for value in by_column.values()) == 1 + 3  # its label and its own data set's cells
        header, row = tables[f"Table 6: per-class IoU (d{character}x, UNet)"]
        assert len(row) == len(header) and f"c{character}x↑" in header
        assert dict(zip(header, row))[f"c{character}x↑"] == "50.00 (n=1)"


def latex_cells(line: str) -> list[str]:
    assert line.endswith(r" \\"), line
    return line.removesuffix(r" \\").split(" & ")


def test_latex_spells_each_character_as_latex_prints_it(tmp_path: Path) -> None:
    mious = write_runs(tmp_path)
    text = report(str(tmp_path), "latex")
    first = text.split(r"\end{table}")[0]
    assert r"\caption{Table 3: method x data set (UNet): " in first
    lines = first.splitlines()
    header = latex_cells(lines[lines.index(r"\toprule") + 1])
    rows = [latex_cells(line) for line in lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]]
    assert len(header) == 1 + 3 * len(CHARACTERS) and all(len(row) == len(header) for row in rows)
    by_label = {row[0]: dict(zip(header, row)) for row in rows}
    for character, miou in mious.items():
        spelled = LATEX[character]
        row = by_label[f"CE (tag=m{spelled}x)"]
        assert row[rf"d{spelled}x mIoU$\uparrow$"] == f"{miou * 100:.2f} (n=1)"
        assert rf"\caption{{Table 6: per-class IoU (d{spelled}x, UNet): " in text
        assert rf" & c{spelled}x$\uparrow$ & " in text


def test_the_per_run_csv_keeps_every_label_and_rebuilds_the_same_report(tmp_path: Path) -> None:
    write_runs(tmp_path / "logs")
    per_run = report(str(tmp_path / "logs"), fmt="csv", per_run=True)
    rows = list(csv.DictReader(io.StringIO(per_run)))
    assert sorted({row["dataset"] for row in rows}) == sorted(f"d{c}x" for c in CHARACTERS)
    assert sorted({row["method"] for row in rows}) == sorted(f"CE (tag=m{c}x)" for c in CHARACTERS)
    assert {f"iou/c{c}x" for c in CHARACTERS} <= set(rows[0])
    study = tmp_path / "study.csv"
    study.write_text(per_run)
    for fmt in ("markdown", "latex", "csv"):
        assert report("unused", fmt, from_csv=str(study)) == report(str(tmp_path / "logs"), fmt)
    console = pat_seg("report", "--from-csv", str(study), "--format", "latex", cwd=tmp_path)
    assert console.returncode == 0, console.stderr
    assert console.stdout == report(str(tmp_path / "logs"), "latex")


def test_the_decision_report_shows_names_with_a_pipe_or_a_backslash_in_their_cells(tmp_path: Path) -> None:
    comparison, group, sky = "C|1\\", "S|", "S\\|ky"  # a comparison's name, a group's, a class's
    decision = {
        **DECISION,
        "groups": {group if name == "S" else name: classes for name, classes in DECISION["groups"].items()},
        "comparisons": {
            comparison if name == "C1" else name: {**spec, "on": group if spec["on"] == "S" else spec["on"]}
            for name, spec in DECISION["comparisons"].items()
        },
    }
    sweep, study = write_study(tmp_path, decision=decision)
    study.write_text(study.read_text().replace("iou/Sky", f"iou/{sky}", 1))
    tables = markdown_tables(render_markdown(run_rule(sweep, study)))
    for heading, (header, *rows) in tables.items():
        assert all(len(row) == len(header) for row in rows), heading
    comparisons = next(rows for heading, rows in tables.items() if heading.startswith("Comparisons"))
    assert [row[:3] for row in comparisons[1:3]] == [[comparison, "pat - ce", "miou"], ["C2", "pat - cbfocal", "miou"]]
    assert comparisons[3][:3] == ["C3", "pat - cbfocal", group]
    per_class = next(rows for heading, rows in tables.items() if heading.startswith("Per-class"))
    assert [row[0] for row in per_class[1:]] == [sky, "Pole", "Sign", "Fence", "Bike"]
