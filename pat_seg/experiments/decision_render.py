"""An executed decision rule (:class:`pat_seg.experiments.decision_results.DecisionReport`) as markdown or CSV.

Markdown (``pat-seg report --decision``) prints IoU values, differences and pixel shares in points
(x100) with 2 decimals, the study's completeness first; CSV (``--format csv``) holds them in points at
full precision: one line per arm, comparison, prediction, contrast and class x arm. Every name the
study gives (its arms, comparisons, classes, the files it was read from) is printed through
:func:`~pat_seg.table_text.markdown_text` in markdown, in a table cell or in the text around it.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import get_args

from pat_seg.experiments.decision_results import ClassResult, DecisionReport
from pat_seg.experiments.decision_rule import ContrastKind
from pat_seg.experiments.paired import PairedDifference
from pat_seg.table_text import markdown_text

SCALE = 100.0  # IoU in points


def _points(value: float, signed: bool = False) -> str:
    return f"{value * SCALE:+.2f}" if signed else f"{value * SCALE:.2f}"


def _interval(difference: PairedDifference | None) -> str:
    if difference is None:
        return "no pair"
    if difference.n < 2:
        return "n = 1, no interval"
    return f"[{_points(difference.low, True)}, {_points(difference.high, True)}]"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3g}"


def _level(confidence: float) -> str:
    return f"{confidence * 100:.10g}%"


def _labelled(text: str, provisional: str) -> str:
    return f"{text}, {provisional}" if provisional and text else text


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(map(markdown_text, cells)) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: range | Sequence[int]) -> list[str]:
    """A markdown table whose ``numeric`` columns are right-aligned."""
    rule = "|" + "".join("---:|" if i in numeric else "---|" for i in range(len(header)))
    return [_row(header), rule, *(_row(row) for row in rows), ""]


def _status_lines(result: DecisionReport) -> list[str]:
    """The study's completeness, first: which arms have which seeds."""
    rule, missing = result.rule, result.missing
    family = {arm for c in rule.comparisons for arm in (c.a, c.b)}
    if not missing:
        lines = [f"**Complete**: every arm has a run of every seed the rule lists ({len(rule.arms)} arms).", ""]
    else:
        lacking = "; ".join(f"{markdown_text(arm)} lacks {' '.join(seeds)}" for arm, seeds in missing.items())
        lines = [
            f"**INCOMPLETE**: {len(missing)} of {len(rule.arms)} arms lack seeds the rule lists "
            f"({lacking}). Every number "
            "below is computed from the seeds there are, with its n.",
            "",
        ]
    if any(r.provisional for r in result.comparisons):
        lines += ["The family's comparisons lack seeds: **every verdict below is provisional**.", ""]
    elif missing:
        arms = ", ".join(map(markdown_text, sorted(family)))
        lines += [f"The family's arms ({arms}) have every seed: its verdicts are final.", ""]
    rows = [
        [arm, " ".join(seeds), " ".join(result.present[arm]) or "none", " ".join(missing.get(arm, ())) or "–"]
        for arm, seeds in rule.arms.items()
    ]
    lines += _table(["Arm", "Seeds listed", "Seeds with a run", "Missing"], rows, ())
    if result.ignored:
        lines += [f"Runs of the study the rule does not use: {', '.join(map(markdown_text, result.ignored))}.", ""]
    return lines


