"""pat-seg report on folders of the user's own: each data set is a column named after it, never pooled
with another, and one data set read from two places is one column.

Runs are hand-written run folders (``test_report.make_run``: config.yaml and an event file) whose
values are chosen here; the expected cells are computed from them in float64 (``test_report.cell``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_report import cell, make_run, table, val

from pat_seg.experiments.report import report

FOLDER = "SegmentationFolderDataModule"
# One layout and one class list for every data set below: only the folder (or the name) differs.
LAYOUT = {"class_names": ["sky", "road", "light"], "size": [64, 64], "image_dir": "{split}", "mask_dir": "{split}annot"}


def folder_run(logs: Path, version: str, miou: float, seed: int, **data_args: Any) -> Path:
    """A CE / UNet run on a SegmentationFolderDataModule data set, its last val/miou ``miou``."""
    return make_run(logs, version, val(miou), seed=seed, data=FOLDER, data_args={**LAYOUT, **data_args})


def saved_data_args(run: Path) -> dict[str, Any]:
    return yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]


def columns(text: str, title: str) -> list[str]:
    """The header cells of the markdown table under the heading that contains ``title``."""
    section = text.split(title, 1)[1]
    header = next(line for line in section.splitlines() if line.startswith("|"))
    return [c.strip() for c in header.strip("|").split("|")]


def miou_cells(text: str) -> dict[str, str]:
    """Table 3's mIoU cell of its one method (CE) by data set, without the best-value marks."""
    title = "Table 3: method x data set (UNet)"
    (row,) = table(text, title)
    by_column = dict(zip(columns(text, title), row))
    assert by_column.pop("Method") == "CE"
    return {c.removesuffix(" mIoU↑"): v.strip("*") for c, v in by_column.items() if c.endswith(" mIoU↑")}


def test_two_folders_of_one_layout_and_classes_are_two_data_sets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The same seeds on both: were the data sets one experiment, one run of each seed would be a rerun.
    folder_run(tmp_path, "camvid-s0", 0.40, seed=0, root="/data/CamVid")
    folder_run(tmp_path, "camvid-s1", 0.44, seed=1, root="/data/CamVid")
    folder_run(tmp_path, "mine-s0", 0.60, seed=0, root="/data/Mine")
    folder_run(tmp_path, "mine-s1", 0.66, seed=1, root="/data/Mine")
    text = report(str(tmp_path))
    assert miou_cells(text) == {"CamVid": cell([0.40, 0.44]), "Mine": cell([0.60, 0.66])}
    assert "Table 6: per-class IoU (CamVid, UNet)" in text and "Table 6: per-class IoU (Mine, UNet)" in text
    assert "SegmentationFolder" not in text
    assert "warning" not in capsys.readouterr().err  # no run was taken for a rerun of another


def test_one_folder_name_on_two_machines_is_one_data_set(tmp_path: Path) -> None:
    # Saved before `name` existed (no such key), on another machine with `name: null` (what a run saves
    # now), and with the folder's name given as `name`: one data set, whatever the root.
    old = folder_run(tmp_path, "a-s0", 0.40, seed=0, root="/home/a/data/CamVid")
    new = folder_run(tmp_path, "b-s1", 0.44, seed=1, root="/scratch/b/CamVid/", name=None)
    folder_run(tmp_path, "c-s2", 0.47, seed=2, root="/mnt/cv", name="CamVid")
    assert "name" not in saved_data_args(old) and saved_data_args(new)["name"] is None
    assert miou_cells(report(str(tmp_path))) == {"CamVid": cell([0.40, 0.44, 0.47])}


def test_a_given_name_wins_and_a_root_without_a_folder_name_keeps_the_class_label(tmp_path: Path) -> None:
    folder_run(tmp_path, "half-s0", 0.30, seed=0, root="data/CamVid", name="CamVid half")
    folder_run(tmp_path, "half-s1", 0.36, seed=1, root="data/CamVid", name="CamVid half")
    folder_run(tmp_path, "full-s0", 0.50, seed=0, root="data/CamVid")
    folder_run(tmp_path, "here-s0", 0.20, seed=0, root=".")
    assert miou_cells(report(str(tmp_path))) == {
        "CamVid": "50.00 (n=1)",
        "CamVid half": cell([0.30, 0.36]),
        "SegmentationFolder": "20.00 (n=1)",
    }


def test_other_class_names_under_one_folder_name_are_another_data_set(tmp_path: Path) -> None:
    folder_run(tmp_path, "a", 0.40, seed=0, root="/data/CamVid")
    folder_run(tmp_path, "b", 0.60, seed=0, root="/data/CamVid", class_names=["sky", "road", "car"])
    assert miou_cells(report(str(tmp_path))) == {
        "CamVid (class_names=['sky', 'road', 'car'])": "60.00 (n=1)",
        "CamVid (class_names=['sky', 'road', 'light'])": "40.00 (n=1)",
    }


def test_a_folder_named_like_one_of_pat_segs_data_sets_says_whose_it_is(tmp_path: Path) -> None:
    folder_run(tmp_path, "folder", 0.40, seed=0, root="/data/Synthetic")
    make_run(tmp_path, "embedded", val(0.60), seed=0)  # SyntheticLongTailDataModule, labelled Synthetic
    assert miou_cells(report(str(tmp_path))) == {
        "Synthetic": "60.00 (n=1)",
        "Synthetic (SegmentationFolder)": "40.00 (n=1)",
    }


def test_the_per_run_csv_keeps_the_names_and_a_comma_in_one(tmp_path: Path) -> None:
    folder_run(tmp_path / "logs", "a-s0", 0.40, seed=0, root="/data/CamVid")
    folder_run(tmp_path / "logs", "b-s0", 0.60, seed=0, root="/data/roads", name="roads, 2024")
    per_run = report(str(tmp_path / "logs"), fmt="csv", per_run=True)
    rows = list(csv.DictReader(io.StringIO(per_run)))
    assert {row["run"]: row["dataset"] for row in rows} == {"sweep/a-s0": "CamVid", "sweep/b-s0": "roads, 2024"}
    # The name is the dataset column and the classes are the iou/<class> columns: no data.* column repeats them.
    data_columns = [column for column in rows[0] if column.startswith("data.")]
    assert data_columns == ["data.image_dir", "data.mask_dir", "data.size"]
    (tmp_path / "study.csv").write_text(per_run)
    rebuilt = report("unused", from_csv=str(tmp_path / "study.csv"))
    assert rebuilt == report(str(tmp_path / "logs"))
    assert miou_cells(rebuilt) == {"CamVid": "40.00 (n=1)", "roads, 2024": "60.00 (n=1)"}
