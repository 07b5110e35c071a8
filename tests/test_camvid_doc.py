"""docs/camvid.md and README.md's CamVid paragraphs quote what `pat-seg report` prints from the committed CSV.

The doc's numbers come from three commands (docs/camvid.md, "Results: the decision rule" and "Table 3"):

    pat-seg report --from-csv docs/studies/camvid_table3.csv --decision configs/sweeps/camvid_table3.yaml
    pat-seg report --from-csv docs/studies/camvid_table3.csv --split test [--paired-against CE|PAT]
    pat-seg report --from-csv docs/studies/camvid_table3.csv            (validation split)

Each runs once per module through the Python API. The doc's rule table, Table 3 and Table 6 are compared
cell by cell with the report at the precision the doc prints; every quoted paired difference
"+a.bb [+c.cc, +d.dd]" must be one the reports print (or its exact negation, B - A for A - B); the
numbers the doc derives (mean Dice = 1 - Dice error, differences of two quoted means) are recomputed
here. Only the four core arms (ce, cbfocal, pat, patcb) are read: the other arms' rows are still being
added to the CSV, and a test below adds made-up rows for them to show that they change nothing here.
A last test changes every number of those sections by 0.01, one at a time, and requires a failure.
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

from pat_seg.experiments.decision import decision_report
from pat_seg.experiments.decision_rule import load_decision
from pat_seg.experiments.report import report

REPO = Path(__file__).resolve().parents[1]
DOC, README = REPO / "docs" / "camvid.md", REPO / "README.md"
STUDY_CSV = REPO / "docs" / "studies" / "camvid_table3.csv"
SWEEP = REPO / "configs" / "sweeps" / "camvid_table3.yaml"

# The rule's arm names (run folders <seed>-<arm>) and the method labels the report's tables print.
CORE_LABELS = {"ce": "CE", "cbfocal": "CBFocal", "pat": "PAT (T=20)", "patcb": "PAT+CB mix (lambda=0.5)"}
CORE = tuple(CORE_LABELS)
# The names the doc gives the arms: in the rule table's "A - B" and Table 6's header...
DOC_ARMS = {"CE": "ce", "CB-Focal": "cbfocal", "PAT": "pat", "mixture": "patcb"}
# ...and in Table 3's method column.
TABLE3_METHODS = {"CE": "ce", "CB-Focal": "cbfocal", "PAT (T = 20)": "pat", "PAT+CB mixture (lambda = 0.5)": "patcb"}
# Table 3's columns: the report's metric, and whether higher is better (bold marks the best of the four).
TABLE3_COLUMNS = {
    "test mIoU": ("miou", True),
    "pixel accuracy": ("pixel_accuracy", True),
    "Dice error": ("dice_error", False),
    "mIoU head (7 classes)": ("miou_head", True),
    "mIoU tail (4 rarest)": ("miou_tail", True),
}
RULE_COLUMNS = ("", "A - B", "on", "n", "mean", "95% interval", "99.375% simultaneous", "p", "p Holm", "outcome")
RULE_ON = {"mIoU": "miou", "S": "S", "F": "F"}
# Table 6's columns that come from the class table of the same doc (native-size counts), not the report.
TABLE6_DATA_COLUMNS = ("train share", "train images (of 367)")
# The sections whose every number is a report number (the mutation test changes each of them).
DOC_SECTIONS = ("Results: the decision rule", "Table 3: the core arms on the test split", "Table 6: per-class test IoU")
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
    test: dict[tuple[str, str], tuple[float, float]]  # (arm, metric) -> mean, sd over seeds (fractions)
    val: dict[tuple[str, str], tuple[float, float]]
    differences: tuple[Difference, ...]  # the rule's comparisons first, then --paired-against CE and PAT

    def difference(self, a: str, b: str, on: str) -> Difference:
        return next(d for d in self.differences if (d.a, d.b, d.on) == (a, b, on))


def _table_cells(text: str) -> dict[tuple[str, str], tuple[float, float]]:
    """The core arms' cells of Table 3 and Table 6 in ``pat-seg report --format csv`` output."""
    arms = {label: arm for arm, label in CORE_LABELS.items()}
    return {
        (arms[line["row"]], line["metric"]): (float(line["mean"]), float(line["std"]))
        for line in csv.DictReader(io.StringIO(text))
        if line["table"].startswith(("Table 3", "Table 6")) and line["row"] in arms
    }


