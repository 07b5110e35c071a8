"""docs/camvid.md and README.md's CamVid paragraphs quote what `pat-seg report` prints from the committed CSV.

The doc's numbers come from three commands (docs/camvid.md, "Results: the decision rule" and "Table 3"):

    pat-seg report --from-csv docs/studies/camvid_table3.csv --decision configs/sweeps/camvid_table3.yaml
    pat-seg report --from-csv docs/studies/camvid_table3.csv --split test [--paired-against CE|PAT]
    pat-seg report --from-csv docs/studies/camvid_table3.csv            (validation split)

Each runs once per module through the Python API. The doc's rule table, Table 3 and Table 6 are compared
cell by cell with the report at the precision the doc prints; every quoted paired difference
"+a.bb [+c.cc, +d.dd]" must be one the reports print (or its exact negation, B - A for A - B); the
numbers the doc derives (mean Dice = 1 - Dice error, differences of two quoted means) are recomputed
here. The other arms' tables (Table 3 and 6 for every arm, the rare classes' learned counts, the
descriptive and exploratory contrasts against PAT) are compared the same way, and the status line's run
count with the CSV. A last test changes every number of those sections by 0.01, one at a time, and
requires a failure.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from report_labels import LOSS_LABELS

from pat_seg.experiments.decision import decision_report
from pat_seg.experiments.decision_rule import load_decision
from pat_seg.experiments.report import report

REPO = Path(__file__).resolve().parents[1]
DOC, README = REPO / "docs" / "camvid.md", REPO / "README.md"
STUDY_CSV = REPO / "docs" / "studies" / "camvid_table3.csv"
SWEEP = REPO / "configs" / "sweeps" / "camvid_table3.yaml"

# The sweep's arm names (run folders <seed>-<arm>) and the method labels the report's tables print (the
# sweep labels its whole grid from the configs before any run trains).
ARM_LABELS = {
    **LOSS_LABELS,
    "patcb": "PAT+CB mix (lambda=0.5)",
    "cbfocal_b09999": "CBFocal b=0.9999",
    "pat_no_eq4": "PAT w/o Eq. 4 (T=20)",
    "pat_beta_minmax": "PAT beta min-max (T=20)",
}
CORE = ("ce", "cbfocal", "pat", "patcb")  # the decision rule's arms, five seeds each
COMPARED = ("ce", "focal", "cb", "cbfocal", "bms", "ldam", "blv", "pat", "patcb")  # Table 3 and Table 6
EXPLORATORY = ("cbfocal_b09999", "pat_no_eq4", "pat_beta_minmax")
# The names the doc gives the arms: in "A - B" cells, Table 6's header and the learned table...
DOC_ARMS = {
    "CE": "ce",
    "Focal": "focal",
    "CB": "cb",
    "CB-Focal": "cbfocal",
    "BMS": "bms",
    "LDAM": "ldam",
    "BLV": "blv",
    "PAT": "pat",
    "mixture": "patcb",
    "CB-Focal b = 0.9999": "cbfocal_b09999",
    "PAT w/o Eq. 4": "pat_no_eq4",
    "PAT beta min-max": "pat_beta_minmax",
}
DOC_NAMES = {arm: name for name, arm in DOC_ARMS.items()}
# ...and in the method column of Table 3 and of the exploratory arms' table.
TABLE3_METHODS = {
    "CE": "ce",
    "Focal (gamma = 2)": "focal",
    "CB": "cb",
    "CB-Focal": "cbfocal",
    "BMS": "bms",
    "LDAM (m = 0.5, s = 20)": "ldam",
    "BLV (sigma = 0.5)": "blv",
    "PAT (T = 20)": "pat",
    "PAT+CB mixture (lambda = 0.5)": "patcb",
    "CB-Focal, b = 0.9999": "cbfocal_b09999",
    "PAT without Eq. 4": "pat_no_eq4",
    "PAT, beta min-max per batch": "pat_beta_minmax",
}
# Table 3's columns: the report's metric, and whether higher is better (bold marks the best of the
# table's arms). Mean Dice is 1 - the report's Dice error (docs/losses.md).
TABLE3_COLUMNS = {
    "test mIoU": ("miou", True),
    "pixel accuracy": ("pixel_accuracy", True),
    "mean Dice": ("mean_dice", True),
    "mIoU head (7 classes)": ("miou_head", True),
    "mIoU tail (4 rarest)": ("miou_tail", True),
}
RULE_COLUMNS = ("", "A - B", "on", "n", "mean", "95% interval", "99.375% simultaneous", "p", "p Holm", "outcome")
RULE_ON = {"mIoU": "miou", "S": "S", "F": "F"}
# The decision report's sections of contrasts outside the rule (each arm minus PAT, no verdict).
CONTRASTS = ("descriptive", "exploratory")
CONTRAST_COLUMNS = ("A - B", "on", "n", "mean", "95% interval")
# Table 6's columns that come from the class table of the same doc (native-size counts), not the report.
TABLE6_DATA_COLUMNS = ("train share", "train images (of 367)")
# The sections whose every number is a report number (the mutation test changes each of them).
DOC_SECTIONS = (
    "Results: the decision rule",
    "Table 3: every arm on the test split",
    "Table 6: per-class test IoU",
    "Rare classes learned",
    "The other baselines against PAT",
    "Exploratory arms",
)
STUDY_RUNS = 44  # the sweep's grid: 4 arms x 5 seeds + 8 arms x 3 seeds
README_PARAGRAPHS = ("**When does PAT help", "**Where real and synthetic data disagree.**", "**What to use, then,**")

TWO_DECIMALS = r"\d+\.\d\d"
SIGNED = rf"[+-]{TWO_DECIMALS}"
MEAN_SD = rf"{TWO_DECIMALS} ± {TWO_DECIMALS}"
# A quoted paired difference: a mean (signed, or unsigned with "above"/"below" in words), words without a
# digit, its interval, and maybe the Holm-adjusted p-value of the rule's comparison it is.
QUOTED = re.compile(
    rf"(?<![\d.])(?P<mean>[+-]?{TWO_DECIMALS})(?!\d)[^\[\]\d]{{0,60}}?\[(?P<low>{SIGNED}), (?P<high>{SIGNED})\]"
    r"(?:[),]* ?\(?Holm(?:-adjusted)? p = (?P<holm>\d+\.\d+(?:e-\d+)?))?"
)
INTERVAL = re.compile(rf"\[{SIGNED}, {SIGNED}\]")
HOLM_P = re.compile(r"Holm(?:-adjusted)? p = ")
PRINTED_DIFFERENCE = re.compile(rf"({SIGNED}) \[({SIGNED}), ({SIGNED})\] \(n=\d+\)")
# `--paired-against` values the doc quotes differences from (a method label's prefix) and their arms.
PAIRED_AGAINST = {"CE": "ce", "PAT": "pat", "CBFocal": "cbfocal"}
PAIRED_COLUMNS = {"mIoU↑": "miou", "mIoU tail↑": "miou_tail", "mIoU head↑": "miou_head"}


# --- what the reports print ------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """A paired difference a - b on ``on`` as a report prints it (points, 2 decimals, signed)."""

    a: str
    b: str
    on: str
    mean: str
    low: str
    high: str
    p_holm: str | None = None  # the decision rule's comparisons only, as the report prints p

    def negated(self) -> tuple[str, str, str]:
        """b - a: the mean's sign flipped and the interval mirrored."""
        return _flip(self.mean), _flip(self.high), _flip(self.low)


