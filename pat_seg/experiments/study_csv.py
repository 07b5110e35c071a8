"""A study's per-run CSV, kept by ``pat-seg sweep --mode run`` while the study trains (docs/results.md).

The file is the one ``pat-seg report --format csv --per-run`` writes (:func:`~pat_seg.experiments.report.render_runs_csv`)
and ``pat-seg report --from-csv`` reads: one line per run, split and evaluation step. The sweep adds a
run's lines as soon as the run has finished, so a study survives the machine it ran on: a clone that
holds only the sweep file, its configs and this file knows which runs are done (a run is its ``run``
column, ``<name>/<version>`` under the sweep's ``save_dir``) and rebuilds the report without event files.

Labels (data set, model, method) are the report's, worked out over the whole grid before any run
trains (:func:`grid_labels`): a label depends on the other runs (a regime is named only where two
occur), and a run's lines must read the same whether it finished first or last. Every save rewrites
the file in full to a temporary file beside it and renames that over it (:func:`os.replace`), so a
process killed at any moment leaves the old file or the new one, never half a line; the sweep's one
process is the only writer.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pat_seg.atomic_files import write_text_atomically
from pat_seg.experiments.report import RUN_COLUMNS, SPLITS, LabelledRun, label_experiments, render_runs_csv, run_fields
from pat_seg.experiments.run_folder import CONFIG
from pat_seg.experiments.runs import Run, read_scalars

Line = dict[str, str]
# The columns every line of one run shares: what the run is, not what it measured.
LABEL_COLUMNS = RUN_COLUMNS[: RUN_COLUMNS.index("split")]
DATA_PREFIX = "data."


class IncompleteRun(ValueError):
    """A run whose commands succeeded but which logged no value of a split the study records."""


def merged_columns(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """The header of a file holding lines of both headers: the run columns, then the data arguments,
    then the metrics, each group in the order first seen (``old``'s, then what ``new`` adds)."""
    seen = list(dict.fromkeys([*old, *new]))
    data = [column for column in seen if column.startswith(DATA_PREFIX)]
    metrics = [column for column in seen if column not in RUN_COLUMNS and column not in data]
    return [*RUN_COLUMNS, *data, *metrics]


def parse_lines(text: str) -> tuple[list[str], list[Line]]:
    """Header and lines of CSV text (one file, or one split of :func:`render_runs_csv`)."""
    reader = csv.DictReader(io.StringIO(text))
    lines = list(reader)
    return list(reader.fieldnames or []), lines


@dataclass
class StudyCsv:
    """The lines of a per-run CSV by run, in file order, and its header."""

    path: Path
    columns: list[str] = field(default_factory=lambda: list(RUN_COLUMNS))
    lines: dict[str, list[Line]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> StudyCsv:
        """The study at ``path`` (empty when the file does not exist yet); a ``ValueError`` naming the file
        when it cannot be written there or is not a per-run CSV. Reads only: nothing is created."""
        path = Path(path)
        folder = path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            why = "does not exist" if not folder.exists() else "is not a folder" if not folder.is_dir() else ""
            raise ValueError(f"csv: {str(path)!r}: its folder {str(folder)!r} {why or 'cannot be written'}")
        if not path.exists():
            return cls(path)
        if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
            raise ValueError(f"csv: {str(path)!r} is not a file this process can read and write")
        try:
            columns, lines = parse_lines(path.read_text())
        except (UnicodeDecodeError, csv.Error) as error:
            raise ValueError(f"csv: {str(path)!r} is not a per-run CSV ({error})") from None
        if not set(RUN_COLUMNS) <= set(columns) or any(None in line or None in line.values() for line in lines):
            raise ValueError(
                f"csv: {str(path)!r} is not a per-run CSV of `pat-seg report --format csv --per-run` "
                f"(expected the columns {list(RUN_COLUMNS)} and as many fields on every line as the header)"
            )
        study = cls(path, merged_columns(columns, []))
        for line in lines:
            study.lines.setdefault(line["run"], []).append(line)
        return study

    def has(self, run: str, splits: Sequence[str]) -> bool:
        """Whether the file holds lines of ``run`` for every one of ``splits``."""
        held = {line["split"] for line in self.lines.get(run, [])}
        return set(splits) <= held

    def put(self, run: str, columns: Sequence[str], lines: Sequence[Line]) -> None:
        """Make ``lines`` the lines of ``run`` (a rerun's replace its old ones, of every split)."""
        self.columns = merged_columns(self.columns, columns)
        self.lines[run] = [dict(line) for line in lines]

    def relabel(self, labels: dict[str, Line]) -> list[tuple[str, str, str]]:
        """Give the lines of each run in ``labels`` those label fields; returns ``(run, old, new)`` labels
        of the runs that changed (a grid that gained a regime names the regime of the earlier runs too)."""
        changed = []
        for run, fields in labels.items():
            lines = self.lines.get(run, [])
            old = {column: lines[0][column] for column in LABEL_COLUMNS} if lines else fields
            if old != fields:
                changed.append((run, " / ".join(old.values()), " / ".join(fields.values())))
                for line in lines:
                    line.update(fields)
        return changed

    def text(self, order: Sequence[str] = ()) -> str:
        """The file's text: runs not in ``order`` first (as they were), then the runs of ``order`` in that
        order, so the file reads the same however the runs interleaved. A data argument that a run's
        data module lacks reads ``null``, as in :func:`render_runs_csv`."""
        position = {run: index for index, run in enumerate(order)}
        runs = sorted(self.lines, key=lambda run: position.get(run, -1))  # stable: others keep their order
        missing = {column: ("null" if column.startswith(DATA_PREFIX) else "") for column in self.columns}
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writeheader()
        for run in runs:
            writer.writerows({**missing, **line} for line in self.lines[run])
        return buffer.getvalue()

    def save(self, order: Sequence[str] = ()) -> None:
        """Write the file atomically (:func:`~pat_seg.atomic_files.write_text_atomically`)."""
        write_text_atomically(self.path, self.text(order))


def grid_labels(run_dirs: Sequence[Path], configs: Sequence[dict[str, Any]], root: Path) -> dict[str, LabelledRun]:
    """The report's labels of every run of a grid, from the configs its runs will save (nothing trained
    yet), by the run's ``run`` field (its folder relative to ``root``, the save_dir)."""
    runs = [Run(run_dir, config, {}) for run_dir, config in zip(run_dirs, configs, strict=True)]
    return {run_fields(entry, root)["run"]: entry for entry in label_experiments(runs)}


def read_run(run_dir: Path) -> Run:
    """A finished run folder: its saved config and every scalar it logged (its test/ folder's too)."""
    return Run(run_dir, yaml.safe_load((run_dir / CONFIG).read_text()) or {}, read_scalars(run_dir))


def run_lines(run: Run, labels: LabelledRun, splits: Sequence[str], root: Path) -> tuple[list[str], list[Line]]:
    """Header and lines of a finished ``run`` for each of ``splits`` (in :data:`SPLITS` order), with the
    grid's ``labels``; :class:`IncompleteRun` when it logged no ``<split>/miou``."""
    entry = LabelledRun(run, labels.dataset, labels.model, labels.method, labels.is_pat)
    columns: list[str] = []
    lines: list[Line] = []
    for split in sorted(splits, key=SPLITS.index):
        if run.last(f"{split}/miou") is None:
            raise IncompleteRun(f"{run.path} logged no {split}/miou")
        header, more = parse_lines(render_runs_csv([entry], split, root=root))
        columns, lines = merged_columns(columns, header), lines + more
    return columns, lines