def _printed_paired(markdown: str, against: str) -> list[Difference]:
    """The core arms' differences in the markdown table "Paired differences against <against>", as printed."""
    arms = {label: arm for arm, label in CORE_LABELS.items()}
    lines = markdown.split(f"### Paired differences against {against} ", 1)[1].split("\n\n")[1].splitlines()
    header = _cells(lines[0])
    found = []
    for cells in map(_cells, lines[2:]):
        if cells[1] not in arms:
            continue
        for column, cell in zip(header[2:], cells[2:]):
            printed = PRINTED_DIFFERENCE.fullmatch(cell.replace("**", ""))
            assert printed, f"--paired-against {against}: {cell!r} is not 'mean [low, high] (n=k)'"
            found.append(Difference(arms[cells[1]], DOC_ARMS[against], PAIRED_COLUMNS[column], *printed.groups()))
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
    for against in ("CE", "PAT"):
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
            if line["section"] == "class" and line["a"] in CORE
        },
        test=_table_cells(report("unused", fmt="csv", split="test", from_csv=str(study_csv))),
        val=_table_cells(report("unused", fmt="csv", split="val", from_csv=str(study_csv))),
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


def _mean_sd(cell: tuple[float, float], metric: str) -> str:
    """A table cell as the report prints it: points with 2 decimals, Dice error as is with 3."""
    mean, sd = cell
    return f"{mean:.3f} ± {sd:.3f}" if metric == "dice_error" else f"{_points(mean)} ± {_points(sd)}"


def _is_best(cells: dict[str, float], arm: str, higher: bool) -> bool:
    """Whether ``arm`` has the best of the core arms' means: the doc bolds it among those four only."""
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


# --- 2. Table 3 and Table 6 ------------------------------------------------------------------------
def _cell_problem(where: str, cell: str, arm: str, metric: str, higher: bool, reports: Reports) -> str | None:
    expected = _mean_sd(reports.test[arm, metric], metric)
    bold = _is_best({other: reports.test[other, metric][0] for other in CORE}, arm, higher)
    if _plain(cell) != expected or _bold(cell) != bold:
        return f"{where}: the doc prints {cell!r}, the report {expected!r}" + (" (best of the four)" if bold else "")
    return None


def table3_problems(doc: str, reports: Reports) -> list[str]:
    header, rows = doc_table(doc, DOC_SECTIONS[1])
    problems = [
        f"Table 3 column {name!r} is none of {list(TABLE3_COLUMNS)}"
        for name in header[1:]
        if name not in TABLE3_COLUMNS
    ]
    seen = []
    for cells in rows:
        arm = TABLE3_METHODS.get(cells[0])
        if arm is None:
            problems.append(f"Table 3 row {cells[0]!r} is none of {list(TABLE3_METHODS)}")
            continue
        seen.append(arm)
        for name, cell in zip(header[1:], cells[1:]):
            if name in TABLE3_COLUMNS:
                metric, higher = TABLE3_COLUMNS[name]
                problem = _cell_problem(f"Table 3, {cells[0]}, {name}", cell, arm, metric, higher, reports)
                problems += [problem] if problem else []
    if sorted(seen) != sorted(CORE):
        problems.append(f"Table 3 has the rows of {seen}, not one of each of {list(CORE)}")
    return problems


def table6_problems(doc: str, reports: Reports) -> list[str]:
    header, rows = doc_table(doc, DOC_SECTIONS[2])
    arms = header[1 + len(TABLE6_DATA_COLUMNS) :]
    problems = []
    if header[1 : 1 + len(TABLE6_DATA_COLUMNS)] != list(TABLE6_DATA_COLUMNS) or sorted(arms) != sorted(DOC_ARMS):
        problems.append(f"Table 6 header {header}: expected class, {TABLE6_DATA_COLUMNS} and {list(DOC_ARMS)}")
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
        for doc_arm, cell in zip(arms, cells[1 + len(TABLE6_DATA_COLUMNS) :]):
            where = f"Table 6, {name}, {doc_arm}"
            problem = _cell_problem(where, cell, DOC_ARMS[doc_arm], f"iou/{name}", True, reports)
            problems += [problem] if problem else []
    if sorted(seen) != classes:
        problems.append(f"Table 6 has the classes {sorted(seen)}, the report {classes}")
    return problems


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
    return _points(r.test[arm, metric][0])


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


