r"""``pat-seg report --decision SWEEP.yaml``: a study's pre-registered decision rule, executed on its runs.

The rule is the sweep file's ``decision:`` block (:mod:`pat_seg.experiments.decision_rule`), the runs
each run's last ``<split>/*`` values (:mod:`pat_seg.experiments.study_runs`); the report is rendered by
:mod:`pat_seg.experiments.decision_render`. This module executes the rule; :func:`decision_report` is
the console script's entry.

Comparisons. For each comparison ``A - B``, the per-seed differences ``d_s`` over the listed seeds that
both arms have give ``n``, the mean, the sample sd, the paired t interval of level ``1 - alpha`` and the
two-sided p-value (:func:`pat_seg.experiments.paired.paired_difference`), and the simultaneous interval
of level ``1 - alpha / m`` (Bonferroni over the ``m`` comparisons). Holm's step-down procedure adjusts
the ``m`` p-values (:func:`pat_seg.experiments.paired.holm_adjust`); a comparison with fewer than two
pairs has no p-value and enters Holm's family with ``p = 1`` (never rejected, and ``m`` stays the
number the rule fixed). The outcome is ``A > B`` (``A < B``) when the adjusted p-value is below
``alpha`` and the mean difference is positive (negative), otherwise "not distinguishable at n = <n>":
a difference the data do not resolve is not a tie.

Prediction. A strict prediction (``> 0``, ``< 0``) claims a difference: it is borne out only by that
outcome (``A > B``, ``A < B``). A non-strict one (``>= 0``, ``<= 0``) claims "not worse": it stands
unless the opposite outcome is shown. The prediction HOLDS when every one of its comparisons bears it
out, FAILS when any outcome is the opposite of its prediction (``A < B`` for ``>= 0`` or ``> 0``,
``A > B`` for ``<= 0`` or ``< 0``), and is otherwise "not decided at n = <n>".

Incomplete studies. An arm that lacks a listed seed makes the study INCOMPLETE: the report says so
first, with each arm's seeds. Every number is computed from the seeds there are, with their ``n``;
when a comparison of the family has fewer than all its seeds, every verdict (outcomes, verdict texts,
the prediction) is labelled "provisional (k of K seeds)": Holm's adjustment ties each verdict to the
whole family. No seed is dropped without being named.

Also: ``descriptive`` and ``exploratory`` arms against their ``against`` arm on the metric and each
group (uncorrected intervals of level ``1 - alpha``, no verdict), and per class the IoU of each arm
(mean ± sd over its seeds), in how many of its runs the class was learned, and, when known, the class's
share of the training split's labelled pixels and the number of training images that show it (from the
block's ``classes:`` or the runs' ``hparams.yaml``; the per-run CSV does not hold them).
Pure Python: no torch; the report's readers are imported only to read the runs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, get_args

from pat_seg.experiments.decision_render import render_csv, render_markdown
from pat_seg.experiments.decision_results import (
    ClassResult,
    ComparisonResult,
    ContrastResult,
    DecisionReport,
    Direction,
    PredictionResult,
)
from pat_seg.experiments.decision_rule import DecisionRule, Predicted, load_decision, rule_error
from pat_seg.experiments.paired import PairedDifference, holm_adjust, paired_difference
from pat_seg.experiments.study_runs import StudyRuns, runs_from_csv, runs_from_logdir

DecisionFormat = Literal["markdown", "csv"]


def _run_value(values: Mapping[str, float], on: str, rule: DecisionRule) -> float | None:
    """A run's value on the metric or a group (the mean of its classes' IoU); None if one is missing."""
    if on == rule.metric:
        return values.get(on)
    ious = [values.get(f"iou/{name}") for name in rule.groups[on]]
    return None if any(v is None for v in ious) else math.fsum(v for v in ious if v is not None) / len(ious)


def _arm_values(study: StudyRuns, rule: DecisionRule, arm: str, seeds: Sequence[str], on: str) -> dict[Hashable, float]:
    """The arm's value on ``on`` per listed seed that has a run with that value."""
    values: dict[Hashable, float] = {}
    for seed in seeds:
        run = study.values.get(f"{seed}-{arm}")
        value = None if run is None else _run_value(run, on, rule)
        if value is not None:
            values[seed] = value
    return values


def _paired(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float], seeds: Sequence[str], level: float
) -> tuple[PairedDifference | None, tuple[str, ...]]:
    """``a - b`` paired over ``seeds`` (None when no seed has both), and the seeds one side lacks."""
    unpaired = tuple(seed for seed in seeds if seed not in a or seed not in b)
    if len(unpaired) == len(seeds):
        return None, unpaired
    return paired_difference(a, b, level), unpaired


def direction(predicted: Predicted, sign: int) -> Direction:
    """Whether an outcome (``sign``: +1 "A > B", -1 "A < B", 0 neither) bears a predicted sign out, contradicts
    it, or leaves it open (module docstring: a strict prediction needs its outcome, a non-strict one only
    the absence of the opposite)."""
    wanted = 1 if predicted.startswith(">") else -1
    if sign == -wanted:
        return "fails"
    if sign == wanted or predicted in (">= 0", "<= 0"):
        return "holds"
    return "open"


def prediction_status(states: Sequence[Direction], sizes: Sequence[int]) -> str:
    """HOLDS when every comparison bears its prediction out, FAILS when one contradicts it, else not decided."""
    if "fails" in states:
        return "FAILS"
    if all(state == "holds" for state in states):
        return "HOLDS"
    low, high = min(sizes), max(sizes)
    return f"not decided at n = {low if low == high else f'{low}-{high}'}"