def _flip(signed: str) -> str:
    return ("-" if signed[0] == "+" else "+") + signed[1:]


@dataclass(frozen=True)
class Reports:
    comparisons: dict[str, dict[str, str]]  # C1..C8 -> the decision report's CSV line
    prediction: str  # HOLDS, FAILS or "not decided at n = <n>"
    groups: dict[str, tuple[str, ...]]  # the rule's class groups (S, F)
    learned_iou: float
    learned: dict[tuple[str, str], int]  # (arm, class) -> runs with test IoU above learned_iou
    runs: dict[str, int]  # arm -> its runs with a test row
    test: dict[tuple[str, str], Cell]  # (arm, metric) -> mean, sd, n over seeds (fractions)
    val: dict[tuple[str, str], Cell]
    contrasts: dict[str, list[dict[str, str]]]  # "descriptive"/"exploratory" -> the decision report's lines
    differences: tuple[Difference, ...]  # the rule's comparisons first, then --paired-against CE, PAT, CBFocal

    def difference(self, a: str, b: str, on: str) -> Difference:
        return next(d for d in self.differences if (d.a, d.b, d.on) == (a, b, on))


@dataclass(frozen=True)
class Cell:
    """One arm's mean and sd over its n runs, as fractions (sd is NaN for a single run)."""

    mean: float
    sd: float
    n: int


def _table_cells(text: str) -> dict[tuple[str, str], Cell]:
    """The study arms' cells of Table 3 and Table 6 in ``pat-seg report --format csv`` output, with mean
    Dice (1 - Dice error, the same sd) beside Dice error."""
    arms = {label: arm for arm, label in ARM_LABELS.items()}
    cells = {}
    for line in csv.DictReader(io.StringIO(text)):
        if line["table"].startswith(("Table 3", "Table 6")) and line["row"] in arms:
            mean, sd = float(line["mean"]), float(line["std"]) if line["std"] else float("nan")
            cells[arms[line["row"]], line["metric"]] = Cell(mean, sd, int(line["n"]))
            if line["metric"] == "dice_error":
                cells[arms[line["row"]], "mean_dice"] = Cell(1 - mean, sd, int(line["n"]))
    return cells


def _printed_paired(markdown: str, against: str) -> list[Difference]:
    """The arms' differences in the markdown table "Paired differences against <against>", as printed (a
    single pair prints no interval and is left out)."""
    arms = {label: arm for arm, label in ARM_LABELS.items()}
    against_arm = PAIRED_AGAINST[against]
    lines = markdown.split(f"### Paired differences against {against} ", 1)[1].split("\n\n")[1].splitlines()
    header = _cells(lines[0])
    found = []
    for cells in map(_cells, lines[2:]):
        if cells[1] not in arms:
            continue
        for column, cell in zip(header[2:], cells[2:]):
            if "no interval" in cell:
                continue
            printed = PRINTED_DIFFERENCE.fullmatch(cell.replace("**", ""))
            assert printed, f"--paired-against {against}: {cell!r} is not 'mean [low, high] (n=k)'"
            found.append(Difference(arms[cells[1]], against_arm, PAIRED_COLUMNS[column], *printed.groups()))
    return found


