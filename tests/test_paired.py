"""Paired differences across seeds (pat_seg/experiments/paired.py) against hand-computed answers and printed t tables."""

from __future__ import annotations

import math

import pytest

from pat_seg.experiments.paired import holm_adjust, paired_difference, student_t_cdf, student_t_quantile


@pytest.mark.parametrize(
    "probability,df,expected",
    [
        # Two-sided 95% quantiles as printed in t tables (six decimals).
        (0.975, 1, 12.706205),
        (0.975, 2, 4.302653),
        (0.975, 3, 3.182446),
        (0.975, 4, 2.776445),
        (0.975, 10, 2.228139),
        (0.975, 30, 2.042272),
        # Other levels and a large df, where t approaches the normal 1.959964.
        (0.95, 5, 2.015048),
        (0.995, 3, 5.840909),
        (0.975, 1000, 1.962339),
    ],
)
def test_quantile_matches_t_tables(probability, df, expected):
    assert student_t_quantile(probability, df) == pytest.approx(expected, abs=2e-6)
    assert student_t_quantile(1 - probability, df) == pytest.approx(-expected, abs=2e-6)


def test_quantile_closed_forms():
    # df = 1 is the Cauchy distribution: quantile tan(pi (p - 1/2)); df = 2: 2(p - 1/2) sqrt(2 / (4 p (1 - p))).
    assert student_t_quantile(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-12)
    p = 0.9
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-12)
    assert student_t_quantile(0.5, 7) == 0.0


def test_cdf_known_values():
    assert student_t_cdf(0.0, 3) == 0.5
    assert student_t_cdf(1.0, 1) == pytest.approx(0.75, rel=1e-15)  # 1/2 + atan(1)/pi
    assert student_t_cdf(1.0, 2) == pytest.approx(
        0.5 + 1 / (2 * math.sqrt(3)), rel=1e-15
    )  # 1/2 + t / (2 sqrt(t^2 + 2))
    assert student_t_cdf(-1.0, 2) == pytest.approx(0.5 - 1 / (2 * math.sqrt(3)), rel=1e-15)
    # df = 3: 1/2 + (theta + sin(theta) cos(theta)) / pi with theta = atan(t / sqrt 3); at t = sqrt 3, theta = pi/4.
    assert student_t_cdf(math.sqrt(3), 3) == pytest.approx(0.5 + (math.pi / 4 + 0.5) / math.pi, rel=1e-14)
    assert student_t_cdf(2.776445, 4) == pytest.approx(0.975, abs=1e-7)


def test_three_seeds_by_hand():
    variant = {"s0": 0.71, "s1": 0.70, "s2": 0.74}
    baseline = {"s2": 0.71, "s0": 0.70, "s1": 0.68}  # another key order: pairs are matched by seed
    result = paired_difference(variant, baseline)
    # d = 0.01, 0.02, 0.03: mean 0.02, sample std 0.01, half width 4.302653 * 0.01 / sqrt(3) = 0.0248414.
    assert result.n == 3 and result.seeds == ("s0", "s1", "s2") and result.unmatched == ()
    assert result.mean == pytest.approx(0.02, abs=1e-12)
    assert result.std == pytest.approx(0.01, abs=1e-12)
    assert result.low == pytest.approx(-0.0048414, abs=1e-7)
    assert result.high == pytest.approx(0.0448414, abs=1e-7)
    assert not result.excludes_zero
    assert result.format(scale=100) == "+2.00 [-0.48, +4.48]"


def test_five_seeds_interval_excludes_zero():
    baseline = {seed: 50.0 + seed for seed in range(5)}
    variant = {seed: baseline[seed] + d for seed, d in zip(range(5), (2.0, 4.0, 6.0, 8.0, 10.0))}
    result = paired_difference(variant, baseline)
    # mean 6, std sqrt(40 / 4) = sqrt(10), half width 2.776445 * sqrt(10) / sqrt(5) = 2.776445 * sqrt(2) = 3.926486.
    assert (result.n, result.mean) == (5, pytest.approx(6.0))
    assert result.std == pytest.approx(math.sqrt(10), rel=1e-12)
    assert result.low == pytest.approx(6 - 3.926486, abs=2e-6)
    assert result.high == pytest.approx(6 + 3.926486, abs=2e-6)
    assert result.excludes_zero
    negative = paired_difference(baseline, variant)  # swapped: the same interval mirrored
    assert negative.low == pytest.approx(-result.high) and negative.high == pytest.approx(-result.low)
    assert negative.excludes_zero


