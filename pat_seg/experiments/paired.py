r"""Paired differences across seeds, with Student-t confidence intervals.

Two methods run with the same seeds share, seed by seed, the initialisation, the data and its order,
so the difference of their metrics *within* a seed is free of the part of the seed-to-seed spread
they have in common. For per-seed values ``v_s`` (a variant) and ``b_s`` (a baseline) matched by
seed, ``d_s = v_s - b_s``, ``n`` pairs:

.. math::
    \bar d = \frac{1}{n} \sum_s d_s, \qquad
    s_d = \sqrt{\frac{1}{n - 1} \sum_s (d_s - \bar d)^2}, \qquad
    \bar d \pm t_{(1 + c)/2,\, n - 1} \, \frac{s_d}{\sqrt n}

the two-sided interval of confidence ``c`` (0.95 by default) of the paired t-test. With 3 seeds
``t_{0.975, 2} = 4.303``: an interval excludes 0 only when the mean difference is larger than about
2.5 standard deviations of the differences.

The two-sided p-value of the same test is ``2 P(T >= |\bar d| \sqrt n / s_d)``. A study that asks one
question of several data sets (regimes) corrects for their number with :func:`holm_adjust` (Holm's
step-down procedure on the p-values) and widens each interval to the Bonferroni level
``1 - (1 - c) / m``, whose ``m`` intervals hold together with confidence ``c``.

Student's t quantile is computed here (no scipy): the cumulative distribution for an integer number
of degrees of freedom ``nu`` has a closed form, a finite sum in ``theta = arctan(t / sqrt(nu))``
(Abramowitz and Stegun 26.7.3-26.7.4), which :func:`student_t_quantile` inverts by bisection.

Pure Python: no torch, Lightning or TensorBoard, so the report and the tests can use it anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PairedDifference", "holm_adjust", "paired_difference", "student_t_cdf", "student_t_quantile"]


def _central_probability(t: float, df: int) -> float:
    r"""``P(|T| <= t)`` for Student's ``T`` with ``df`` degrees of freedom, ``t >= 0``.

    With ``theta = arctan(t / sqrt(df))`` and ``c = cos(theta)``:

    - ``df`` odd: ``(2/pi) [theta + sin(theta) (c + (2/3) c^3 + (2*4)/(3*5) c^5 + ...)]``, the bracket's
      sum running up to the power ``df - 2`` (no sum for ``df = 1``: the Cauchy distribution);
    - ``df`` even: ``sin(theta) [1 + (1/2) c^2 + (1*3)/(2*4) c^4 + ...]`` up to the power ``df - 2``.

    Each term follows from the previous one by one multiplication, so the sum is exact up to rounding.
    """
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    sine, cosine = math.sin(theta), math.cos(theta)
    cos2 = cosine * cosine
    if df % 2 == 1:
        total, term = 0.0, cosine  # the c^1 term
        for power in range(1, df - 1, 2):  # powers 1, 3, ..., df - 2
            total += term
            term *= cos2 * (power + 1) / (power + 2)  # (2/3), (4/5), ...
        return (2.0 / math.pi) * (theta + sine * total)
    total, term = 0.0, 1.0  # the c^0 term
    for power in range(0, df - 1, 2):  # powers 0, 2, ..., df - 2
        total += term
        term *= cos2 * (power + 1) / (power + 2)  # (1/2), (3/4), ...
    return sine * total


def _check_df(df: int) -> None:
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an integer >= 1; got {df!r}")


def student_t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for Student's t distribution with ``df`` (an integer >= 1) degrees of freedom."""
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t must be a number; got nan")
    half = 0.5 * _central_probability(abs(t), df)
    return 0.5 + half if t >= 0 else 0.5 - half


def student_t_quantile(probability: float, df: int) -> float:
    """The ``probability``-quantile of Student's t with ``df`` degrees of freedom (e.g. 0.975 -> 4.302653 at df 2).

    Bisection on the closed-form distribution function, to the last few bits of a float64.
    """
    _check_df(df)
    if not (isinstance(probability, (int, float)) and 0.0 < probability < 1.0):
        raise ValueError(f"probability must lie strictly between 0 and 1; got {probability!r}")
    if probability == 0.5:
        return 0.0
    central = abs(2.0 * probability - 1.0)  # P(|T| <= q) for the upper quantile q
    if central >= 1.0:  # a probability within rounding of 0 or 1
        return math.copysign(math.inf, probability - 0.5)
    low, high = 0.0, 1.0
    while _central_probability(high, df) < central:  # bracket the root; df = 1 at 0.9999 needs ~6366
        high *= 2.0
    for _ in range(200):  # far more halvings than a float64 needs; stops early when the bracket is exhausted
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if _central_probability(middle, df) < central:
            low = middle
        else:
            high = middle
    quantile = 0.5 * (low + high)
    return quantile if probability > 0.5 else -quantile


