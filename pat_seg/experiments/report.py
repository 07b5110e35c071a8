"""``pat-seg report``: the paper's tables (Tables 3-6, Fig. 5 numbers) from finished runs.

Which value a run contributes: the value its ``<split>/<metric>`` tag holds at the LAST logged step,
i.e. the model at the end of training. The paper trains a fixed budget (30,000 iterations with the
learning rate annealed to 0) and reports that model; picking each run's best epoch on the split that
is also reported would select on the evaluation data and flatter every method. ``--split test`` reads
the tags ``pat-seg test`` wrote (same logger name and version as the fit run) instead of ``val``.
Utilisation tags (``utilisation/...``, logged per epoch) are averaged over the epochs of a run.

Cells are the mean over the runs that differ only in seed, ``± sample standard deviation`` (n-1)
when there are two or more, and the number of runs ``(n=3)``; the best mean of each column (within
each model for Tables 4 and 5) is marked. Runs are pooled only when their saved configs are equal
apart from the seeds and logging settings (:attr:`pat_seg.experiments.runs.Run.identity`): runs that
differ in anything else (epochs, batch size, precision, ...) get rows of their own, labelled with what
differs, and of two runs of one experiment with the same seeds only the newest counts (a warning names
both). mIoU, pixel accuracy and IoU are printed in percent, Dice error (1 - mean Dice) as a fraction,
as in the paper; CSV holds the raw values.

The command line is :mod:`pat_seg.experiments.report_command`.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import yaml

from pat_seg.experiments.class_identity import resolve
from pat_seg.experiments.paired import PairedDifference, holm_adjust, paired_difference
from pat_seg.experiments.run_folder import yaml_value
from pat_seg.experiments.run_status import unfinished_reason
from pat_seg.experiments.runs import (
    DATA_SET_NAME,
    NOT_IDENTITY,
    Run,
    differing_keys,
    display_labels,
    find_runs,
    identity_key,
)
from pat_seg.losses import BEYOND_PAPER_LOSSES, PAPER_LOSSES, PATLoss
from pat_seg.models import PAPER_MODELS
from pat_seg.table_text import latex_text, markdown_text

FORMATS = ("markdown", "latex", "csv")
SPLITS = ("val", "test")
# tag -> (column name, scale for printing, higher is better; None: no best marked)
METRICS: dict[str, tuple[str, float, bool | None]] = {
    "miou": ("mIoU", 100.0, True),
    "pixel_accuracy": ("Pix Acc", 100.0, True),
    "dice_error": ("Dice err", 1.0, False),
    "miou_head": ("mIoU head", 100.0, True),
    "miou_tail": ("mIoU tail", 100.0, True),
}
UTILISATION_PREFIX = "utilisation/"

Row = tuple[str, ...]
Column = tuple[str, str]  # (group shown above the metric, e.g. the data set; metric tag)


@dataclass
class Cell:
    """The values of one table cell, one per run (seed)."""

    values: list[float]

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / len(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class Table:
    """A table in the paper's layout: labelled rows, ``(group, metric)`` columns, cells, best marks."""

    title: str
    row_header: tuple[str, ...]
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[Row, Column], Cell]
    best: set[tuple[Row, Column]] = field(default_factory=set)
    note: str = ""
    # Cell texts that replace the mean ± std rendering (paired differences with their intervals).
    texts: dict[tuple[Row, Column], str] = field(default_factory=dict)

    def text(self, row: Row, column: Column) -> str:
        if (row, column) in self.texts:
            return self.texts[row, column]
        cell = self.cells.get((row, column))
        return "" if cell is None else format_cell(cell, column[1])

    def mark_best(self) -> None:
        """Mark the best mean of every column among the rows that differ only in their last label (the
        method): within each model where the rows are (model, method)."""
        for column in self.columns:
            higher = metric_spec(column[1])[2]
            groups: dict[Row, dict[Row, float]] = {}
            for row in self.rows:
                if higher is not None and (row, column) in self.cells:
                    groups.setdefault(row[:-1], {})[row] = self.cells[row, column].mean
            for means in groups.values():
                if len(means) > 1:  # a lone entry is not "best" of anything
                    target = (max if higher else min)(means.values())
                    self.best.update((row, column) for row, mean in means.items() if mean == target)