def build_reports(study_csv: Path) -> Reports:
    """The three commands of docs/camvid.md, run on ``study_csv``."""
    rule = load_decision(str(SWEEP))
    lines = list(csv.DictReader(io.StringIO(decision_report(str(SWEEP), "csv", str(study_csv)))))
    comparisons = {line["name"]: line for line in lines if line["section"] == "comparison"}
    differences = [
        Difference(
            line["a"],
            line["b"],
            line["on"],
            mean=f"{float(line['mean']):+.2f}",  # the CSV holds points at full precision
            low=f"{float(line['low']):+.2f}",
            high=f"{float(line['high']):+.2f}",
            p_holm=f"{float(line['p_holm']):.3g}",
        )
        for line in comparisons.values()
    ]
    contrasts = {section: [line for line in lines if line["section"] == section] for section in CONTRASTS}
    differences += [
        Difference(line["a"], line["b"], line["on"], *(f"{float(line[key]):+.2f}" for key in ("mean", "low", "high")))
        for section in CONTRASTS
        for line in contrasts[section]
        if line["low"]  # two pairs or more: an interval
    ]
    for against in PAIRED_AGAINST:
        markdown = report("unused", split="test", paired_against=against, from_csv=str(study_csv))
        differences += _printed_paired(markdown, against)
    return Reports(
        comparisons=comparisons,
        prediction=next(line["outcome"] for line in lines if line["section"] == "prediction"),
        groups=rule.groups,
        learned_iou=rule.learned_iou,
        learned={
            (line["a"], line["name"]): int(line["learned"])
            for line in lines
            if line["section"] == "class" and line["learned"]
        },
        runs={line["a"]: len(line["seeds"].split()) for line in lines if line["section"] == "arm"},
        test=_table_cells(report("unused", fmt="csv", split="test", from_csv=str(study_csv))),
        val=_table_cells(report("unused", fmt="csv", split="val", from_csv=str(study_csv))),
        contrasts=contrasts,
        differences=tuple(differences),
    )


@pytest.fixture(scope="module")
def reports() -> Reports:
    return build_reports(STUDY_CSV)


@pytest.fixture(scope="module")
def texts() -> tuple[str, str]:
    return DOC.read_text(), README.read_text()


# --- reading the doc -------------------------------------------------------------------------------
def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _plain(cell: str) -> str:
    return cell.replace("**", "")


def _bold(cell: str) -> bool:
    return cell.startswith("**") and cell.endswith("**")


def _flat(text: str) -> str:
    """Whitespace runs as one space: the doc breaks lines inside quoted numbers."""
    return " ".join(text.split())


def section_span(doc: str, heading: str) -> tuple[int, int]:
    """Where the section ``## <heading>...`` of the doc is, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}.*?(?=^## |\Z)", doc, re.M | re.S)
    assert match, f"docs/camvid.md has no section '## {heading}'"
    return match.span()


def paragraph_span(readme: str, lead: str) -> tuple[int, int]:
    """Where the README paragraph that opens with ``lead`` is, up to its blank line."""
    start = readme.find(lead)
    assert start >= 0, f"README.md has no paragraph opening with {lead!r}"
    end = readme.find("\n\n", start)
    return start, len(readme) if end < 0 else end


def doc_table(doc: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first table in the doc's section ``heading``."""
    start, end = section_span(doc, heading)
    block = re.search(r"^\|.*?(?=^[^|]|\Z)", doc[start:end], re.M | re.S)
    assert block, f"docs/camvid.md, '{heading}': no table"
    lines = block.group(0).strip().splitlines()
    return _cells(lines[0]), [_cells(line) for line in lines[2:]]


def readme_camvid(readme: str) -> str:
    return "\n\n".join(readme[slice(*paragraph_span(readme, lead))] for lead in README_PARAGRAPHS)


def _points(value: float) -> str:
    return f"{value * 100:.2f}"


def _mean_sd(cell: Cell, metric: str) -> str:
    """A table cell as the report prints it: points with 2 decimals, Dice as is with 3; one run, no sd."""
    dice = metric in ("dice_error", "mean_dice")
    mean, sd = (f"{cell.mean:.3f}", f"{cell.sd:.3f}") if dice else (_points(cell.mean), _points(cell.sd))
    return mean if cell.n == 1 else f"{mean} ± {sd}"


def _is_best(cells: dict[str, float], arm: str, higher: bool) -> bool:
    """Whether ``arm`` has the best of the table's arms' means: the doc bolds it among those only."""
    best = max(cells.values()) if higher else min(cells.values())
    return cells[arm] == best


# --- 1. the rule table -----------------------------------------------------------------------------
def _expected_verdict(line: dict[str, str]) -> str | None:
    """The verdict words a row must carry: the rule's verdict text, or "predicted <sign>: <state>" where
    a prediction that holds without a shown outcome is only "not contradicted" (the report's wording)."""
    if line["verdict"]:
        return line["verdict"]
    if line["predicted"]:
        shown = line["outcome"] in ("A > B", "A < B")
        state = "not contradicted" if line["prediction"] == "holds" and not shown else line["prediction"]
        return f"predicted {line['predicted']}: {state}"
    return None