def _provisional(n: int, total: int) -> str:
    """The label of a verdict of an incomplete family: Holm's adjustment ties each one to all the others."""
    return (
        f"provisional ({n} of {total} seeds)"
        if n < total
        else f"provisional ({n} of {total} seeds; the family lacks some)"
    )


def execute(rule: DecisionRule, study: StudyRuns) -> DecisionReport:
    """Run the decision rule on the study's runs (module docstring); a ``ValueError`` naming the key when
    a group or ``classes:`` names a class the runs do not log."""
    for name, members in rule.groups.items():
        for cls in members:
            if cls not in study.classes:
                raise rule_error(
                    rule.path,
                    f"groups.{name}",
                    f"names the class {cls!r}, which the runs of {study.source} do not log as {rule.split}/iou/<class> "
                    f"(they log: {', '.join(study.classes) or 'no per-class IoU'})",
                )
    for cls in rule.classes:
        if cls not in study.classes:
            raise rule_error(
                rule.path,
                f"classes.{cls}",
                f"is not a class the runs of {study.source} log ({', '.join(study.classes)})",
            )
    arms = rule.arms
    present = {
        arm: tuple(seed for seed in seeds if rule.metric in study.values.get(f"{seed}-{arm}", {}))
        for arm, seeds in arms.items()
    }
    used = {f"{seed}-{arm}" for arm, seeds in arms.items() for seed in seeds}
    ignored = tuple(sorted(set(study.values) - used))

    m, total = len(rule.comparisons), len(rule.seeds)
    pairs = []
    for comparison in rule.comparisons:
        a, b = (_arm_values(study, rule, arm, rule.seeds, comparison.on) for arm in (comparison.a, comparison.b))
        difference, unpaired = _paired(a, b, rule.seeds, 1.0 - rule.alpha)
        simultaneous = None if difference is None else paired_difference(a, b, 1.0 - rule.alpha / m)
        pairs.append((comparison, difference, simultaneous, unpaired))
    # Holm over the m comparisons the rule fixed: one without a p-value (n < 2) is never rejected.
    p_values = [1.0 if d is None or math.isnan(d.p_value) else d.p_value for _, d, _, _ in pairs]
    adjusted = holm_adjust(p_values)
    complete = all(d is not None and d.n == total for _, d, _, _ in pairs)
    results = []
    for (comparison, difference, simultaneous, unpaired), p_holm in zip(pairs, adjusted):
        n = 0 if difference is None else difference.n
        if difference is not None and p_holm < rule.alpha and difference.mean != 0:
            outcome = "A > B" if difference.mean > 0 else "A < B"
        else:
            outcome = f"not distinguishable at n = {n}"
        provisional = "" if complete else _provisional(n, total)
        seeds = () if difference is None else tuple(map(str, difference.seeds))
        results.append(
            ComparisonResult(comparison, n, seeds, unpaired, difference, simultaneous, p_holm, outcome, provisional)
        )

    prediction = None
    if rule.prediction:
        chosen = [r for r in results if r.comparison.name in rule.prediction]
        states = tuple((r.comparison.name, direction(r.comparison.predicted or ">= 0", r.sign)) for r in chosen)
        sizes = [r.n for r in chosen]
        status = prediction_status([state for _, state in states], sizes)
        provisional = "" if complete else _provisional(min(sizes), total)
        prediction = PredictionResult(status, provisional, states)

    contrasts = []
    for contrast in rule.contrasts:
        for arm in contrast.arms:
            for on in (rule.metric, *rule.groups):
                a, b = (_arm_values(study, rule, x, contrast.seeds, on) for x in (arm, contrast.against))
                difference, unpaired = _paired(a, b, contrast.seeds, 1.0 - rule.alpha)
                contrasts.append(
                    ContrastResult(contrast.kind, arm, contrast.against, on, len(contrast.seeds), unpaired, difference)
                )

    training = rule.classes or study.training
    classes = tuple(
        ClassResult(
            name,
            training.get(name),
            {arm: _class_values(study, arm, seeds, name) for arm, seeds in arms.items()},
        )
        for name in study.classes
    )
    return DecisionReport(
        rule, study.source, present, tuple(results), prediction, tuple(contrasts), classes, bool(training), ignored
    )


def _class_values(study: StudyRuns, arm: str, seeds: Sequence[str], name: str) -> list[float]:
    values = (study.values.get(f"{seed}-{arm}", {}).get(f"iou/{name}") for seed in seeds)
    return [value for value in values if value is not None]


def decision_report(
    sweep_file: str,
    fmt: DecisionFormat = "markdown",
    from_csv: str | None = None,
    logdir: str = "lightning_logs",
    split: str | None = None,
) -> str:
    """``pat-seg report --decision FILE``: the rule of ``sweep_file`` executed on the study's runs, read from
    ``from_csv`` if given, else from ``logdir``. ``split`` (``--split``) must be None or the rule's."""
    if fmt not in get_args(DecisionFormat):
        raise ValueError(f"--decision writes {' or '.join(get_args(DecisionFormat))}; got --format {fmt}")
    rule = load_decision(sweep_file)
    if split is not None and split != rule.split:
        raise ValueError(
            f"--split {split} disagrees with the split of {sweep_file}'s decision rule ({rule.split}); "
            "leave --split out"
        )
    study = runs_from_csv(rule, from_csv) if from_csv is not None else runs_from_logdir(rule, logdir)
    result = execute(rule, study)
    return render_markdown(result) if fmt == "markdown" else render_csv(result)