def metric_spec(tag: str) -> tuple[str, float, bool | None]:
    """Column name, print scale and direction of a metric tag (per-class IoU and utilisation too)."""
    if tag in METRICS:
        return METRICS[tag]
    if tag.startswith("iou/"):
        return tag[len("iou/") :], 100.0, True
    if tag.startswith(UTILISATION_PREFIX):
        return tag[len(UTILISATION_PREFIX) :], 1.0, None
    raise ValueError(
        f"unknown metric tag {tag!r}; expected one of {list(METRICS)}, 'iou/<class>' or '{UTILISATION_PREFIX}<name>'"
    )


# --- from runs to tables ---------------------------------------------------------------------------
@dataclass
class LabelledRun:
    run: Run
    dataset: str
    model: str
    method: str
    is_pat: bool


def newest_per_seed(runs: Sequence[Run], warn: Callable[[str], None]) -> list[Run]:
    """One run per (experiment, seeds): a repeat with the same seeds is a rerun, not another sample."""
    groups: dict[tuple[str, tuple], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.identity_key, run.seeds), []).append(run)
    kept = []
    for group in groups.values():
        group.sort(key=lambda run: (run.path / "config.yaml").stat().st_mtime)
        kept.append(group[-1])
        if len(group) > 1:
            warn(
                f"runs {', '.join(str(r.path) for r in group[:-1])} repeat {group[-1].path} (same config and "
                f"seeds {group[-1].seeds}): only the newest, {group[-1].path}, is counted"
            )
    return sorted(kept, key=lambda run: str(run.path))


def unfinished_note(runs: Sequence[Run], shown: int = 5) -> str:
    """``left out: 2 unfinished runs: <path> (stopped before its budget: step 40 of trainer.max_epochs=12);
    ...``, naming the first ``shown``; empty when there are none."""
    if not runs:
        return ""
    listed = "; ".join(f"{run.path} ({unfinished_reason(run.path, run.config, run.last_step)})" for run in runs[:shown])
    more = f"; and {len(runs) - shown} more" if len(runs) > shown else ""
    return f"left out: {len(runs)} unfinished run{'s' if len(runs) > 1 else ''}: {listed}{more}"


def _short_key(key: str) -> str:
    return key.replace(".init_args.", ".").removeprefix("model.")


def label_runs(runs: Sequence[Run], warn: Callable[[str], None] = lambda message: None) -> list[LabelledRun]:
    """The newest run of each experiment and seeds (:func:`newest_per_seed`), labelled (:func:`label_experiments`)."""
    return label_experiments(newest_per_seed(runs, warn))


def label_experiments(runs: Sequence[Run]) -> list[LabelledRun]:
    """Attach the data set, model and method labels that the tables print.

    A label depends on every run in ``runs`` (a data set's regime is named only where two regimes
    occur). Runs whose labels agree but whose experiments differ (:attr:`Run.identity`) get what
    differs appended to the method label, so that no cell pools two experiments. Only the configs are
    read: runs that have not trained yet (a sweep's grid) are labelled as they will be.
    """
    kinds = ("data", "model", "loss")  # the Run properties behind LabelledRun's dataset, model and method
    labels = {kind: display_labels([getattr(r, kind) for r in runs], kind) for kind in kinds}
    entries = []
    for run in runs:
        dataset, model, method = (labels[kind][identity_key(*getattr(run, kind))] for kind in kinds)
        entries.append(LabelledRun(run, dataset, model, method, is_pat=resolve(run.loss[0]) is PATLoss))
    for cluster in _grouped(entries, "dataset", "model", "method").values():
        identities = {entry.run.identity_key: entry.run.identity for entry in cluster}
        if len(identities) < 2:
            continue
        keys = differing_keys(list(identities.values()))
        for entry in cluster:
            difference = ", ".join(f"{_short_key(key)}={entry.run.identity.get(key)}" for key in keys)
            entry.method = f"{entry.method} [{difference}]"
    return entries


