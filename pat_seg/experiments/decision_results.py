"""An executed decision rule's results: what :func:`pat_seg.experiments.decision.execute` returns and
:mod:`pat_seg.experiments.decision_render` prints (the comparisons, the prediction, the contrasts and the
classes; the definitions of each are in :mod:`pat_seg.experiments.decision`'s docstring).

Data only, so that the renderer and the executor both import them and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pat_seg.experiments.decision_rule import Comparison, ContrastKind, DecisionRule, TrainingShare
from pat_seg.experiments.paired import PairedDifference

Direction = Literal["holds", "fails", "open"]


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