def test_other_confidence_level():
    # d = 1, 3 (n = 2): mean 2, std sqrt(2), 90% interval 2 +- t_{0.95,1} sqrt(2)/sqrt(2) = 2 +- 6.313752.
    result = paired_difference({"a": 1.0, "b": 3.0}, {"a": 0.0, "b": 0.0}, confidence=0.90)
    assert result.low == pytest.approx(2 - 6.313752, abs=2e-6)
    assert result.high == pytest.approx(2 + 6.313752, abs=2e-6)


def test_unmatched_seeds_are_left_out_and_listed():
    result = paired_difference({"s0": 1.0, "s1": 2.0, "s3": 9.0}, {"s0": 0.5, "s1": 1.0, "s2": 7.0})
    assert result.seeds == ("s0", "s1") and set(result.unmatched) == {"s3", "s2"}
    assert result.mean == pytest.approx((0.5 + 1.0) / 2)


def test_one_pair_has_no_interval():
    result = paired_difference({"s0": 0.6}, {"s0": 0.5})
    assert result.n == 1 and result.mean == pytest.approx(0.1)
    assert math.isnan(result.std) and math.isnan(result.low) and math.isnan(result.high)
    assert not result.excludes_zero
    assert result.format(scale=100) == "+10.00 [n=1]"


@pytest.mark.parametrize(
    "variant,baseline,kwargs,match",
    [
        ({"s0": 1.0}, {"s1": 1.0}, {}, "no seed is shared"),
        ({"s0": float("nan")}, {"s0": 1.0}, {}, "variant value for seed 's0'"),
        ({"s0": 1.0}, {"s0": None}, {}, "baseline value for seed 's0'"),
        ({"s0": 1.0}, {"s0": 1.0}, {"confidence": 95}, "got 95"),
    ],
)
def test_bad_input_raises_naming_it(variant, baseline, kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(variant, baseline, **kwargs)


@pytest.mark.parametrize("probability,df,match", [(1.0, 3, "got 1.0"), (0.9, 0, "got 0"), (0.9, 2.5, "got 2.5")])
def test_bad_quantile_arguments_raise(probability, df, match):
    with pytest.raises(ValueError, match=match):
        student_t_quantile(probability, df)


def test_p_value_by_hand_for_two_degrees_of_freedom():
    # Differences 1, 2, 4: mean 7/3, sd sqrt(7/3), t = mean / (sd / sqrt 3) = sqrt 7; with 2 df
    # P(|T| > t) = 1 - t / sqrt(2 + t^2) = 1 - sqrt(7) / 3.
    difference = paired_difference({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert difference.p_value == pytest.approx(1 - math.sqrt(7) / 3, rel=1e-12)
    same = paired_difference({0: 1.0, 1: 1.0}, {0: 0.0, 1: 0.0})  # no spread: certain
    assert same.p_value == 0.0
    assert math.isnan(paired_difference({0: 1.0}, {0: 0.0}).p_value)


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04), back in input order.
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], rel=1e-15)
    assert holm_adjust([0.5, 0.4]) == pytest.approx([0.8, 0.8], rel=1e-15)  # 2 * 0.4, then max(0.8, 0.5)
    assert holm_adjust([0.9, 0.01]) == pytest.approx([0.9, 0.02], rel=1e-15)
    adjusted = holm_adjust([math.nan, 0.02])
    assert math.isnan(adjusted[0]) and adjusted[1] == 0.02  # NaN does not count in m
    with pytest.raises(ValueError, match="got 1.5"):
        holm_adjust([1.5])