def _value(run: Run, split: str, tag: str) -> float | None:
    """What ``run`` puts in a cell of ``tag`` (module docstring): the last logged value, the mean over
    epochs for utilisation; None when it has none or NaN (e.g. the IoU of a class the split lacks)."""
    value = run.epoch_mean(tag) if tag.startswith(UTILISATION_PREFIX) else run.last(f"{split}/{tag}")
    return None if value is None or math.isnan(value) else value


def _paper_order(label: str, names: Sequence[str]) -> tuple:
    """The paper's row order (CE ... PAT; SegNet ... DLV3+), unknown names last, then naturally (``T=5``
    before ``T=10``)."""
    base = label.split(" (")[0]
    natural = tuple(float(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", label)))
    return (names.index(base) if base in names else len(names), natural)


# The order of each label's values in rows and tables: data sets naturally, models and methods as in the paper.
ORDERS: dict[str, Sequence[str]] = {
    "dataset": (),
    "model": [model.label for model in PAPER_MODELS],
    "method": [loss.description.label for loss in (*PAPER_LOSSES, *BEYOND_PAPER_LOSSES)],
}
HEADERS = {"dataset": "Data set", "model": "Model", "method": "Method"}


def _grouped(
    entries: Iterable[LabelledRun], *labels: str, orders: dict[str, Sequence[str]] = ORDERS
) -> dict[Row, list[LabelledRun]]:
    """The entries by the values of their ``labels`` (``dataset``, ``model``, ``method``), sorted by ``orders``."""
    groups: dict[Row, list[LabelledRun]] = {}
    for entry in entries:
        groups.setdefault(tuple(getattr(entry, label) for label in labels), []).append(entry)
    names = [orders[label] for label in labels]
    return {key: groups[key] for key in sorted(groups, key=lambda key: tuple(map(_paper_order, key, names)))}


def _table(
    title: str,
    labels: Row,
    entries: Sequence[LabelledRun],
    tags: Sequence[str],
    note: str,
    split: str,
    datasets: Sequence[str] | None = None,
    orders: dict[str, Sequence[str]] = ORDERS,
) -> Table:
    """Each run's :func:`_value` of every tag, in the row of its ``labels`` (e.g. model and method) and
    the tag's column: its data set's when the columns are per data set (``datasets``). Rows without a
    value are left out; the others are sorted by ``orders``."""
    columns = [("", tag) for tag in tags] if datasets is None else [(d, tag) for d in datasets for tag in tags]
    cells: dict[tuple[Row, Column], Cell] = {}
    for row, runs in _grouped(entries, *labels, orders=orders).items():
        for entry in runs:
            group = "" if datasets is None else entry.dataset
            for column in columns:
                value = _value(entry.run, split, column[1]) if column[0] == group else None
                if value is not None:
                    cells.setdefault((row, column), Cell([])).values.append(value)
    rows = list(dict.fromkeys(row for row, _ in cells))
    return Table(title, tuple(HEADERS[label] for label in labels), rows, columns, cells, note=note)


def build_tables(entries: Sequence[LabelledRun], split: str = "val") -> list[Table]:
    """Tables 3-6 and the utilisation table for ``entries`` (those with nothing to show are left out)."""
    datasets = [dataset for (dataset,) in _grouped(entries, "dataset")]
    by_model = _grouped(entries, "model")
    note = f"last epoch of `{split}/*`; mean ± std over seeds"
    table_3 = ("miou", "pixel_accuracy", "dice_error")
    tables_4_5 = ("miou", "pixel_accuracy")
    tables = [  # Table 3: one per model (the paper's is SegNet)
        _table(f"Table 3: method x data set ({model})", ("method",), mine, table_3, note, split, datasets)
        for (model,), mine in by_model.items()
    ]
    note_4_5 = note + "; best within each model"
    if len(by_model) > 1:  # Table 4: model x method
        tables.append(
            _table("Table 4: model x method", ("model", "method"), entries, tables_4_5, note_4_5, split, datasets)
        )
    pat = [e for e in entries if e.is_pat]
    if len({e.method for e in pat}) > 1:  # Table 5: PAT's temperature (and any other PAT setting), in natural order
        title = "Table 5: PAT settings (temperature, ablations)"
        natural = {**ORDERS, "method": ()}
        tables.append(_table(title, ("model", "method"), pat, tables_4_5, note_4_5, split, datasets, natural))
    note_6 = note + "; tail = rarest third of training pixels"
    for (dataset, model), mine in _grouped(entries, "dataset", "model").items():  # Table 6: per-class IoU
        tags = [f"iou/{c}" for c in mine[0].run.class_names(split)] + ["miou_head", "miou_tail", "miou"]
        tables.append(_table(f"Table 6: per-class IoU ({dataset}, {model})", ("method",), mine, tags, note_6, split))
    utilisation = sorted({t for e in entries for t in e.run.scalars if t.startswith(UTILISATION_PREFIX)})
    if utilisation:  # Fig. 5's numbers: per-epoch costs averaged over epochs
        labels = ("dataset", "model", "method")
        costs_note = "mean over epochs of each run; mean ± std over seeds"
        tables.append(_table("Utilisation (Fig. 5)", labels, entries, utilisation, costs_note, split))
    tables = [table for table in tables if table.cells]  # e.g. a model whose only run diverged (NaN everywhere)
    for table in tables:
        table.mark_best()
    return tables


# --- paired differences ----------------------------------------------------------------------------
PAIRED_METRICS = ("miou", "miou_tail", "miou_head")


def _normalised(label: str) -> str:
    return re.sub(r"[^a-z0-9=.]", "", label.lower())


def _is_baseline(method: str, against: str) -> bool:
    """``--paired-against`` names a method by its label or its name, case and punctuation aside
    ("CB-Focal" names "CBFocal"; "PAT" names "PAT (T=20)" when it is the only PAT)."""
    return _normalised(against) in (_normalised(method), _normalised(method.split(" (")[0].split(" [")[0]))


HolmFamily = Literal["datasets", "methods"]
HOLM_FAMILIES: tuple[HolmFamily, ...] = get_args(HolmFamily)
# family -> what its members are, as the table's note names them (``{against}``: the baseline)
_FAMILY_NOTES: dict[HolmFamily, str] = {
    "datasets": "data sets each method was compared on",
    "methods": "methods compared with {against} on each data set",
}


def _family_key(key: tuple[Row, Column], holm: HolmFamily) -> tuple[str, Column]:
    """The Holm family of a cell ``((dataset, method), column)``: its method's data sets, or its data
    set's methods; each metric column is a family of its own either way."""
    (dataset, method), column = key
    return (method if holm == "datasets" else dataset), column


def _sizes(sizes: Iterable[int]) -> str:
    """``m = 7``, or ``m = 2 or 3`` when the table's families differ in size."""
    distinct = [str(size) for size in sorted(set(sizes))]
    return "m = " + (distinct[0] if len(distinct) == 1 else f"{', '.join(distinct[:-1])} or {distinct[-1]}")


def paired_tables(
    entries: Sequence[LabelledRun],
    against: str,
    split: str = "val",
    confidence: float = 0.95,
    warn: Callable[[str], None] = lambda message: None,
    holm: HolmFamily | None = None,
) -> list[Table]:
    """Per data set and model: every method minus ``against``, seed by seed, with Student-t intervals.

    Runs pair when they share their seeds (``seed_everything`` and the data seed), so both saw the
    same initialisation and data order (:func:`pat_seg.experiments.paired.paired_difference`). With ``holm``
    the paired t-tests of one metric column form families of ``m`` tests: ``"datasets"``, the data sets
    (regimes) one method was compared on (a question asked of several data sets); ``"methods"``, the
    methods compared with ``against`` on one data set (several methods against one baseline). Each
    cell also shows its p-value and that p-value Holm-adjusted within its family
    (:func:`pat_seg.experiments.paired.holm_adjust`) and its interval is widened to the Bonferroni
    level ``1 - (1 - confidence) / m``, so the family's intervals hold together. Only comparisons
    with two or more pairs (a p-value) count in ``m``; the note names the family and its ``m``.
    """
    columns = [("", metric) for metric in PAIRED_METRICS]
    tables = []
    for (model,), mine in _grouped(entries, "model").items():
        pairs: dict[tuple[Row, Column], tuple[dict, dict]] = {}  # cell -> per-seed values of method, of baseline
        for (dataset,), here in _grouped(mine, "dataset").items():
            methods = {method: runs for (method,), runs in _grouped(here, "method").items()}
            baselines = sorted(method for method in methods if _is_baseline(method, against))
            if len(baselines) > 1:
                exact = " or ".join(f"--paired-against '{label}'" for label in baselines)
                warn(f"{against!r} names {len(baselines)} methods on {dataset} ({model}), skipped there: give {exact}")
            if len(baselines) != 1:
                continue
            baseline = methods.pop(baselines[0])
            for (method, runs), column in itertools.product(methods.items(), columns):
                # Of two runs with the same seeds, the later one's value (even if it has none) counts.
                per_seed = [{e.run.seeds: _value(e.run, split, column[1]) for e in side} for side in (runs, baseline)]
                variant, reference = ({s: v for s, v in side.items() if v is not None} for side in per_seed)
                if variant and reference:
                    pairs[(dataset, method), column] = (variant, reference)
        differences: dict[tuple[Row, Column], PairedDifference] = {}
        cells: dict[tuple[Row, Column], Cell] = {}
        for (row, column), (values, baseline_values) in pairs.items():
            try:
                difference = differences[row, column] = paired_difference(values, baseline_values, confidence)
            except ValueError as error:
                warn(f"{row[0]}, {model}, {row[1]} - {against}, {column[1]}: {error}")
            else:
                cells[row, column] = Cell([values[seed] - baseline_values[seed] for seed in difference.seeds])
        texts: dict[tuple[Row, Column], str] = {}
        interval = f"[{confidence:.0%} Student-t interval]"
        if holm is not None:
            families: dict[tuple[str, Column], list[tuple[Row, Column]]] = {}
            for key, difference in differences.items():
                if difference.n >= 2:  # one pair has no p-value: it is not a test of the family
                    families.setdefault(_family_key(key, holm), []).append(key)
            for keys in families.values():
                level = 1.0 - (1.0 - confidence) / len(keys)
                for key, p_holm in zip(keys, holm_adjust([differences[key].p_value for key in keys])):
                    widened = paired_difference(*pairs[key], level)  # same pairs: only the interval widens
                    texts[key] = (
                        f"{widened.format(100.0)} (n={widened.n}, p={widened.p_value:.3g}, p_Holm={p_holm:.3g})"
                    )
            if families:
                family = f"{_sizes(map(len, families.values()))} {_FAMILY_NOTES[holm].format(against=against)}"
                interval = (
                    f"[{confidence:.0%} Student-t interval, Bonferroni-widened over the {family}, per column; "
                    f"p: two-sided p-value of the paired t-test, p_Holm: the same Holm-adjusted in that family]"
                )
        for key, difference in differences.items():
            if key in texts:
                continue
            if difference.n < 2:
                texts[key] = f"{difference.mean * 100:+.2f} (n=1, no interval)"
            else:
                texts[key] = f"{difference.format(100.0)} (n={difference.n})"
        if texts:
            rows = list(dict.fromkeys(row for row, _ in differences))
            note = f"last epoch of `{split}/*`; method minus {against} per seed, mean {interval} in points"
            title = f"Paired differences against {against} ({model})"
            tables.append(Table(title, ("Data set", "Method"), rows, columns, cells, note=note, texts=texts))
    return tables


# --- which runs learned each class -----------------------------------------------------------------
LEARNED_IOU = 0.10  # a class counts as learned by a run whose final IoU exceeds 10 points


def learned_tables(entries: Sequence[LabelledRun], split: str = "val", threshold: float = LEARNED_IOU) -> list[Table]:
    """Per data set and model: for each method and class, how many runs (seeds) learned the class.

    Outcomes on rare classes are bimodal (a seed learns the class or never does), so ``k/n`` says more
    than a mean ± std: a mean of 22.6 ± 39.2 over three seeds is {0, 0, 67.9}, two of three failures.
    """
    tables = []
    note = f"last epoch of `{split}/*`; runs (seeds) with IoU > {threshold * 100:g} of all runs"
    for (dataset, model), mine in _grouped(entries, "dataset", "model").items():
        tags = [f"iou/{name}" for name in mine[0].run.class_names(split)]
        table = _table(f"Runs that learned each class ({dataset}, {model})", ("method",), mine, tags, note, split)
        table.texts = {
            key: f"{sum(v > threshold for v in cell.values)}/{len(cell.values)}" for key, cell in table.cells.items()
        }
        if table.cells:  # none where no per-class values were logged for this split
            tables.append(table)
    return tables


# --- per-run values, and reports rebuilt from them ------------------------------------------------
RUN_COLUMNS = ("run", "dataset", "model", "method", "is_pat", "seed", "data_seed", "split", "step")


def render_runs_csv(entries: Sequence[LabelledRun], split: str = "val", root: str | Path | None = None) -> str:
    """One line per run and evaluation (step) with every ``<split>/*`` value it logged, raw.

    The labels are the report's, so tables rebuilt from this file (:func:`entries_from_csv`) equal
    those of the runs themselves; a study kept as this file needs no event files. Run folders are
    written relative to ``root`` (the log directory) when they lie below it.
    """
    prefix = f"{split}/"
    # Overall metrics first (by name), then per-class IoU in the classes' logging order.
    classes = {name: i for e in entries for i, name in enumerate(e.run.class_names(split))}
    tags = sorted(
        {tag[len(prefix) :] for e in entries for tag in e.run.scalars if tag.startswith(prefix)},
        key=lambda tag: (1, classes.get(tag[len("iou/") :], 0), tag) if tag.startswith("iou/") else (0, 0, tag),
    )
    # The data module's identifying arguments (e.g. a synthetic regime's imbalance and rarity), so that a
    # study's file says what each run trained on even where the labels need not show it; not those that
    # other columns hold: the classes (the iou/<class> columns) and the data set's name (``dataset``).
    data_keys = sorted(
        {key for e in entries for key in e.run.data[1]} - NOT_IDENTITY - {"classes", "class_names", DATA_SET_NAME}
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*RUN_COLUMNS, *(f"data.{key}" for key in data_keys), *tags])
    for entry in entries:
        labels = [*run_fields(entry, root).values(), split]
        data = [yaml_value(entry.run.data[1].get(key)) for key in data_keys]
        by_step = {tag: dict(entry.run.scalars.get(prefix + tag, [])) for tag in tags}
        for step in sorted({step for points in by_step.values() for step in points}):
            values = [by_step[tag].get(step) for tag in tags]
            writer.writerow([*labels, step, *data, *("" if value is None else repr(value) for value in values)])
    return buffer.getvalue()


def run_fields(entry: LabelledRun, root: str | Path | None = None) -> dict[str, str]:
    """The fields of :data:`RUN_COLUMNS` before ``split`` that every line of a run shares, as the CSV
    holds them: the run folder (relative to ``root`` when below it), its labels and seeds."""
    path = entry.run.path
    if root is not None and path.is_relative_to(root):
        path = path.relative_to(root)
    seed, data_seed = ("" if seed is None else str(seed) for seed in entry.run.seeds)
    values = [path.as_posix(), entry.dataset, entry.model, entry.method, str(int(entry.is_pat)), seed, data_seed]
    return dict(zip(RUN_COLUMNS, values))


def _csv_seed(text: str) -> int | None:
    return None if text == "" else int(text)


def entries_from_csv(path: str, split: str = "val") -> list[LabelledRun]:
    """The labelled runs of a file written by :func:`render_runs_csv` (``--per-run``), for ``split``."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise ValueError(f"cannot read --from-csv {path!r}: {error.strerror}") from None
    if not rows or not set(RUN_COLUMNS) <= set(rows[0]):
        raise ValueError(
            f"--from-csv {path!r} is not a per-run file of `pat-seg report --format csv --per-run` "
            f"(expected the columns {list(RUN_COLUMNS)} and one line per run and step)"
        )
    tags = [key for key in rows[0] if key not in RUN_COLUMNS and not key.startswith("data.")]
    data_keys = [key for key in rows[0] if key.startswith("data.")]
    runs: dict[str, LabelledRun] = {}
    for line, row in enumerate(rows, start=2):
        if row["split"] != split:
            continue
        entry = runs.get(row["run"])
        if entry is None:
            data_args = {key[len("data.") :]: yaml.safe_load(row[key]) for key in data_keys}
            config = {
                "seed_everything": _csv_seed(row["seed"]),
                "data": {"class_path": "", "init_args": {**data_args, "seed": _csv_seed(row["data_seed"])}},
            }
            entry = runs[row["run"]] = LabelledRun(
                Run(Path(row["run"]), config, {}), row["dataset"], row["model"], row["method"], row["is_pat"] == "1"
            )
        for tag in tags:
            if row[tag] != "":
                try:
                    value = float(row[tag])
                except ValueError:
                    raise ValueError(
                        f"--from-csv {path!r}, line {line}: {tag} = {row[tag]!r} is not a number"
                    ) from None
                entry.run.scalars.setdefault(f"{split}/{tag}", []).append((int(row["step"]), value))
    for entry in runs.values():
        for points in entry.run.scalars.values():
            points.sort()
    return list(runs.values())


# --- rendering -------------------------------------------------------------------------------------
def format_cell(cell: Cell, tag: str) -> str:
    """``mean ± std (n=...)`` at the paper's scale: 2 decimals for percentages, 3 for Dice error; 4
    significant digits for utilisation (2 for its std)."""
    scale = metric_spec(tag)[1]
    if tag.startswith(UTILISATION_PREFIX):
        mean_format, std_format = ".4g", ".2g"
    else:
        mean_format = std_format = ".2f" if scale == 100.0 else ".3f"
    text = format(cell.mean * scale, mean_format)
    if cell.std is not None:
        text += f" ± {format(cell.std * scale, std_format)}"
    return f"{text} (n={len(cell.values)})"


def _header(column: Column) -> str:
    name, _, higher = metric_spec(column[1])
    arrow = "" if higher is None else "↑" if higher else "↓"
    return " ".join(part for part in (column[0], name + arrow) if part)


def _footnote(table: Table) -> str:
    sizes = sorted({len(cell.values) for cell in table.cells.values()})
    counts = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    return f"{table.note}; runs per cell: {counts}; best in bold."


def _fields(table: Table, escape: Callable[[str], str], bold: str) -> Iterator[list[str]]:
    """Every row's labels and cell texts, escaped, the best cells in the format ``bold``."""
    for row in table.rows:
        cells = [(escape(table.text(row, column)), (row, column) in table.best) for column in table.columns]
        yield [escape(label) for label in row] + [bold.format(text) if best else text for text, best in cells]


def render_markdown(tables: Sequence[Table]) -> str:
    """The tables in GitHub-flavoured markdown; every title, header and cell text through
    :func:`~pat_seg.table_text.markdown_text`, so that a ``|`` in a label stays in its cell."""
    out = []
    for table in tables:
        header = [*table.row_header, *map(_header, table.columns)]
        out.append(f"### {markdown_text(table.title)}\n")
        out.append("| " + " | ".join(map(markdown_text, header)) + " |")
        out.append("|" + "---|" * len(table.row_header) + "---:|" * len(table.columns))
        out += ["| " + " | ".join(fields) + " |" for fields in _fields(table, markdown_text, "**{}**")]
        out.append(f"\n{markdown_text(_footnote(table))}\n")
    return "\n".join(out)


def render_latex(tables: Sequence[Table]) -> str:
    """The tables as LaTeX ``table`` floats (booktabs rules); every caption, header and cell text
    through :func:`~pat_seg.table_text.latex_text`."""
    out = []
    for table in tables:
        header = [latex_text(text) for text in (*table.row_header, *map(_header, table.columns))]
        out += [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{latex_text(f'{table.title}: {_footnote(table)}')}}}",
            rf"\begin{{tabular}}{{{'l' * len(table.row_header)}{'r' * len(table.columns)}}}",
            r"\toprule",
            " & ".join(header) + r" \\",
            r"\midrule",
            *(" & ".join(fields) + r" \\" for fields in _fields(table, latex_text, r"\textbf{{{}}}")),
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    return "\n".join(out)


