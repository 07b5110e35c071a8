r"""``pat-seg report --decision SWEEP.yaml``: a study's pre-registered decision rule, executed on its runs.

A sweep file may fix, before its first run, the rule that decides its question (docs/results.md, "A
study that outlives its machine"). The rule is the file's ``decision:`` block::

    decision:
      split: test                  # which <split>/* values decide (required)
      metric: miou                 # the overall metric (default miou)
      alpha: 0.05                  # family-wise error rate (default 0.05)
      correction: holm             # the only correction there is (default)
      seeds: [s0, s1, s2, s3, s4]  # the seeds the comparisons pair over (required)
      groups: {S: [Pole, SignSymbol]}          # a group's value: the mean IoU of its classes
      comparisons:                 # the family (required)
        C1: {a: pat, b: ce, on: miou, verdict: "PAT helps"}
        C3: {a: pat, b: cbfocal, on: S, predicted: ">= 0"}
      prediction: [C3]             # comparisons whose `predicted` signs make one prediction
      descriptive: {against: pat, arms: [focal], seeds: [s0, s1, s2]}   # no verdict
      exploratory: {against: pat, arms: [pat_no_eq4], seeds: [s0, s1, s2]}
      learned_iou: 0.1             # a class is learned by a run whose IoU exceeds this (default 0.1)
      classes: {Pole: {pixel_share: 0.0102, images: 366}}   # optional: training statistics

Runs. A run is the folder ``<sweep name>/<seed>-<arm>`` (the sweep's first axis is the seed, its version
the axis values joined by ``-``): its arm is the version after the first ``-``. Its value on the metric is
its last ``<split>/<metric>``; on a group, the mean of its classes' last ``<split>/iou/<class>``. The runs
come from the study's per-run CSV (``--from-csv``) or its run folders (``--logdir``).

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

Markdown prints IoU values, differences and pixel shares in points (x100) with 2 decimals; CSV
(``--format csv``) holds them in points at full precision: one line per arm, comparison, prediction,
contrast and class x arm.
Pure Python: no torch; the report's readers are imported only to read the runs.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from pat_seg.experiments.paired import PairedDifference, holm_adjust, paired_difference
from pat_seg.experiments.run_folder import HPARAMS
from pat_seg.experiments.sweep import load_sweep

Predicted = Literal[">= 0", "> 0", "<= 0", "< 0"]
Metric = Literal["miou", "pixel_accuracy", "miou_head", "miou_tail"]
Correction = Literal["holm"]
Split = Literal["val", "test"]
ContrastKind = Literal["descriptive", "exploratory"]
Direction = Literal["holds", "fails", "open"]
DecisionFormat = Literal["markdown", "csv"]

KEYS = (
    "split",
    "metric",
    "alpha",
    "correction",
    "seeds",
    "groups",
    "comparisons",
    "prediction",
    "descriptive",
    "exploratory",
    "learned_iou",
    "classes",
)
REQUIRED = ("split", "seeds", "comparisons")
COMPARISON_KEYS = ("a", "b", "on", "predicted", "verdict")
CONTRAST_KEYS = ("against", "arms", "seeds")
CLASS_KEYS = ("pixel_share", "images")
SCALE = 100.0  # IoU in points


# --- the rule --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """``a - b`` on ``on`` (the metric or a group); ``predicted`` its sign, ``verdict`` what ``A > B`` means."""

    name: str
    a: str
    b: str
    on: str
    predicted: Predicted | None = None
    verdict: str | None = None


@dataclass(frozen=True)
class Contrast:
    """Each of ``arms`` minus ``against``, paired over ``seeds``: reported, never decided."""

    kind: ContrastKind
    against: str
    arms: tuple[str, ...]
    seeds: tuple[str, ...]


@dataclass(frozen=True)
class TrainingShare:
    """A class's share of the training split's labelled pixels (a fraction) and the images that show it."""

    pixel_share: float
    images: int


@dataclass(frozen=True)
class DecisionRule:
    """A sweep file's ``decision:`` block, validated against the file's grid (module docstring)."""

    path: Path
    study: str  # the sweep's name: runs are <study>/<seed>-<arm>
    split: Split
    metric: Metric
    alpha: float
    correction: Correction
    seeds: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    comparisons: tuple[Comparison, ...]
    prediction: tuple[str, ...]
    contrasts: tuple[Contrast, ...]
    learned_iou: float
    classes: dict[str, TrainingShare]
    grid: dict[str, tuple[str, ...]]  # arm -> the seeds the sweep runs it with

    @property
    def arms(self) -> dict[str, tuple[str, ...]]:
        """Every arm the rule names, in the order it names them, with the seeds it needs of it."""
        needed: dict[str, list[str]] = {}
        for comparison in self.comparisons:
            for arm in (comparison.a, comparison.b):
                needed.setdefault(arm, []).extend(self.seeds)
        for contrast in self.contrasts:
            for arm in (contrast.against, *contrast.arms):
                needed.setdefault(arm, []).extend(contrast.seeds)
        return {arm: tuple(dict.fromkeys(seeds)) for arm, seeds in needed.items()}


def _fail(rule: Path, key: str, message: str) -> ValueError:
    return ValueError(f"{rule}: {'.'.join(['decision', *filter(None, key.split('.'))])} {message}")


def _names(value: Any, rule: Path, key: str, what: str) -> tuple[str, ...]:
    """A non-empty list of distinct names."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise _fail(rule, key, f"must be a non-empty list of {what}; got {value!r}")
    repeated = sorted({item for item in value if value.count(item) > 1})
    if repeated:
        raise _fail(rule, key, f"names {repeated[0]!r} more than once")
    return tuple(value)