def rule_table_problems(doc: str, reports: Reports) -> list[str]:
    header, rows = doc_table(doc, DOC_SECTIONS[0])
    problems = []
    if tuple(header[: len(RULE_COLUMNS)]) != RULE_COLUMNS:
        problems.append(f"rule table header {header} is not {list(RULE_COLUMNS)} + verdict")
    seen = []
    for cells in rows:
        name = cells[0]
        line = reports.comparisons.get(name)
        if line is None:
            problems.append(f"rule table row {name!r}: the decision report has no such comparison")
            continue
        seen.append(name)
        if len(cells) != len(RULE_COLUMNS) + 1:
            problems.append(f"rule table {name}: {len(cells)} cells, not the {len(RULE_COLUMNS) + 1} of its header")
            continue
        outcome = f"{line['outcome']}, {line['provisional']}" if line["provisional"] else line["outcome"]
        expected: dict[str, object] = {  # the report's values as the doc prints them
            "A - B": (line["a"], line["b"]),
            "on": line["on"],
            "n": line["n"],
            "mean": f"{float(line['mean']):+.2f}",
            "95% interval": f"[{float(line['low']):+.2f}, {float(line['high']):+.2f}]",
            "99.375% simultaneous": (
                f"[{float(line['low_simultaneous']):+.2f}, {float(line['high_simultaneous']):+.2f}]"
            ),
            "p": f"{float(line['p']):.3g}",
            "p Holm": f"{float(line['p_holm']):.3g}",
            "outcome": outcome,
        }
        found: dict[str, object] = dict(zip(RULE_COLUMNS[1:], map(_plain, cells[1:])))
        a, _, b = cells[1].partition(" - ")
        found["A - B"], found["on"] = (DOC_ARMS.get(a), DOC_ARMS.get(b)), RULE_ON.get(cells[2])
        for column, value in expected.items():
            if found[column] != value:
                shown = cells[RULE_COLUMNS.index(column)]
                problems.append(f"rule table {name}, {column}: the doc prints {shown!r}, the report {value!r}")
        verdict, words = _expected_verdict(line), _plain(cells[-1])
        if not words.startswith(verdict or "") or (verdict is None and words):  # a remark may follow the verdict
            problems.append(f"rule table {name}, verdict: the doc says {words!r}, the report {verdict or 'none'!r}")
    if sorted(seen) != sorted(reports.comparisons):
        problems.append(f"rule table rows {seen}, the decision report's comparisons {sorted(reports.comparisons)}")
    return problems


# --- 2. Table 3, Table 6, the learned counts and the contrasts outside the rule ------------------------
NO_RUN = "–"  # a cell of an arm with no run yet


def _cell_problem(
    where: str, cell: str, arm: str, metric: str, higher: bool, reports: Reports, bold_among: tuple[str, ...]
) -> str | None:
    """The doc's ``cell`` against the report's; bold marks the best of ``bold_among`` (none if empty)."""
    if (arm, metric) not in reports.test:
        return None if cell == NO_RUN else f"{where}: the doc prints {cell!r}, the report has no run"
    expected = _mean_sd(reports.test[arm, metric], metric)
    means = {other: reports.test[other, metric].mean for other in bold_among if (other, metric) in reports.test}
    bold = bool(means) and _is_best(means, arm, higher)
    if _plain(cell) != expected or _bold(cell) != bold:
        return f"{where}: the doc prints {cell!r}, the report {expected!r}" + (" (the best, bold)" if bold else "")
    return None


def metric_table_problems(doc: str, heading: str, arms: tuple[str, ...], bold: bool, reports: Reports) -> list[str]:
    """A table of one row per arm of ``arms`` (method, n, then TABLE3_COLUMNS), the first of ``heading``."""
    header, rows = doc_table(doc, heading)
    problems = []
    if header[:2] != ["method", "n"] or any(name not in TABLE3_COLUMNS for name in header[2:]):
        problems.append(f"{heading}: header {header} is not method, n and some of {list(TABLE3_COLUMNS)}")
        return problems
    seen = []
    for cells in rows:
        arm = TABLE3_METHODS.get(cells[0])
        if arm is None:
            problems.append(f"{heading}: row {cells[0]!r} is none of {list(TABLE3_METHODS)}")
            continue
        seen.append(arm)
        if cells[1] != str(reports.runs.get(arm, 0)):
            problems.append(
                f"{heading}, {cells[0]}, n: the doc prints {cells[1]}, the CSV has {reports.runs.get(arm, 0)}"
            )
        for name, cell in zip(header[2:], cells[2:]):
            metric, higher = TABLE3_COLUMNS[name]
            where = f"{heading}, {cells[0]}, {name}"
            problem = _cell_problem(where, cell, arm, metric, higher, reports, arms if bold else ())
            problems += [problem] if problem else []
    if seen != list(arms):
        problems.append(f"{heading}: the rows of {seen}, not one of each of {list(arms)} in that order")
    return problems