def render_markdown(result: DecisionReport) -> str:
    rule = result.rule
    m = len(rule.comparisons)
    study = markdown_text(rule.study)
    quantity = f"the mean of its classes' last `{rule.split}/iou/<class>`" if rule.groups else ""
    # <seed>-<arm> in a code span: outside one, markdown reads it as two HTML tags and drops them.
    out = [
        f"## Decision rule of the study {study} ({markdown_text(str(rule.path))})",
        "",
        f"Runs: {markdown_text(result.source)}, folders {study}/`<seed>-<arm>`. A run's {rule.metric}: its last "
        f"`{rule.split}/{rule.metric}`" + (f"; a group's value: {quantity}" if quantity else "") + ". "
        "Differences A - B in IoU points, paired by seed.",
        "",
        *_status_lines(result),
        f"### Comparisons (the family: m = {m}, {rule.correction.capitalize()} at alpha = {rule.alpha:g})",
        "",
    ]
    confidence, simultaneous = 1.0 - rule.alpha, 1.0 - rule.alpha / m
    header = ["", "A - B", "On", "n", "Mean", "SD", f"{_level(confidence)} interval"]
    header += [f"{_level(simultaneous)} simultaneous", "p", "p Holm", "Outcome", "Verdict"]
    rows = []
    for r in result.comparisons:
        d, c = r.difference, r.comparison
        rows.append(
            [
                c.name,
                f"{c.a} - {c.b}",
                c.on,
                str(r.n),
                "–" if d is None else _points(d.mean, True),
                "–" if d is None or d.n < 2 else _points(d.std),
                _interval(d),
                _interval(r.simultaneous),
                "–" if d is None else _p(d.p_value),
                _p(r.p_holm) if d is not None and d.n >= 2 else "– (enters as 1)",
                _labelled(r.outcome, r.provisional),
                _labelled(r.verdict, r.provisional),
            ]
        )
    out += _table(header, rows, range(3, 10))
    unpaired: dict[tuple[str, ...], list[str]] = {}  # the same missing seeds, named once
    for r in result.comparisons:
        if r.unpaired:
            unpaired.setdefault(r.unpaired, []).append(r.comparison.name)
    out += [
        f"{', '.join(map(markdown_text, names))}: seeds {', '.join(seeds)} unpaired (an arm lacks the run or its value)."
        for seeds, names in unpaired.items()
    ]
    out += [""] if unpaired else []
    if result.prediction is not None:
        p = result.prediction
        out += [f"### Prediction: **{p.status}**" + (f", {p.provisional}" if p.provisional else ""), ""]
        by_name = {r.comparison.name: r for r in result.comparisons}
        rows = [
            [
                name,
                f"{by_name[name].comparison.a} - {by_name[name].comparison.b} on {by_name[name].comparison.on}",
                by_name[name].comparison.predicted or "",
                by_name[name].outcome,
                # A non-strict prediction that holds without a shown outcome is only not contradicted.
                "holds (not contradicted)" if state == "holds" and by_name[name].sign == 0 else state,
            ]
            for name, state in p.states
        ]
        out += _table(["", "A - B", "Predicted", "Outcome", "Prediction"], rows, ())
        out += [
            "A prediction holds where the outcome bears it out: a strict one (< 0, > 0) needs its outcome, a "
            "non-strict one (>= 0, <= 0) only the absence of the opposite one; it fails where the outcome is the "
            "opposite; it is open otherwise. HOLDS: every one holds; FAILS: one fails.",
            "",
        ]
    for kind in get_args(ContrastKind):
        mine = [c for c in result.contrasts if c.kind == kind]
        if not mine:
            continue
        out += [
            f"### {kind.capitalize()}: each arm minus {markdown_text(mine[0].against)} ({_level(confidence)} paired t intervals, "
            f"uncorrected; {kind}, no verdict)",
            "",
        ]
        rows = []
        for contrast in mine:
            d = contrast.difference
            n = 0 if d is None else d.n
            count = f"{n}" if n == contrast.listed else f"{n} of {contrast.listed}"
            mean = "–" if d is None else _points(d.mean, True)
            rows.append([f"{contrast.arm} - {contrast.against}", contrast.on, count, mean, _interval(d)])
        out += _table(["A - B", "On", "n", "Mean", f"{_level(confidence)} interval"], rows, range(2, 5))
    out += _class_tables(result)
    return "\n".join(out)


def _class_tables(result: DecisionReport) -> list[str]:
    rule = result.rule
    arms = list(rule.arms)
    lead = ["Class", "Train pixels %", "Train images"] if result.training_shown else ["Class"]

    def training(c: ClassResult) -> list[str]:
        if not result.training_shown:
            return []
        return ["–", "–"] if c.training is None else [_points(c.training.pixel_share), str(c.training.images)]

    def iou(values: list[float]) -> str:
        if not values:
            return "–"
        text = _points(math.fsum(values) / len(values))
        return f"{text} ± {_points(statistics.stdev(values))}" if len(values) > 1 else text

    def learned(values: list[float]) -> str:
        return f"{sum(v > rule.learned_iou for v in values)}/{len(values)}" if values else "–"

    out = [f"### Per-class {rule.split} IoU (mean ± sd over each arm's seeds, points)", ""]
    out += _table(
        [*lead, *arms],
        ([c.name, *training(c), *(iou(c.values[a]) for a in arms)] for c in result.classes),
        range(1, len(lead) + len(arms)),
    )
    if result.training_shown:
        source = "the decision block's `classes:`" if rule.classes else "the runs' hparams.yaml"
        out += [f"Training pixel share (of labelled pixels) and images that show the class: from {source}.", ""]
    out += [
        f"### Runs that learned each class ({rule.split} IoU > {rule.learned_iou * SCALE:g}; k/n of each arm's runs)",
        "",
    ]
    out += _table(
        ["Class", *arms],
        ([c.name, *(learned(c.values[a]) for a in arms)] for c in result.classes),
        range(1, 1 + len(arms)),
    )
    return out