def _mapping(value: Any, rule: Path, key: str, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(rule, key, f"must be a mapping with the keys {list(allowed)}; got {value!r}")
    unknown = sorted(map(str, set(value) - set(allowed)))
    if unknown:
        block = ".".join(["decision", *filter(None, key.split("."))])
        raise _fail(rule, f"{key}.{unknown[0]}", f"is not a key of {block}; expected {', '.join(allowed)}")
    return value


def _choice(value: Any, choices: tuple[str, ...], rule: Path, key: str) -> Any:
    if value not in choices:
        raise _fail(rule, key, f"must be one of {list(choices)}; got {value!r}")
    return value


def _fraction(value: Any, rule: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise _fail(rule, key, f"must be a number strictly between 0 and 1; got {value!r}")
    return float(value)


def _grid(path: Path) -> tuple[str, dict[str, tuple[str, ...]]]:
    """The sweep's name and its arms with their seeds, from the versions ``<seed>-<arm>`` of its grid."""
    sweep = load_sweep(path)
    arms: dict[str, list[str]] = {}
    for run in sweep.grid:
        seed, dash, arm = run.version.partition("-")
        if dash:
            arms.setdefault(arm, []).append(seed)
    return sweep.name, {arm: tuple(seeds) for arm, seeds in arms.items()}


def load_decision(path: str | Path) -> DecisionRule:
    """Read and check the ``decision:`` block of the sweep file ``path``; a ``ValueError`` naming the file
    and the key when the block is missing or wrong, or names an arm or seed the sweep's grid does not run."""
    path = Path(path)
    study, grid = _grid(path)  # the whole sweep file is valid first (its own errors name it)
    block = (yaml.safe_load(path.read_text()) or {}).get("decision")
    if block is None:
        raise ValueError(f"{path} has no 'decision:' block (the study's decision rule) to execute")
    spec = _mapping(block, path, "", KEYS) if isinstance(block, dict) else None
    if spec is None:
        raise ValueError(f"{path}: 'decision' must be a mapping; got {block!r}")
    for key in REQUIRED:
        if key not in spec:
            raise _fail(path, key, "is missing: a decision rule names its split, its seeds and its comparisons")
    split = _choice(spec["split"], get_args(Split), path, "split")
    metric = _choice(spec.get("metric", "miou"), get_args(Metric), path, "metric")
    correction = _choice(spec.get("correction", "holm"), get_args(Correction), path, "correction")
    alpha = _fraction(spec.get("alpha", 0.05), path, "alpha")
    learned_iou = _fraction(spec.get("learned_iou", 0.1), path, "learned_iou")
    seeds = _names(spec["seeds"], path, "seeds", "seed names (the first axis of the sweep)")
    groups_spec = spec.get("groups") or {}
    if not isinstance(groups_spec, dict):
        raise _fail(path, "groups", f"must map a group name to a list of class names; got {groups_spec!r}")
    groups: dict[str, tuple[str, ...]] = {}
    for name, classes in groups_spec.items():
        if name == metric:
            raise _fail(path, f"groups.{name}", f"is named as the metric {metric!r}; give the group another name")
        groups[str(name)] = _names(classes, path, f"groups.{name}", "class names")
    comparisons = _comparisons(spec["comparisons"], path, metric, groups)
    prediction = _prediction(spec.get("prediction") or [], path, comparisons)
    contrasts = tuple(
        _contrast(kind, spec[kind], path, seeds) for kind in get_args(ContrastKind) if spec.get(kind) is not None
    )
    rule = DecisionRule(
        path,
        study,
        split,
        metric,
        alpha,
        correction,
        seeds,
        groups,
        comparisons,
        prediction,
        contrasts,
        learned_iou,
        _classes(spec.get("classes") or {}, path),
        grid,
    )
    _check_arms(rule)
    return rule


def _comparisons(spec: Any, path: Path, metric: str, groups: Mapping[str, Any]) -> tuple[Comparison, ...]:
    if not isinstance(spec, dict) or not spec:
        raise _fail(path, "comparisons", f"must map a name to {{a, b, on[, predicted, verdict]}}; got {spec!r}")
    comparisons = []
    for name, entry in spec.items():
        key = f"comparisons.{name}"
        if isinstance(entry, dict):  # YAML 1.1 reads a bare `on:` key as the boolean true
            entry = {("on" if part is True else part): value for part, value in entry.items()}
        entry = _mapping(entry, path, key, COMPARISON_KEYS)
        for part in ("a", "b", "on"):
            if not isinstance(entry.get(part), str) or not entry[part]:
                raise _fail(
                    path,
                    f"{key}.{part}",
                    f"must name {'an arm' if part != 'on' else 'the metric or a group'}; got {entry.get(part)!r}",
                )
        if entry["a"] == entry["b"]:
            raise _fail(path, key, f"compares the arm {entry['a']!r} with itself")
        if entry["on"] != metric and entry["on"] not in groups:
            raise _fail(
                path,
                f"{key}.on",
                f"must be the metric {metric!r} or a group of decision.groups {list(groups)}; got {entry['on']!r}",
            )
        predicted = entry.get("predicted")
        if predicted is not None:
            _choice(predicted, get_args(Predicted), path, f"{key}.predicted")
        verdict = entry.get("verdict")
        if verdict is not None and (not isinstance(verdict, str) or not verdict.strip()):
            raise _fail(path, f"{key}.verdict", f"must be the sentence that 'A > B' establishes; got {verdict!r}")
        comparisons.append(Comparison(str(name), entry["a"], entry["b"], entry["on"], predicted, verdict))
    return tuple(comparisons)


def _prediction(spec: Any, path: Path, comparisons: Sequence[Comparison]) -> tuple[str, ...]:
    names = _names(spec, path, "prediction", "comparison names") if spec else ()
    by_name = {comparison.name: comparison for comparison in comparisons}
    for name in names:
        if name not in by_name:
            raise _fail(path, "prediction", f"names {name!r}, which is not one of decision.comparisons {list(by_name)}")
        if by_name[name].predicted is None:
            raise _fail(path, "prediction", f"names {name!r}, whose comparison has no 'predicted' sign")
    for comparison in comparisons:
        if comparison.predicted is not None and comparison.name not in names:
            raise _fail(
                path,
                f"comparisons.{comparison.name}.predicted",
                "is set but the comparison is not in decision.prediction (the prediction would never be judged)",
            )
    return names


def _contrast(kind: ContrastKind, spec: Any, path: Path, seeds: tuple[str, ...]) -> Contrast:
    spec = _mapping(spec, path, kind, CONTRAST_KEYS)
    against = spec.get("against")
    if not isinstance(against, str) or not against:
        raise _fail(path, f"{kind}.against", f"must name the arm the others are compared with; got {against!r}")
    arms = _names(spec.get("arms"), path, f"{kind}.arms", "arm names")
    if against in arms:
        raise _fail(path, f"{kind}.arms", f"holds its own 'against' arm {against!r}")
    own = _names(spec["seeds"], path, f"{kind}.seeds", "seed names") if "seeds" in spec else seeds
    return Contrast(kind, against, arms, own)


def _classes(spec: Any, path: Path) -> dict[str, TrainingShare]:
    if not isinstance(spec, dict):
        raise _fail(path, "classes", f"must map a class name to {{pixel_share, images}}; got {spec!r}")
    shares = {}
    for name, entry in spec.items():
        key = f"classes.{name}"
        entry = _mapping(entry, path, key, CLASS_KEYS)
        share, images = entry.get("pixel_share"), entry.get("images")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise _fail(path, f"{key}.pixel_share", f"must be a fraction in [0, 1]; got {share!r}")
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise _fail(path, f"{key}.images", f"must be a count of training images (an integer >= 0); got {images!r}")
        shares[str(name)] = TrainingShare(float(share), images)
    return shares


def _check_arms(rule: DecisionRule) -> None:
    """Every arm the rule names is an arm of the sweep's grid, run with every seed the rule needs of it."""
    where: dict[str, str] = {}
    for comparison in rule.comparisons:
        where.setdefault(comparison.a, f"comparisons.{comparison.name}.a")
        where.setdefault(comparison.b, f"comparisons.{comparison.name}.b")
    for contrast in rule.contrasts:
        where.setdefault(contrast.against, f"{contrast.kind}.against")
        for arm in contrast.arms:
            where.setdefault(arm, f"{contrast.kind}.arms")
    for arm, seeds in rule.arms.items():
        if arm not in rule.grid:
            raise _fail(
                rule.path,
                where[arm],
                f"names the arm {arm!r}, which no run of the sweep {rule.study!r} has "
                f"(its arms: {', '.join(rule.grid)})",
            )
        missing = [seed for seed in seeds if seed not in rule.grid[arm]]
        if missing:
            raise _fail(
                rule.path,
                where[arm],
                f"needs the arm {arm!r} with the seeds {missing}, which the sweep does not run it with "
                f"(its seeds: {', '.join(rule.grid[arm])})",
            )


# --- the runs --------------------------------------------------------------------------------------
@dataclass
class StudyRuns:
    """What the study's runs logged: per run version, each ``<split>/<tag>``'s last value (tag without the split)."""

    source: str
    values: dict[str, dict[str, float]]
    classes: list[str]  # the per-class IoU tags' class names, in logging order
    training: dict[str, TrainingShare] = field(default_factory=dict)  # from the runs' hparams.yaml
    others: list[str] = field(default_factory=list)  # run folders of the study that are not <seed>-<arm>


def _last_values(scalars: Mapping[str, Sequence[tuple[int, float]]], split: str) -> dict[str, float]:
    """The last logged value of each ``<split>/*`` tag; NaN (a class the split lacks) counts as no value."""
    prefix = f"{split}/"
    return {
        tag[len(prefix) :]: points[-1][1]
        for tag, points in scalars.items()
        if tag.startswith(prefix) and points and not math.isnan(points[-1][1])
    }


def _study_runs(rule: DecisionRule, source: str, runs: Iterable[tuple[Path, Mapping[str, Any]]]) -> StudyRuns:
    """The runs of ``rule.study`` among ``(folder, scalars)`` pairs (folders named ``.../<study>/<version>``)."""
    values: dict[str, dict[str, float]] = {}
    classes: dict[str, None] = {}
    prefix = f"{rule.split}/iou/"
    for folder, scalars in runs:
        if folder.parent.name != rule.study:
            continue
        values[folder.name] = _last_values(scalars, rule.split)
        classes.update(dict.fromkeys(tag[len(prefix) :] for tag in scalars if tag.startswith(prefix)))
    if not values:
        raise ValueError(f"{source} holds no run of the study {rule.study!r} (run folders {rule.study}/<seed>-<arm>)")
    return StudyRuns(source, values, list(classes))


def runs_from_csv(rule: DecisionRule, path: str) -> StudyRuns:
    """The study's runs from its per-run CSV (``pat-seg report --format csv --per-run``)."""
    from pat_seg.experiments.report import entries_from_csv  # the report's reader (it imports the losses)

    entries = entries_from_csv(path, rule.split)
    return _study_runs(rule, f"--from-csv {path!r}", ((e.run.path, e.run.scalars) for e in entries))


def runs_from_logdir(rule: DecisionRule, logdir: str) -> StudyRuns:
    """The study's runs from their folders under ``logdir``, with the training class statistics their
    ``hparams.yaml`` records when every run records the same ones."""
    from pat_seg.experiments.runs import find_runs  # TensorBoard's reader

    # A run that did not finish (interrupted, failed) is not a result: the study lacks it until it does.
    found = [run for run in find_runs(logdir, f"{rule.study}/*") if run.finished]
    study = _study_runs(rule, f"--logdir {logdir!r}", ((run.path, run.scalars) for run in found))
    recorded = {_training_shares(run.path / HPARAMS) for run in found}
    if len(recorded) == 1:  # runs that disagree (or some without) would make any one of them a guess
        study.training = dict(recorded.pop())
    return study


def _training_shares(hparams: Path) -> tuple[tuple[str, TrainingShare], ...]:
    """Each class's training pixel share and image count from a run's ``hparams.yaml`` (empty without them)."""
    recorded = yaml.safe_load(hparams.read_text()) if hparams.is_file() else None
    if not isinstance(recorded, dict):
        return ()
    names, pixels, images = (recorded.get(key) for key in ("class_names", "class_counts", "class_image_counts"))
    if not (isinstance(names, list) and isinstance(pixels, list) and isinstance(images, list)):
        return ()
    if not len(names) == len(pixels) == len(images) or sum(pixels) <= 0:
        return ()
    total = sum(pixels)
    return tuple(
        (str(name), TrainingShare(count / total, int(shown))) for name, count, shown in zip(names, pixels, images)
    )


# --- executing the rule ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ComparisonResult:
    """One comparison of the family, executed."""

    comparison: Comparison
    n: int
    seeds: tuple[str, ...]  # the paired seeds
    unpaired: tuple[str, ...]  # listed seeds that one of the arms lacks (or lacks a value for)
    difference: PairedDifference | None  # None without a single pair
    simultaneous: PairedDifference | None  # the same at the Bonferroni level
    p_holm: float
    outcome: str
    provisional: str  # "" or "provisional (k of K seeds)"

    @property
    def sign(self) -> int:
        """+1 for "A > B", -1 for "A < B", 0 otherwise."""
        return {"A > B": 1, "A < B": -1}.get(self.outcome, 0)

    @property
    def verdict(self) -> str:
        """The verdict text when "A > B" holds, its negation otherwise; empty without a verdict."""
        text = self.comparison.verdict
        if text is None:
            return ""
        return text if self.sign > 0 else f"not shown: {text}"


@dataclass(frozen=True)
class PredictionResult:
    status: str  # "HOLDS", "FAILS" or "not decided at n = <n>"
    provisional: str
    states: tuple[tuple[str, Direction], ...]  # per comparison of the prediction


@dataclass(frozen=True)
class ContrastResult:
    kind: ContrastKind
    arm: str
    against: str
    on: str
    listed: int  # how many seeds the contrast lists
    unpaired: tuple[str, ...]
    difference: PairedDifference | None


@dataclass(frozen=True)
class ClassResult:
    """One class: each arm's IoU per run (its listed seeds that logged one), training statistics if known."""

    name: str
    training: TrainingShare | None
    values: dict[str, list[float]]


@dataclass(frozen=True)
class DecisionReport:
    rule: DecisionRule
    source: str
    present: dict[str, tuple[str, ...]]  # arm -> its listed seeds that have a run
    comparisons: tuple[ComparisonResult, ...]
    prediction: PredictionResult | None
    contrasts: tuple[ContrastResult, ...]
    classes: tuple[ClassResult, ...]
    training_shown: bool
    ignored: tuple[str, ...]  # runs of the study the rule does not use

    @property
    def missing(self) -> dict[str, tuple[str, ...]]:
        """Arm -> listed seeds without a run, for the arms that lack any."""
        missing = {arm: tuple(s for s in seeds if s not in self.present[arm]) for arm, seeds in self.rule.arms.items()}
        return {arm: seeds for arm, seeds in missing.items() if seeds}


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
                raise _fail(
                    rule.path,
                    f"groups.{name}",
                    f"names the class {cls!r}, which the runs of {study.source} do not log as {rule.split}/iou/<class> "
                    f"(they log: {', '.join(study.classes) or 'no per-class IoU'})",
                )
    for cls in rule.classes:
        if cls not in study.classes:
            raise _fail(
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


# --- rendering -------------------------------------------------------------------------------------
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
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


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
        lacking = "; ".join(f"{arm} lacks {' '.join(seeds)}" for arm, seeds in missing.items())
        lines = [
            f"**INCOMPLETE**: {len(missing)} of {len(rule.arms)} arms lack seeds the rule lists "
            f"({lacking}). Every number "
            "below is computed from the seeds there are, with its n.",
            "",
        ]
    if any(r.provisional for r in result.comparisons):
        lines += ["The family's comparisons lack seeds: **every verdict below is provisional**.", ""]
    elif missing:
        lines += [f"The family's arms ({', '.join(sorted(family))}) have every seed: its verdicts are final.", ""]
    rows = [
        [arm, " ".join(seeds), " ".join(result.present[arm]) or "none", " ".join(missing.get(arm, ())) or "–"]
        for arm, seeds in rule.arms.items()
    ]
    lines += _table(["Arm", "Seeds listed", "Seeds with a run", "Missing"], rows, ())
    if result.ignored:
        lines += [f"Runs of the study the rule does not use: {', '.join(result.ignored)}.", ""]
    return lines


def render_markdown(result: DecisionReport) -> str:
    rule = result.rule
    m = len(rule.comparisons)
    quantity = f"the mean of its classes' last `{rule.split}/iou/<class>`" if rule.groups else ""
    out = [
        f"## Decision rule of the study {rule.study} ({rule.path})",
        "",
        f"Runs: {result.source}, folders {rule.study}/<seed>-<arm>. A run's {rule.metric}: its last "
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
        f"{', '.join(names)}: seeds {', '.join(seeds)} unpaired (an arm lacks the run or its value)."
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
            f"### {kind.capitalize()}: each arm minus {mine[0].against} ({_level(confidence)} paired t intervals, "
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