def table6_problems(doc: str, reports: Reports) -> list[str]:
    header, rows = doc_table(doc, DOC_SECTIONS[2])
    names = header[1 + len(TABLE6_DATA_COLUMNS) :]
    problems = []
    arms = tuple(DOC_ARMS.get(name, name) for name in names)
    if header[1 : 1 + len(TABLE6_DATA_COLUMNS)] != list(TABLE6_DATA_COLUMNS) or arms != COMPARED:
        problems.append(f"Table 6 header {header}: expected class, {TABLE6_DATA_COLUMNS} and the arms {COMPARED}")
        return problems
    group_of = {name: group for group, names in reports.groups.items() for name in names}
    classes = sorted({metric.removeprefix("iou/") for _, metric in reports.test if metric.startswith("iou/")})
    seen = []
    for cells in rows:
        marked = re.fullmatch(r"(\w+)(?: \((\w+)\))?", cells[0])
        assert marked, f"Table 6: class cell {cells[0]!r}"
        name, group = marked.groups()
        seen.append(name)
        if name not in classes:
            problems.append(f"Table 6 row {name!r}: the report has no such class ({classes})")
            continue
        if group != group_of.get(name):  # (S) and (F) mark the rule's groups
            problems.append(f"Table 6 row {cells[0]!r}: the rule's group of {name} is {group_of.get(name)}")
        for arm, cell in zip(arms, cells[1 + len(TABLE6_DATA_COLUMNS) :]):
            where = f"Table 6, {name}, {arm}"
            problem = _cell_problem(where, cell, arm, f"iou/{name}", True, reports, COMPARED)
            problems += [problem] if problem else []
    if sorted(seen) != classes:
        problems.append(f"Table 6 has the classes {sorted(seen)}, the report {classes}")
    return problems


def learned_table_problems(doc: str, reports: Reports) -> list[str]:
    """Rows: the rule's rare classes marked with their group; cells: learned/runs of each arm."""
    header, rows = doc_table(doc, DOC_SECTIONS[3])
    arms = tuple(DOC_ARMS.get(name, name) for name in header[1:])
    if header[0] != "class" or arms != COMPARED:
        return [f"learned table header {header}: expected class and the arms {COMPARED}"]
    rare = [f"{name} ({group})" for group, names in reports.groups.items() for name in names]
    problems = (
        [] if [cells[0] for cells in rows] == rare else [f"learned table rows {[c[0] for c in rows]}, not {rare}"]
    )
    for cells in rows:
        name = cells[0].split(" ")[0]
        for arm, cell in zip(arms, cells[1:]):
            runs = reports.runs.get(arm, 0)
            expected = f"{reports.learned[arm, name]}/{runs}" if runs else NO_RUN
            if cell != expected:
                problems.append(f"learned table, {name}, {arm}: the doc prints {cell!r}, the report {expected!r}")
    return problems


def contrast_table_problems(doc: str, heading: str, section: str, reports: Reports) -> list[str]:
    """The table of ``heading`` (its last table) is the decision report's ``section`` contrasts, in order."""
    start, end = section_span(doc, heading)
    blocks = re.findall(r"^\|.*?(?=^[^|]|\Z)", doc[start:end], re.M | re.S)
    lines = blocks[-1].strip().splitlines() if blocks else []
    if not lines or tuple(_cells(lines[0])) != CONTRAST_COLUMNS:
        return [f"{heading}: its last table's header is not {list(CONTRAST_COLUMNS)}"]
    rows = [_cells(line) for line in lines[2:]]
    on_names = {value: key for key, value in RULE_ON.items()}
    expected = []
    for line in reports.contrasts[section]:
        on = on_names[line["on"]]
        mean = f"{float(line['mean']):+.2f}" if line["mean"] else NO_RUN
        interval = f"[{float(line['low']):+.2f}, {float(line['high']):+.2f}]" if line["low"] else NO_RUN
        expected.append([f"{DOC_NAMES[line['a']]} - {DOC_NAMES[line['b']]}", on, line["n"], mean, interval])
    return [
        f"{heading}, row {index + 1}: the doc prints {found}, the report {wanted}"
        for index, (found, wanted) in enumerate(zip(rows, expected))
        if found != wanted
    ] + ([f"{heading}: {len(rows)} rows, the report {len(expected)}"] if len(rows) != len(expected) else [])


def tables_problems(doc: str, reports: Reports) -> list[str]:
    return [
        *metric_table_problems(doc, DOC_SECTIONS[1], COMPARED, True, reports),
        *table6_problems(doc, reports),
        *learned_table_problems(doc, reports),
        *contrast_table_problems(doc, DOC_SECTIONS[4], "descriptive", reports),
        *metric_table_problems(doc, DOC_SECTIONS[5], EXPLORATORY, False, reports),
        *contrast_table_problems(doc, DOC_SECTIONS[5], "exploratory", reports),
    ]


# --- 3. quoted paired differences ------------------------------------------------------------------
def _printed_as(mean: str, low: str, high: str, known: tuple[Difference, ...]) -> Difference | None:
    """The printed difference the quote is, directly or negated (B - A); an unsigned mean ("2.81 points
    below") may be either sign: its interval's signs are printed."""
    means = [mean] if mean[0] in "+-" else [f"+{mean}", f"-{mean}"]
    for difference in known:  # the rule's comparisons first: they carry the Holm p a quote may give
        for signed in means:
            if (signed, low, high) in ((difference.mean, difference.low, difference.high), difference.negated()):
                return difference
    return None