@dataclass(frozen=True)
class PairedDifference:
    """The paired difference ``variant - baseline`` over the seeds both have.

    Attributes:
        n: number of matched pairs.
        mean: mean of the per-seed differences.
        std: their sample standard deviation (divisor ``n - 1``); NaN when ``n == 1``.
        low / high: the two-sided Student-t interval of ``confidence`` for the mean difference; NaN
            when ``n == 1`` (one pair says nothing about the spread).
        confidence: the interval's confidence, e.g. 0.95.
        seeds: the matched seeds, in the variant's order.
        unmatched: seeds that only one side has (left out of every number above).
        p_value: two-sided p-value of the paired t-test of "no difference"; NaN when ``n == 1``.
    """

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float
    seeds: tuple[Hashable, ...]
    unmatched: tuple[Hashable, ...] = ()
    p_value: float = math.nan

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or entirely below 0 (False when it is undefined)."""
        return self.low > 0 or self.high < 0

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"+1.23 [-0.45, +2.91]"``: the mean difference and its interval, each multiplied by ``scale``
        (e.g. 100 for IoU in %); ``"+1.23 [n=1]"`` when there is no interval."""
        mean = f"{self.mean * scale:+.{digits}f}"
        if self.n < 2:
            return f"{mean} [n={self.n}]"
        return f"{mean} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"


def paired_difference(
    variant: Mapping[Hashable, float],
    baseline: Mapping[Hashable, float],
    confidence: float = 0.95,
) -> PairedDifference:
    """``variant - baseline`` paired by seed: mean, sample std and Student-t interval (module docstring).

    ``variant`` and ``baseline`` map a seed (any key, e.g. ``"s0"`` or ``0``) to a metric value. Seeds
    that only one side has are left out and listed in ``unmatched``. No common seed, a non-finite
    value or a confidence outside (0, 1) is a ``ValueError`` naming it.
    """
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence!r}")
    for side, values in (("variant", variant), ("baseline", baseline)):
        for seed, value in values.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{side} value for seed {seed!r} must be a finite number; got {value!r}")
    seeds = tuple(seed for seed in variant if seed in baseline)
    unmatched = tuple(seed for seed in variant if seed not in baseline) + tuple(
        seed for seed in baseline if seed not in variant
    )
    if not seeds:
        raise ValueError(
            f"no seed is shared by the variant {sorted(map(str, variant))} and the baseline "
            f"{sorted(map(str, baseline))}; a paired difference needs matched seeds"
        )
    differences = [float(variant[seed]) - float(baseline[seed]) for seed in seeds]
    n = len(differences)
    mean = math.fsum(differences) / n
    if n < 2:
        nan = math.nan
        return PairedDifference(n, mean, nan, nan, nan, float(confidence), seeds, unmatched)
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1))
    half_width = student_t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    if std > 0:
        p_value = 2.0 * student_t_cdf(-abs(mean) * math.sqrt(n) / std, n - 1)
    else:  # every pair differs by the same amount: certain, unless that amount is 0
        p_value = 1.0 if mean == 0 else 0.0
    return PairedDifference(
        n, mean, std, mean - half_width, mean + half_width, float(confidence), seeds, unmatched, p_value
    )


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    With the ``m`` p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the ``i``-th adjusted value is
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``: a hypothesis is rejected at level ``a`` when its adjusted
    value is ``<= a``, which controls the chance of any false rejection among the ``m`` at ``a``.
    NaN p-values (no interval) stay NaN and do not count in ``m``.
    """
    for p in p_values:
        if not (isinstance(p, (int, float)) and (math.isnan(p) or 0.0 <= p <= 1.0)):
            raise ValueError(f"p-values must be numbers in [0, 1] (or NaN); got {p!r}")
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(order)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
