r"""A study's pre-registered decision rule: the ``decision:`` block of its sweep file, read and checked.

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

:func:`load_decision` checks the block against the sweep's grid (its versions ``<seed>-<arm>``): every
arm the rule names is run with every seed the rule needs of it. Executing the rule is
:mod:`pat_seg.experiments.decision`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from pat_seg.experiments.sweep import load_sweep

Predicted = Literal[">= 0", "> 0", "<= 0", "< 0"]
Metric = Literal["miou", "pixel_accuracy", "miou_head", "miou_tail"]
Correction = Literal["holm"]
Split = Literal["val", "test"]
ContrastKind = Literal["descriptive", "exploratory"]

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


def rule_error(rule: Path, key: str, message: str) -> ValueError:
    """The error for ``decision.<key>`` of the sweep file ``rule``: the file, the key, then ``message``."""
    return ValueError(f"{rule}: {'.'.join(['decision', *filter(None, key.split('.'))])} {message}")


def _names(value: Any, rule: Path, key: str, what: str) -> tuple[str, ...]:
    """A non-empty list of distinct names."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise rule_error(rule, key, f"must be a non-empty list of {what}; got {value!r}")
    repeated = sorted({item for item in value if value.count(item) > 1})
    if repeated:
        raise rule_error(rule, key, f"names {repeated[0]!r} more than once")
    return tuple(value)


def _mapping(value: Any, rule: Path, key: str, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise rule_error(rule, key, f"must be a mapping with the keys {list(allowed)}; got {value!r}")
    unknown = sorted(map(str, set(value) - set(allowed)))
    if unknown:
        block = ".".join(["decision", *filter(None, key.split("."))])
        raise rule_error(rule, f"{key}.{unknown[0]}", f"is not a key of {block}; expected {', '.join(allowed)}")
    return value


def _choice(value: Any, choices: tuple[str, ...], rule: Path, key: str) -> Any:
    if value not in choices:
        raise rule_error(rule, key, f"must be one of {list(choices)}; got {value!r}")
    return value


def _fraction(value: Any, rule: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise rule_error(rule, key, f"must be a number strictly between 0 and 1; got {value!r}")
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
            raise rule_error(path, key, "is missing: a decision rule names its split, its seeds and its comparisons")
    split = _choice(spec["split"], get_args(Split), path, "split")
    metric = _choice(spec.get("metric", "miou"), get_args(Metric), path, "metric")
    correction = _choice(spec.get("correction", "holm"), get_args(Correction), path, "correction")
    alpha = _fraction(spec.get("alpha", 0.05), path, "alpha")
    learned_iou = _fraction(spec.get("learned_iou", 0.1), path, "learned_iou")
    seeds = _names(spec["seeds"], path, "seeds", "seed names (the first axis of the sweep)")
    groups_spec = spec.get("groups") or {}
    if not isinstance(groups_spec, dict):
        raise rule_error(path, "groups", f"must map a group name to a list of class names; got {groups_spec!r}")
    groups: dict[str, tuple[str, ...]] = {}
    for name, classes in groups_spec.items():
        if name == metric:
            raise rule_error(path, f"groups.{name}", f"is named as the metric {metric!r}; give the group another name")
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
        raise rule_error(path, "comparisons", f"must map a name to {{a, b, on[, predicted, verdict]}}; got {spec!r}")
    comparisons = []
    for name, entry in spec.items():
        key = f"comparisons.{name}"
        if isinstance(entry, dict):  # YAML 1.1 reads a bare `on:` key as the boolean true
            entry = {("on" if part is True else part): value for part, value in entry.items()}
        entry = _mapping(entry, path, key, COMPARISON_KEYS)
        for part in ("a", "b", "on"):
            if not isinstance(entry.get(part), str) or not entry[part]:
                raise rule_error(
                    path,
                    f"{key}.{part}",
                    f"must name {'an arm' if part != 'on' else 'the metric or a group'}; got {entry.get(part)!r}",
                )
        if entry["a"] == entry["b"]:
            raise rule_error(path, key, f"compares the arm {entry['a']!r} with itself")
        if entry["on"] != metric and entry["on"] not in groups:
            raise rule_error(
                path,
                f"{key}.on",
                f"must be the metric {metric!r} or a group of decision.groups {list(groups)}; got {entry['on']!r}",
            )
        predicted = entry.get("predicted")
        if predicted is not None:
            _choice(predicted, get_args(Predicted), path, f"{key}.predicted")
        verdict = entry.get("verdict")
        if verdict is not None and (not isinstance(verdict, str) or not verdict.strip()):
            raise rule_error(path, f"{key}.verdict", f"must be the sentence that 'A > B' establishes; got {verdict!r}")
        comparisons.append(Comparison(str(name), entry["a"], entry["b"], entry["on"], predicted, verdict))
    return tuple(comparisons)


def _prediction(spec: Any, path: Path, comparisons: Sequence[Comparison]) -> tuple[str, ...]:
    names = _names(spec, path, "prediction", "comparison names") if spec else ()
    by_name = {comparison.name: comparison for comparison in comparisons}
    for name in names:
        if name not in by_name:
            raise rule_error(
                path, "prediction", f"names {name!r}, which is not one of decision.comparisons {list(by_name)}"
            )
        if by_name[name].predicted is None:
            raise rule_error(path, "prediction", f"names {name!r}, whose comparison has no 'predicted' sign")
    for comparison in comparisons:
        if comparison.predicted is not None and comparison.name not in names:
            raise rule_error(
                path,
                f"comparisons.{comparison.name}.predicted",
                "is set but the comparison is not in decision.prediction (the prediction would never be judged)",
            )
    return names


def _contrast(kind: ContrastKind, spec: Any, path: Path, seeds: tuple[str, ...]) -> Contrast:
    spec = _mapping(spec, path, kind, CONTRAST_KEYS)
    against = spec.get("against")
    if not isinstance(against, str) or not against:
        raise rule_error(path, f"{kind}.against", f"must name the arm the others are compared with; got {against!r}")
    arms = _names(spec.get("arms"), path, f"{kind}.arms", "arm names")
    if against in arms:
        raise rule_error(path, f"{kind}.arms", f"holds its own 'against' arm {against!r}")
    own = _names(spec["seeds"], path, f"{kind}.seeds", "seed names") if "seeds" in spec else seeds
    return Contrast(kind, against, arms, own)


def _classes(spec: Any, path: Path) -> dict[str, TrainingShare]:
    if not isinstance(spec, dict):
        raise rule_error(path, "classes", f"must map a class name to {{pixel_share, images}}; got {spec!r}")
    shares = {}
    for name, entry in spec.items():
        key = f"classes.{name}"
        entry = _mapping(entry, path, key, CLASS_KEYS)
        share, images = entry.get("pixel_share"), entry.get("images")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise rule_error(path, f"{key}.pixel_share", f"must be a fraction in [0, 1]; got {share!r}")
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise rule_error(
                path, f"{key}.images", f"must be a count of training images (an integer >= 0); got {images!r}"
            )
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
            raise rule_error(
                rule.path,
                where[arm],
                f"names the arm {arm!r}, which no run of the sweep {rule.study!r} has "
                f"(its arms: {', '.join(rule.grid)})",
            )
        missing = [seed for seed in seeds if seed not in rule.grid[arm]]
        if missing:
            raise rule_error(
                rule.path,
                where[arm],
                f"needs the arm {arm!r} with the seeds {missing}, which the sweep does not run it with "
                f"(its seeds: {', '.join(rule.grid[arm])})",
            )