def difference_problems(where: str, text: str, reports: Reports) -> list[str]:
    """Every quoted "mean [low, high]" in ``text`` (outside tables: the rule table is checked cell by cell)
    is a difference the reports print, every Holm p beside one is that comparison's, and no interval or
    Holm p stands without a mean before it."""
    flat = _flat("\n".join(line for line in text.splitlines() if not line.startswith("|")))
    problems, covered = [], []
    for quote in QUOTED.finditer(flat):
        covered.append(quote.span())
        difference = _printed_as(quote["mean"], quote["low"], quote["high"], reports.differences)
        if difference is None:
            problems.append(f"{where}: {quote.group(0)!r} matches no difference the reports print")
        elif quote["holm"] is not None and quote["holm"] != difference.p_holm:
            rule = "no comparison of the rule" if difference.p_holm is None else f"Holm p {difference.p_holm}"
            problems.append(f"{where}: {quote.group(0)!r}: the report gives {rule}")
    for stray in (*INTERVAL.finditer(flat), *HOLM_P.finditer(flat)):
        if not any(start <= stray.start() < end for start, end in covered):
            problems.append(f"{where}: {flat[max(0, stray.start() - 40) : stray.end() + 10]!r}: no quoted mean")
    return problems


def all_difference_problems(doc: str, readme: str, reports: Reports) -> list[str]:
    return difference_problems("docs/camvid.md", doc, reports) + difference_problems(
        "README.md", readme_camvid(readme), reports
    )


# --- 4. numbers said in words and numbers derived from the report --------------------------------
def _printed_difference(first: str, second: str) -> str:
    """``first - second`` of two numbers as the doc prints them: the doc quotes both beside the result."""
    return str(Decimal(first) - Decimal(second))


def _common(values: list[str]) -> str:
    """The one value all of ``values`` share (the doc says "each"/"every"), else all of them."""
    return values[0] if len(set(values)) == 1 else f"not the same: {values}"


def _unsigned_below(difference: Difference) -> str:
    return difference.mean[1:] if difference.mean.startswith("-") else f"not below: {difference.mean}"


@dataclass(frozen=True)
class Claim:
    """A sentence of the doc whose groups are report numbers: ``expected`` gives them as the doc prints them."""

    pattern: str
    expected: Callable[[Reports], tuple[str, ...]]


def _test_text(r: Reports, arm: str, metric: str) -> str:
    return _mean_sd(r.test[arm, metric], metric)


def _test_points(r: Reports, arm: str, metric: str) -> str:
    return _points(r.test[arm, metric].mean)


def _rare(r: Reports) -> list[str]:
    return [name for names in r.groups.values() for name in names]


def _pixel_accuracy_cost(r: Reports) -> tuple[str, ...]:
    """CE's pixel accuracy minus PAT's, then PAT's and CE's: "10.50 points (75.03 against 85.53)"."""
    pat, ce = _test_points(r, "pat", "pixel_accuracy"), _test_points(r, "ce", "pixel_accuracy")
    return _printed_difference(ce, pat), pat, ce


def _mixture_against_pat(r: Reports) -> tuple[str, ...]:
    """The n of C5 and C6 (mixture - PAT on S and F) when both are "not distinguishable at n = <n>"."""
    outcome = _common([r.comparisons[name]["outcome"] for name in ("C5", "C6")])
    return (outcome.removeprefix("not distinguishable at n = "),)


def _learned_none(r: Reports, arms: tuple[str, ...], leave_out: str = "") -> str:
    """ "none" when no run of ``arms`` learned any of the rule's rare classes (but ``leave_out``)."""
    counts = [r.learned[arm, name] for arm in arms for name in _rare(r) if name != leave_out]
    return "none" if not any(counts) else f"some: {counts}"


def _below_pat(r: Reports) -> str:
    """ "each" when every other baseline's mean test mIoU minus PAT's (the descriptive contrasts) is < 0."""
    means = [float(line["mean"]) for line in r.contrasts["descriptive"] if line["on"] == "miou"]
    return "each" if means and max(means) < 0 else f"not each: {means}"


def _closest_to_pat(r: Reports) -> str:
    """The other baseline whose mean test mIoU is closest below PAT's, as the doc names it."""
    lines = [line for line in r.contrasts["descriptive"] if line["on"] == "miou"]
    closest = max(lines, key=lambda line: float(line["mean"]))["a"]
    return DOC_NAMES[closest]


def _confidence_losses_behind(r: Reports) -> tuple[str, ...]:
    """The whole points, rounded, that Focal, LDAM and BLV are behind PAT on S and F: lowest, highest."""
    behind = [
        -float(line["mean"])
        for line in r.contrasts["descriptive"]
        if line["a"] in ("focal", "ldam", "blv") and line["on"] in ("S", "F")
    ]
    return str(round(min(behind))), str(round(max(behind)))