N, PM = f"({TWO_DECIMALS})", f"({MEAN_SD})"
DOC_CLAIMS = (
    # Dice error is 1 - mean Dice (docs/losses.md), so the doc's mean Dice is 1 minus the report's value.
    Claim(
        r"mean Dice is (\d\.\d+) for CE, (\d\.\d+) for CB-Focal, (\d\.\d+) for PAT and (\d\.\d+) for the mixture",
        lambda r: tuple(f"{1 - r.test[arm, 'dice_error'][0]:.3f}" for arm in CORE),
    ),
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
            _printed_difference(_points(r.val["pat", "miou"][0]), _points(r.val["ce", "miou"][0])),
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
        *table3_problems(doc, reports),
        *table6_problems(doc, reports),
        *all_difference_problems(doc, readme, reports),
        *all_claim_problems(doc, readme, reports),
    ]


# --- the tests -------------------------------------------------------------------------------------
def test_rule_table_is_what_the_decision_report_prints(texts: tuple[str, str], reports: Reports) -> None:
    problems = rule_table_problems(texts[0], reports)
    assert not problems, "\n".join(problems)


def test_table3_is_what_the_test_report_prints(texts: tuple[str, str], reports: Reports) -> None:
    problems = table3_problems(texts[0], reports)
    assert not problems, "\n".join(problems)


def test_table6_is_what_the_test_report_prints(texts: tuple[str, str], reports: Reports) -> None:
    problems = table6_problems(texts[0], reports)
    assert not problems, "\n".join(problems)


def test_every_quoted_difference_is_a_printed_one(texts: tuple[str, str], reports: Reports) -> None:
    problems = all_difference_problems(*texts, reports)
    assert not problems, "\n".join(problems)


def test_numbers_in_words_and_derived_numbers_are_the_reports(texts: tuple[str, str], reports: Reports) -> None:
    problems = all_claim_problems(*texts, reports)
    assert not problems, "\n".join(problems)


def test_a_quote_may_be_the_negation_but_not_a_half_mirrored_one() -> None:
    printed = (Difference("pat", "ce", "miou", "+2.12", "+1.13", "+3.10", p_holm="0.0227"),)
    reports = Reports({}, "", {}, 0.1, {}, {}, {}, printed)
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
    """The numbers with two or more decimals inside ``spans``, percentages left out (data shares that
    the doc's class table gives, not the report)."""
    for start, end in spans:
        for number in re.finditer(r"(?<![\d.])[+-]?\d+\.\d{2,}(?![\d%])", text):
            if start <= number.start() < end:
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
    assert tried >= 8 * 7 + 4 * 10 + 11 * 8  # the numbers of the rule table, Table 3 and Table 6 alone
    assert not missed, "numbers changed by 0.01 that no check caught:\n" + "\n".join(missed)


# The labels the sweep's grid gives the arms whose rows are still to come (`pat-seg sweep` labels the
# whole grid before any run trains, so these are the labels their rows will have).
OTHER_ARMS = {
    "focal": "Focal (gamma=2)",
    "cb": "CB",
    "ldam": "LDAM (m=0.5, s=20)",
    "bms": "BMS",
    "blv": "BLV (sigma=0.5)",
    "cbfocal_b09999": "CBFocal b=0.9999",
    "pat_no_eq4": "PAT w/o Eq. 4 (T=20)",
    "pat_beta_minmax": "PAT beta min-max (T=20)",
}


def test_the_other_arms_rows_change_nothing_here(
    texts: tuple[str, str], reports: Reports, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The committed CSV plus made-up rows for the 24 runs still to come, each better than every core
    arm on every metric (so the report's bold and best marks move to them): the doc checks say the same."""
    with STUDY_CSV.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    added = []
    for arm, label in OTHER_ARMS.items():
        for seed in ("s0", "s1", "s2"):
            for row in rows:
                if row["run"] == f"camvid_table3/{seed}-pat":
                    fake = {**row, "run": f"camvid_table3/{seed}-{arm}", "method": label}
                    fake["is_pat"] = "1" if arm.startswith("pat") else "0"
                    for column in columns:
                        if fake[column] and (column.startswith("iou/") or column.startswith(("miou", "pixel_acc"))):
                            fake[column] = "0.99"
                    fake["dice_error"] = "0.01" if fake["dice_error"] else ""
                    added.append(fake)
    assert len({row["run"] for row in added}) == 24
    grown = tmp_path_factory.mktemp("grown") / "camvid_table3.csv"
    with grown.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows + added)
    assert all_problems(*texts, build_reports(grown)) == all_problems(*texts, reports)