def render_csv(tables: Sequence[Table]) -> str:
    """One line per cell with the raw (unscaled) mean, sample std and number of runs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "row", "group", "metric", "mean", "std", "n", "best"])
    for table in tables:
        for row, column in itertools.product(table.rows, table.columns):
            cell = table.cells.get((row, column))
            if cell is not None:
                std = "" if cell.std is None else repr(cell.std)
                best = int((row, column) in table.best)
                writer.writerow([table.title, " / ".join(row), *column, repr(cell.mean), std, len(cell.values), best])
    return buffer.getvalue()


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}


def report(
    logdir: str,
    fmt: str = "markdown",
    split: str = "val",
    runs: str = "**",
    paired_against: str | None = None,
    holm: HolmFamily | None = None,
    per_run: bool = False,
    from_csv: str | None = None,
) -> str:
    """The report of every run under ``logdir`` (``runs``: glob of run directories) as text; with
    ``paired_against``, followed by every method's paired differences against that one (``holm``:
    Holm-corrected over the data sets each method was compared on, ``"datasets"``, or over the methods
    compared on each data set, ``"methods"``; :func:`paired_tables`). ``per_run`` (CSV only) writes each run's values instead of the
    tables; ``from_csv`` builds the tables from such a file instead of from ``logdir``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
    if per_run and fmt != "csv":
        raise ValueError(f"--per-run writes CSV; got --format {fmt}")
    if holm is not None and holm not in HOLM_FAMILIES:
        raise ValueError(f"holm must be one of {HOLM_FAMILIES} or None; got {holm!r}")
    if holm is not None and paired_against is None:
        raise ValueError("--holm corrects the paired differences: give --paired-against METHOD too")

    def warn(message: str) -> None:
        sys.stderr.write(f"pat-seg report: warning: {message}\n")

    logged, left_out = f"{split}/miou", ""
    if from_csv is not None:
        entries = [e for e in entries_from_csv(from_csv, split) if e.run.last(logged) is not None]
        source = f"--from-csv {from_csv!r}"
    else:
        found = find_runs(logdir, runs)
        if not found:
            raise ValueError(f"no runs (a config.yaml beside an event file) under {logdir!r} matching {runs!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
        # Runs that did not finish (still training, interrupted, failed) are left out before labelling:
        # their values are not the end of their budget, they would stand in for the finished repeat of
        # their config, and an empty class list would read as a data set of another size.
        unfinished = [run for run in found if not run.finished]
        left_out = unfinished_note(unfinished)
        if left_out and fmt == "csv":  # the tables' text says it otherwise (with_note)
            warn(left_out)
        entries = label_runs([run for run in found if run.finished and run.last(logged) is not None], warn)
        source = f"{len(found)} runs under {logdir!r}" + (f" ({len(unfinished)} unfinished)" if unfinished else "")
    if not entries and left_out:
        raise ValueError(f"{source}: no finished run logged {split}/miou; {left_out}")
    if not entries:
        raise ValueError(f"{source}: none logged {split}/miou; run `pat-seg test` first for --split test")
    if per_run:
        return render_runs_csv(entries, split, root=logdir)
    tables = build_tables(entries, split) + learned_tables(entries, split)
    if paired_against is not None:
        methods = sorted({e.method for e in entries})
        if not any(_is_baseline(method, paired_against) for method in methods):
            raise ValueError(f"--paired-against {paired_against!r} matches none of the methods {methods}")
        paired = paired_tables(entries, paired_against, split, warn=warn, holm=holm)
        if not paired:
            raise IncompleteReport(
                with_note(RENDERERS[fmt](tables), left_out, fmt),
                f"--paired-against {paired_against!r}: no paired table (no data set and model where it names "
                f"exactly one method and another method ran too; methods: {methods})",
            )
        tables += paired
    return with_note(RENDERERS[fmt](tables), left_out, fmt)


def with_note(text: str, note: str, fmt: str) -> str:
    """The rendered tables followed by ``note`` (the runs left out): a paragraph in markdown (escaped: it
    names run folders), a comment in LaTeX, where only a line end would end it; CSV stays
    machine-readable (the note went to stderr)."""
    if not note or fmt == "csv":
        return text
    return f"{text}\n{markdown_text(note[0].upper() + note[1:])}\n" if fmt == "markdown" else f"{text}% {note}\n"


class IncompleteReport(ValueError):
    """The tables that could be made (``text``), and why the ones asked for could not."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(reason)
        self.text = text