N, PM = f"({TWO_DECIMALS})", f"({MEAN_SD})"
DOC_CLAIMS = (
    Claim(rf"{N} points of pixel accuracy \({N} against {N}\)", _pixel_accuracy_cost),
    Claim(
        rf"Building's IoU falls from {N} to {N} \(CB-Focal's to {N};",
        lambda r: tuple(_test_points(r, arm, "iou/Building") for arm in ("ce", "pat", "cbfocal")),
    ),
    Claim(
        rf"PAT {PM}, CE {PM}, CB-Focal {PM}, mixture {PM}\)",
        lambda r: tuple(_mean_sd(r.val[arm, "miou"], "miou") for arm in ("pat", "ce", "cbfocal", "patcb")),
    ),
    Claim(
        rf"PAT's lead over CE there is {N} points against {N} on test",
        lambda r: (
            _printed_difference(_points(r.val["pat", "miou"].mean), _points(r.val["ce", "miou"].mean)),
            f"{float(r.comparisons['C1']['mean']):.2f}",
        ),
    ),
    Claim(r"\(PAT ([+-]\d+\.\d\d) over CB-Focal\)", lambda r: (f"{float(r.comparisons['C3']['mean']):+.2f}",)),
    Claim(
        rf"IoU {N} in every seed \(Pedestrian {PM}\), (\d+) of 5 runs for each",
        lambda r: (
            _common([_test_text(r, "ce", f"iou/{name}") for name in _rare(r) if name != "Pedestrian"]).split(" ± ")[0],
            _test_text(r, "ce", "iou/Pedestrian"),
            _common([str(r.learned["ce", name]) for name in _rare(r)]),
        ),
    ),
    Claim(r"\(IoU > (\d+)\)", lambda r: (f"{r.learned_iou * 100:g}",)),
    Claim(
        r"PAT learned every rare class in (\d+) of 5 runs, the mixture Pole in (\d+) of 5 and the others in (\d+) of 5",
        lambda r: (
            _common([str(r.learned["pat", name]) for name in _rare(r)]),
            str(r.learned["patcb", "Pole"]),
            _common([str(r.learned["patcb", name]) for name in _rare(r) if name != "Pole"]),
        ),
    ),
    Claim(
        rf"CB-Focal Pole in (\d+) of 5 \({PM}\), SignSymbol in (\d+) of 5 \({PM}\), Fence in (\d+) of 5 and "
        r"Pedestrian and Bicyclist in (\d+) of 5",
        lambda r: (
            str(r.learned["cbfocal", "Pole"]),
            _test_text(r, "cbfocal", "iou/Pole"),
            str(r.learned["cbfocal", "SignSymbol"]),
            _test_text(r, "cbfocal", "iou/SignSymbol"),
            str(r.learned["cbfocal", "Fence"]),
            _common([str(r.learned["cbfocal", name]) for name in ("Pedestrian", "Bicyclist")]),
        ),
    ),
    Claim(
        rf"CB-Focal's \"(\d+) of 5\" on Pole is {N} points below PAT",
        lambda r: (
            str(r.learned["cbfocal", "Pole"]),
            _printed_difference(_test_points(r, "pat", "iou/Pole"), _test_points(r, "cbfocal", "iou/Pole")),
        ),
    ),
    Claim(r"PAT's mean test mIoU is above (each) of the other five baselines'", lambda r: (_below_pat(r),)),
    Claim(r"The closest is (\w+) \(Balanced Softmax\)", lambda r: (_closest_to_pat(r),)),
    Claim(
        r"and BLV learned (none) of them in any run either",
        lambda r: (_learned_none(r, ("focal", "ldam", "blv")),),
    ),
    Claim(
        r"it learned SignSymbol in (\d+) of (\d+) runs and no other rare class",
        lambda r: (
            (str(r.learned["bms", "SignSymbol"]), str(r.runs["bms"]))
            if _learned_none(r, ("bms",), leave_out="SignSymbol") == "none"
            else ("another rare class learned",)
        ),
    ),
    Claim(
        r"and PAT without Eq. 4 learned (no) rare class in any run",
        lambda r: ("no" if _learned_none(r, ("cbfocal_b09999", "pat_no_eq4")) == "none" else "some",),
    ),
    Claim(r"Focal, LDAM and BLV trail PAT by about (\d+) to (\d+) points on S and on F", _confidence_losses_behind),
    Claim(r"\*\*(PAT helps on CamVid)\*\*", lambda r: (r.comparisons["C1"]["verdict"],)),
    Claim(r"synthetic prediction (fails|holds)\b", lambda r: (r.prediction.lower(),)),
    Claim(r"mixture is not distinguishable from PAT at n = (\d+) on either group", _mixture_against_pat),
)
README_CLAIMS = (
    Claim(rf"pixel accuracy is {N} points below cross-entropy's \({N} against {N}\)", _pixel_accuracy_cost),
    Claim(
        rf"Building's IoU {N} against {N},",
        lambda r: tuple(_test_points(r, arm, "iou/Building") for arm in ("pat", "ce")),
    ),
    Claim(
        rf"CB-Focal, the strongest baseline on our synthetic data, is {N} points \*below\* cross-entropy",
        lambda r: (_unsigned_below(r.difference("cbfocal", "ce", "miou")),),
    ),
    Claim(r"the prediction (fails|holds)\b", lambda r: (r.prediction.lower(),)),
    Claim(
        r"are all below PAT in the mean, the closest, (Balanced Softmax), by",
        lambda r: (
            {"BMS": "Balanced Softmax"}.get(_closest_to_pat(r), "not BMS") if _below_pat(r) == "each" else "not all",
        ),
    ),
    Claim(
        r"Focal, LDAM and BLV, like cross-entropy, (never) learned a rare class",
        lambda r: ("never" if _learned_none(r, ("ce", "focal", "ldam", "blv")) == "none" else "some",),
    ),
    Claim(r"mixture is not distinguishable from PAT at n = (\d+)", _mixture_against_pat),
)


def claim_problems(where: str, text: str, claims: tuple[Claim, ...], reports: Reports) -> list[str]:
    flat, problems = _flat(text), []
    for claim in claims:
        matches = list(re.finditer(claim.pattern, flat))
        if not matches:
            problems.append(f"{where} no longer says /{claim.pattern}/: update the claim in this test")
        for match in matches:
            expected = claim.expected(reports)
            if match.groups() != expected:
                problems.append(f"{where}: {match.group(0)!r} says {match.groups()}, the report gives {expected}")
    return problems