CSV_COLUMNS = (
    "section",
    "name",
    "a",
    "b",
    "on",
    "n",
    "seeds",
    "unpaired",
    "mean",
    "sd",
    "low",
    "high",
    "confidence",
    "low_simultaneous",
    "high_simultaneous",
    "simultaneous_confidence",
    "p",
    "p_holm",
    "outcome",
    "verdict",
    "provisional",
    "predicted",
    "prediction",
    "learned",
    "pixel_share",
    "train_images",
)


def _number(value: float | None, scale: float = SCALE) -> str:
    return "" if value is None or math.isnan(value) else format(value * scale, ".10g")


def _difference_fields(d: PairedDifference | None, prefix: str = "") -> dict[str, str]:
    if d is None:
        return {}
    return {
        f"{prefix}mean": _number(d.mean),
        f"{prefix}sd": _number(d.std),
        f"{prefix}low": _number(d.low),
        f"{prefix}high": _number(d.high),
        f"{prefix}p": _number(d.p_value, 1.0),
    }


def render_csv(result: DecisionReport) -> str:
    """One line per arm (completeness), comparison, the prediction, contrast and class x arm; differences,
    IoU and pixel shares in points (x100), p-values as they are."""
    rule = result.rule
    lines: list[dict[str, str]] = []
    for arm in rule.arms:
        missing = result.missing.get(arm, ())
        outcome = "incomplete" if missing else "complete"
        lines.append(
            {
                "section": "arm",
                "a": arm,
                "n": str(len(result.present[arm])),
                "seeds": " ".join(result.present[arm]),
                "unpaired": " ".join(missing),
                "outcome": outcome,
            }
        )
    states = dict(result.prediction.states) if result.prediction is not None else {}
    m = len(rule.comparisons)
    for r in result.comparisons:
        c = r.comparison
        line = {"section": "comparison", "name": c.name, "a": c.a, "b": c.b, "on": c.on, "n": str(r.n)}
        line |= {"seeds": " ".join(r.seeds), "unpaired": " ".join(r.unpaired), **_difference_fields(r.difference)}
        line |= {"confidence": repr(1.0 - rule.alpha), "simultaneous_confidence": repr(1.0 - rule.alpha / m)}
        if r.simultaneous is not None:
            line |= {"low_simultaneous": _number(r.simultaneous.low), "high_simultaneous": _number(r.simultaneous.high)}
        if r.difference is not None and r.difference.n >= 2:
            line["p_holm"] = _number(r.p_holm, 1.0)
        line |= {"outcome": r.outcome, "verdict": r.verdict, "provisional": r.provisional}
        line |= {"predicted": c.predicted or "", "prediction": states.get(c.name, "")}
        lines.append(line)
    if result.prediction is not None:
        p = result.prediction
        names = " ".join(name for name, _ in p.states)
        lines.append({"section": "prediction", "name": names, "outcome": p.status, "provisional": p.provisional})
    for contrast in result.contrasts:
        line = {"section": contrast.kind, "a": contrast.arm, "b": contrast.against, "on": contrast.on}
        n = 0 if contrast.difference is None else contrast.difference.n
        seeds = () if contrast.difference is None else contrast.difference.seeds
        line |= {"n": str(n), "seeds": " ".join(map(str, seeds)), "unpaired": " ".join(contrast.unpaired)}
        line |= {**_difference_fields(contrast.difference), "confidence": repr(1.0 - rule.alpha)}
        lines.append(line)
    for row in result.classes:
        for arm, values in row.values.items():
            line = {"section": "class", "name": row.name, "a": arm, "n": str(len(values))}
            if values:
                line |= {
                    "mean": _number(math.fsum(values) / len(values)),
                    "learned": str(sum(v > rule.learned_iou for v in values)),
                }
            if len(values) > 1:
                line["sd"] = _number(statistics.stdev(values))
            if row.training is not None:
                line |= {"pixel_share": _number(row.training.pixel_share), "train_images": str(row.training.images)}
            lines.append(line)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()