def all_claim_problems(doc: str, readme: str, reports: Reports) -> list[str]:
    return claim_problems("docs/camvid.md", doc, DOC_CLAIMS, reports) + claim_problems(
        "README.md", readme_camvid(readme), README_CLAIMS, reports
    )


def all_problems(doc: str, readme: str, reports: Reports) -> list[str]:
    return [
        *rule_table_problems(doc, reports),
        *tables_problems(doc, reports),
        *all_difference_problems(doc, readme, reports),
        *all_claim_problems(doc, readme, reports),
    ]


# --- the tests -------------------------------------------------------------------------------------
def test_rule_table_is_what_the_decision_report_prints(texts: tuple[str, str], reports: Reports) -> None:
    problems = rule_table_problems(texts[0], reports)
    assert not problems, "\n".join(problems)


def test_tables_are_what_the_reports_print(texts: tuple[str, str], reports: Reports) -> None:
    """Table 3, Table 6, the learned counts, the exploratory arms and both contrast tables, cell by cell."""
    problems = tables_problems(texts[0], reports)
    assert not problems, "\n".join(problems)


def test_every_quoted_difference_is_a_printed_one(texts: tuple[str, str], reports: Reports) -> None:
    problems = all_difference_problems(*texts, reports)
    assert not problems, "\n".join(problems)


def test_numbers_in_words_and_derived_numbers_are_the_reports(texts: tuple[str, str], reports: Reports) -> None:
    problems = all_claim_problems(*texts, reports)
    assert not problems, "\n".join(problems)


def test_a_quote_may_be_the_negation_but_not_a_half_mirrored_one() -> None:
    printed = (Difference("pat", "ce", "miou", "+2.12", "+1.13", "+3.10", p_holm="0.0227"),)
    reports = Reports({}, "", {}, 0.1, {}, {}, {}, {}, {}, printed)
    assert not difference_problems("t", "PAT over CE: +2.12 [+1.13, +3.10] (Holm p = 0.0227).", reports)
    assert not difference_problems("t", "CE is 2.12 points below PAT ([-3.10, -1.13]).", reports)
    for wrong in (
        "CE - PAT -2.12 [-1.13, -3.10]",  # the negation with its interval not mirrored
        "PAT - CE +2.12 [+1.13, +3.11]",
        "PAT - CE 2.12 [+1.13, +3.10] (Holm p = 0.0226)",
        "an interval alone [+1.13, +3.10]",
        "a Holm p = 0.0227 alone",
    ):
        assert difference_problems("t", wrong, reports), wrong


def _decimals(text: str, spans: list[tuple[int, int]]) -> Iterator[re.Match[str]]:
    """The numbers with two or more decimals inside ``spans``, percentages (data shares that the doc's
    class table gives, not the report) and code spans (settings such as `b = 0.9999`) left out."""
    code = [span.span() for span in re.finditer(r"`[^`\n]*`", text)]
    for start, end in spans:
        for number in re.finditer(r"(?<![\d.])[+-]?\d+\.\d{2,}(?![\d%])", text):
            if start <= number.start() < end and not any(low < number.start() < high for low, high in code):
                yield number


def _plus_001(number: str) -> str:
    decimals = len(number.split(".")[1])
    changed = Decimal(number) + Decimal("0.01")
    return f"{changed:+.{decimals}f}" if number[0] in "+-" else f"{changed:.{decimals}f}"


def test_every_number_changed_by_001_fails(texts: tuple[str, str], reports: Reports) -> None:
    """Each number of the doc's result sections and the README's CamVid paragraphs, 0.01 larger, one at
    a time: each change must change the problems found (so no number there goes unchecked)."""
    doc, readme = texts
    before = set(all_problems(doc, readme, reports))
    missed, tried = [], 0
    for in_readme, text, spans in (
        (False, doc, [section_span(doc, heading) for heading in DOC_SECTIONS]),
        (True, readme, [paragraph_span(readme, lead) for lead in README_PARAGRAPHS]),
    ):
        for number in _decimals(text, spans):
            changed = text[: number.start()] + _plus_001(number.group(0)) + text[number.end() :]
            after = all_problems(doc, changed, reports) if in_readme else all_problems(changed, readme, reports)
            tried += 1
            if set(after) == before:  # from a wrong doc, the change may also remove a problem
                where = "README.md" if in_readme else "docs/camvid.md"
                missed.append(f"{where}: {text[max(0, number.start() - 40) : number.end() + 10]!r}")
    assert tried >= 8 * 7 + 9 * 5 + 11 * 9  # the means of the rule table, Table 3 and Table 6 alone
    assert not missed, "numbers changed by 0.01 that no check caught:\n" + "\n".join(missed)


STATUS = re.compile(r"\*\*Status \([^)]*\): (\d+) of (\d+) runs done")


def test_the_status_line_counts_the_runs_of_the_csv(texts: tuple[str, str]) -> None:
    """The doc's status line gives the runs the committed CSV holds (a run counts once its test row is in)."""
    with STUDY_CSV.open(newline="") as handle:
        done = {row["run"] for row in csv.DictReader(handle) if row["split"] == "test"}
    status = STATUS.search(_flat(texts[0]))
    assert status, "docs/camvid.md has no '**Status (...): N of 44 runs done' line"
    assert (int(status[1]), int(status[2])) == (len(done), STUDY_RUNS)
