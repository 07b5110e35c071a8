"""``pat-seg report --decision``: a study's decision rule executed on a per-run CSV whose answers are known.

The fixture study has 4 core arms on 5 seeds, one descriptive and one exploratory arm on 3, and 5 classes
(groups S = {Pole, Sign}, F = {Fence, Bike}). Each comparison's per-seed differences are chosen here (in
IoU points); the expected means, intervals and p-values are worked out in the test from those numbers
alone: t quantiles from a printed table (t_{0.975,4} = 2.7764, t_{0.975,2} = 4.3027), and the
Bonferroni quantile and the p-values by bisection on / integration of the t density (Simpson's rule),
not with the closed form the code uses.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest
import yaml
from test_report import make_run
from test_run_safety import pat_seg, short_error

from pat_seg.experiments.decision import direction, execute, prediction_status
from pat_seg.experiments.decision_render import render_csv, render_markdown
from pat_seg.experiments.decision_results import DecisionReport
from pat_seg.experiments.decision_rule import load_decision
from pat_seg.experiments.report_command import main
from pat_seg.experiments.study_runs import runs_from_csv, runs_from_logdir

REPO = Path(__file__).resolve().parents[1]
SEEDS = ["s0", "s1", "s2", "s3", "s4"]
CLASSES = ["Sky", "Pole", "Sign", "Fence", "Bike"]
T_975_4 = 2.7764  # Student's t, 0.975 quantile, 4 degrees of freedom (printed tables)
T_975_2 = 4.3027  # ... 2 degrees of freedom

# Per-seed differences A - B in IoU points. C7 = C3 + C5 and C8 = C4 + C6 follow from the arms' values.
DIFFERENCES = {
    "C1": [1.0, 2.0, 3.0, 4.0, 5.0],  # p = 0.013 alone, but not below 0.05 after Holm: not distinguishable
    "C2": [0.5, -0.4, 1.5, 0.0, 0.7],
    "C3": [2.0, 2.5, 1.5, 2.2, 1.8],  # A > B
    "C4": [-3.2, -2.5, -3.3, -2.8, -3.1],  # A < B
    "C5": [0.3, -0.2, 0.9, 0.1, 0.5],
    "C6": [3.0, 2.6, 3.4, 3.1, 2.9],
}
FOCAL_MINUS_PAT = [1.0, 2.0, 6.0]  # descriptive, 3 seeds

DECISION = {
    "split": "test",
    "metric": "miou",
    "alpha": 0.05,
    "correction": "holm",
    "seeds": SEEDS,
    "groups": {"S": ["Pole", "Sign"], "F": ["Fence", "Bike"]},
    "comparisons": {
        "C1": {"a": "pat", "b": "ce", "on": "miou", "verdict": "PAT helps"},
        "C2": {"a": "pat", "b": "cbfocal", "on": "miou", "verdict": "PAT beats CB-Focal"},
        "C3": {"a": "pat", "b": "cbfocal", "on": "S", "predicted": ">= 0"},
        "C4": {"a": "pat", "b": "cbfocal", "on": "F", "predicted": "< 0"},
        "C5": {"a": "patcb", "b": "pat", "on": "S", "predicted": ">= 0"},
        "C6": {"a": "patcb", "b": "pat", "on": "F", "predicted": ">= 0"},
        "C7": {"a": "patcb", "b": "cbfocal", "on": "S", "predicted": ">= 0"},
        "C8": {"a": "patcb", "b": "cbfocal", "on": "F", "predicted": ">= 0"},
    },
    "prediction": ["C3", "C4", "C5", "C6", "C7", "C8"],
    "descriptive": {"against": "pat", "arms": ["focal"], "seeds": SEEDS[:3]},
    "exploratory": {"against": "pat", "arms": ["noeq4"], "seeds": SEEDS[:3]},
    "learned_iou": 0.1,
}


# --- independent Student-t arithmetic --------------------------------------------------------------
def t_density(t: float, df: int) -> float:
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return norm * (1 + t * t / df) ** (-(df + 1) / 2)


def central(t: float, df: int, steps: int = 4000) -> float:
    """P(|T| <= t) by Simpson's rule on [0, t] (twice the integral: the density is even)."""
    h = t / steps
    total = t_density(0, df) + t_density(t, df)
    total += sum((4 if i % 2 else 2) * t_density(i * h, df) for i in range(1, steps))
    return 2 * total * h / 3


def two_sided_p(differences: list[float]) -> float:
    n = len(differences)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    return 1 - central(abs(mean) / (sd / math.sqrt(n)), n - 1)


def quantile(probability: float, df: int) -> float:
    """The upper ``probability`` quantile by bisection on the integrated density."""
    low, high = 0.0, 50.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if central(middle, df) < 2 * probability - 1 else (low, middle)
    return (low + high) / 2


def mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_the_independent_t_arithmetic_reproduces_the_printed_table() -> None:
    assert quantile(0.975, 4) == pytest.approx(T_975_4, abs=1e-4)
    assert quantile(0.975, 2) == pytest.approx(T_975_2, abs=1e-4)
    assert quantile(0.995, 4) == pytest.approx(4.6041, abs=1e-4)  # the table's 0.995 column, 4 df


# --- the fixture study -----------------------------------------------------------------------------
def arm_values(differences: dict[str, list[float]]) -> dict[str, dict[str, list[float]]]:
    """Per arm, the per-seed values (fractions) of miou and of the groups S and F that give ``differences``."""
    points = {name: [d / 100 for d in values] for name, values in differences.items()}
    base_miou, base_s, base_f = (
        [0.50, 0.55, 0.45, 0.60, 0.52],
        [0.30, 0.28, 0.35, 0.25, 0.31],
        [0.40, 0.42, 0.38, 0.45, 0.41],
    )

    def plus(values: list[float], more: list[float]) -> list[float]:
        return [v + m for v, m in zip(values, more)]

    pat_miou = plus(base_miou, points["C1"])
    pat_s, pat_f = plus(base_s, points["C3"]), plus(base_f, points["C4"])
    arms = {
        "ce": {"miou": base_miou, "S": [v - 0.05 for v in base_s], "F": [v - 0.35 for v in base_f]},
        "pat": {"miou": pat_miou, "S": pat_s, "F": pat_f},
        "cbfocal": {"miou": [v - d for v, d in zip(pat_miou, points["C2"])], "S": base_s, "F": base_f},
        "patcb": {"miou": [v + 0.01 for v in pat_miou], "S": plus(pat_s, points["C5"]), "F": plus(pat_f, points["C6"])},
    }
    focal = plus(pat_miou[:3], [d / 100 for d in FOCAL_MINUS_PAT])
    arms["focal"] = {"miou": focal, "S": pat_s[:3], "F": pat_f[:3]}
    arms["noeq4"] = {"miou": [v - 0.02 for v in pat_miou[:3]], "S": pat_s[:3], "F": pat_f[:3]}
    return arms


# Within a group, the classes sit at group value +- this (so only their mean is the group's value).
SPREAD = {"ce": 0.01, "pat": 0.05, "cbfocal": -0.03, "patcb": 0.02, "focal": 0.0, "noeq4": 0.04}
HEADER = ["run", "dataset", "model", "method", "is_pat", "seed", "data_seed", "split", "step", "miou"]
HEADER += [f"iou/{name}" for name in CLASSES]


def class_ious(arm: str, index: int, values: dict[str, list[float]]) -> list[float]:
    spread = SPREAD[arm]
    s, f = values["S"][index], values["F"][index]
    return [0.9 + 0.01 * index, s + spread, s - spread, f + spread, f - spread]


def write_study(
    tmp_path: Path,
    differences: dict[str, list[float]] | None = None,
    drop: tuple[str, ...] = (),
    decision: dict | None = None,
) -> tuple[Path, Path]:
    """The sweep file (name ``study``; core grid on 5 seeds, the others on 3) and its per-run CSV, without
    the runs in ``drop`` (``"s3-patcb"``). Each run also has a val line and, for one run, an earlier test
    line: only the last test value may count."""
    arms = arm_values(differences or DIFFERENCES)
    lines = [HEADER]
    for arm, values in arms.items():
        for index, seed in enumerate(SEEDS[: len(values["miou"])]):
            if f"{seed}-{arm}" in drop:
                continue
            fields = [f"study/{seed}-{arm}", "CamVid", "UNet", arm, "0", str(index), str(index)]
            measured = [values["miou"][index], *class_ious(arm, index, values)]
            lines.append([*fields, "val", "1350", *(["0.99"] * (1 + len(CLASSES)))])
            if (seed, arm) == ("s0", "pat"):
                lines.append([*fields, "test", "100", *(["0.01"] * (1 + len(CLASSES)))])
            lines.append([*fields, "test", "1350", *map(repr, measured)])
    lines.append(["other/s0-pat", "CamVid", "UNet", "pat", "0", "0", "0", "test", "1", *(["0.5"] * 6)])
    sweep = {
        "name": "study",
        "axes": [
            {
                "seed": {seed: {"args": {"seed_everything": i}} for i, seed in enumerate(SEEDS)},
                "loss": {arm: {} for arm in ("ce", "pat", "cbfocal", "patcb")},
            },
            {
                "seed": {seed: {"args": {"seed_everything": i}} for i, seed in enumerate(SEEDS[:3])},
                "loss": {"focal": {}, "noeq4": {}},
            },
        ],
        "decision": decision if decision is not None else DECISION,
    }
    sweep_file, csv_file = tmp_path / "study.yaml", tmp_path / "study.csv"
    sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    csv_file.write_text(buffer.getvalue())
    return sweep_file, csv_file


def run_rule(sweep_file: Path, csv_file: Path) -> DecisionReport:
    rule = load_decision(sweep_file)
    return execute(rule, runs_from_csv(rule, str(csv_file)))


def all_differences() -> dict[str, list[float]]:
    differences = dict(DIFFERENCES)
    differences["C7"] = [a + b for a, b in zip(DIFFERENCES["C3"], DIFFERENCES["C5"])]
    differences["C8"] = [a + b for a, b in zip(DIFFERENCES["C4"], DIFFERENCES["C6"])]
    return differences


# --- the comparisons -------------------------------------------------------------------------------
def test_each_comparison_has_the_hand_computed_mean_sd_interval_and_p(tmp_path: Path) -> None:
    result = run_rule(*write_study(tmp_path))
    by_name = {r.comparison.name: r for r in result.comparisons}
    bonferroni = quantile(1 - 0.05 / 16, 4)  # the simultaneous level 1 - 0.05/8, two-sided
    for name, differences in all_differences().items():
        r = by_name[name]
        mean, sd = mean_sd(differences)
        assert r.n == 5 and r.seeds == tuple(SEEDS) and not r.unpaired and not r.provisional
        assert r.difference is not None and r.simultaneous is not None
        assert r.difference.mean * 100 == pytest.approx(mean, abs=1e-9)
        assert r.difference.std * 100 == pytest.approx(sd, abs=1e-9)
        half = T_975_4 * sd / math.sqrt(5)
        assert r.difference.low * 100 == pytest.approx(mean - half, abs=1e-3)
        assert r.difference.high * 100 == pytest.approx(mean + half, abs=1e-3)
        wide = bonferroni * sd / math.sqrt(5)
        assert r.simultaneous.low * 100 == pytest.approx(mean - wide, abs=1e-6)
        assert r.simultaneous.high * 100 == pytest.approx(mean + wide, abs=1e-6)
        assert r.difference.p_value == pytest.approx(two_sided_p(differences), rel=1e-6, abs=1e-12)
    # C1 by hand: differences 1..5, mean 3, sd sqrt(2.5); 3 +- 2.7764 * sqrt(2.5 / 5) = [1.04, 4.96]
    assert "| C1 | pat - ce | miou | 5 | +3.00 | 1.58 | [+1.04, +4.96] |" in render_markdown(result)


def test_holm_adjusts_the_eight_p_values_step_down_by_hand(tmp_path: Path) -> None:
    result = run_rule(*write_study(tmp_path))
    p = {name: two_sided_p(d) for name, d in all_differences().items()}
    # The design's order, smallest first; Holm multiplies the i-th smallest by 8 - i + 1 and keeps the
    # running maximum (C2's own 2 p is below C5's 3 p: the maximum is what keeps the order).
    order = ["C7", "C6", "C4", "C3", "C1", "C5", "C2", "C8"]
    assert sorted(p, key=p.get) == order
    assert 2 * p["C2"] < 3 * p["C5"]
    expected = {
        "C7": 8 * p["C7"],
        "C6": max(8 * p["C7"], 7 * p["C6"]),
        "C4": max(8 * p["C7"], 7 * p["C6"], 6 * p["C4"]),
        "C3": max(7 * p["C6"], 6 * p["C4"], 5 * p["C3"]),
        "C1": max(5 * p["C3"], 4 * p["C1"]),
        "C5": max(4 * p["C1"], 3 * p["C5"]),
        "C2": 3 * p["C5"],
        "C8": max(3 * p["C5"], p["C8"]),
    }
    got = {r.comparison.name: r.p_holm for r in result.comparisons}
    for name in order:
        assert got[name] == pytest.approx(expected[name], rel=1e-6), name
    assert p["C1"] < 0.05 < got["C1"]  # significant alone, not in the family


def test_outcomes_verdicts_and_a_prediction_that_holds(tmp_path: Path) -> None:
    result = run_rule(*write_study(tmp_path))
    outcomes = {r.comparison.name: r.outcome for r in result.comparisons}
    assert outcomes == {
        "C1": "not distinguishable at n = 5",
        "C2": "not distinguishable at n = 5",
        "C3": "A > B",
        "C4": "A < B",
        "C5": "not distinguishable at n = 5",
        "C6": "A > B",
        "C7": "A > B",
        "C8": "not distinguishable at n = 5",
    }
    verdicts = {r.comparison.name: r.verdict for r in result.comparisons if r.comparison.verdict}
    assert verdicts == {"C1": "not shown: PAT helps", "C2": "not shown: PAT beats CB-Focal"}
    assert result.prediction is not None and result.prediction.status == "HOLDS"
    assert not result.prediction.provisional
    text = render_markdown(result)
    assert "**Complete**" in text and "### Prediction: **HOLDS**" in text and "tie" not in text
    # C5 (>= 0) holds without a shown outcome: the table says it is only not contradicted; C3 is shown.
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| C")}
    assert rows["C5"].rstrip(" |").endswith("holds (not contradicted)")
    assert rows["C3"].rstrip(" |").endswith("| holds")


def test_a_contradicted_prediction_fails_and_an_unresolved_one_is_not_decided(tmp_path: Path) -> None:
    worse = {**DIFFERENCES, "C5": [-2.0, -2.4, -1.5, -2.3, -1.8]}  # mixture below PAT on S: A < B
    (tmp_path / "fails").mkdir()
    result = run_rule(*write_study(tmp_path / "fails", worse))
    assert {r.comparison.name: r.outcome for r in result.comparisons}["C5"] == "A < B"
    assert result.prediction is not None and result.prediction.status == "FAILS"
    assert dict(result.prediction.states)["C5"] == "fails"

    open_f = {**DIFFERENCES, "C4": [-0.5, 0.3, -1.0, 0.2, -0.4]}  # PAT vs CB-Focal on F not resolved
    (tmp_path / "open").mkdir()
    result = run_rule(*write_study(tmp_path / "open", open_f))
    outcomes = {r.comparison.name: r.outcome for r in result.comparisons}
    assert outcomes["C4"] == "not distinguishable at n = 5"
    assert "A < B" not in outcomes.values()
    assert result.prediction is not None and result.prediction.status == "not decided at n = 5"


def test_prediction_logic_for_every_sign_and_outcome() -> None:
    # A strict prediction needs its outcome; a non-strict one only the absence of the opposite one.
    table = {
        (">= 0", 1): "holds", (">= 0", 0): "holds", (">= 0", -1): "fails",
        ("> 0", 1): "holds", ("> 0", 0): "open", ("> 0", -1): "fails",
        ("<= 0", 1): "fails", ("<= 0", 0): "holds", ("<= 0", -1): "holds",
        ("< 0", 1): "fails", ("< 0", 0): "open", ("< 0", -1): "holds",
    }  # fmt: skip
    for (predicted, sign), expected in table.items():
        assert direction(predicted, sign) == expected, (predicted, sign)
    assert prediction_status(["holds", "holds"], [5, 5]) == "HOLDS"
    assert prediction_status(["holds", "open", "fails"], [5, 5, 5]) == "FAILS"
    assert prediction_status(["holds", "open"], [3, 5]) == "not decided at n = 3-5"


def test_group_values_are_the_mean_of_their_classes_columns(tmp_path: Path) -> None:
    # The classes of a group sit at value +- a spread that differs by arm: the mean cancels it, one
    # class alone would not (C3 on Pole alone would be 2.0 + 100 * (0.05 - (-0.03)) = 10 points).
    result = run_rule(*write_study(tmp_path))
    c3 = next(r for r in result.comparisons if r.comparison.name == "C3")
    assert c3.difference is not None and c3.difference.mean * 100 == pytest.approx(2.0, abs=1e-9)
    pat = next(c for c in result.classes if c.name == "Pole").values["pat"]
    expected = [v + 0.05 for v in arm_values(DIFFERENCES)["pat"]["S"]]
    assert pat == pytest.approx(expected, abs=1e-12)


def test_descriptive_and_exploratory_contrasts_are_uncorrected_and_labelled(tmp_path: Path) -> None:
    result = run_rule(*write_study(tmp_path))
    focal = next(c for c in result.contrasts if c.arm == "focal" and c.on == "miou")
    assert focal.kind == "descriptive" and focal.against == "pat" and focal.difference is not None
    # 1, 2, 6: mean 3, sd sqrt(7); 3 +- 4.3027 * sqrt(7 / 3) = [-3.57, +9.57]
    half = T_975_2 * math.sqrt(7) / math.sqrt(3)
    assert focal.difference.n == 3
    assert focal.difference.low * 100 == pytest.approx(3 - half, abs=1e-3)
    assert focal.difference.high * 100 == pytest.approx(3 + half, abs=1e-3)
    text = render_markdown(result)
    assert "### Descriptive: each arm minus pat (95% paired t intervals, uncorrected; descriptive, no verdict)" in text
    assert "| focal - pat | miou | 3 | +3.00 | [-3.57, +9.57] |" in text
    assert "### Exploratory" in text and "| noeq4 - pat | miou | 3 | -2.00 |" in text


def test_per_class_iou_and_learned_counts(tmp_path: Path) -> None:
    result = run_rule(*write_study(tmp_path))
    # ce's F group is 0.05, 0.07, 0.03, 0.10, 0.06: Fence = F + 0.01 (one run above 0.1), Bike = F - 0.01 (none)
    fence = next(c for c in result.classes if c.name == "Fence").values["ce"]
    assert fence == pytest.approx([0.06, 0.08, 0.04, 0.11, 0.07])
    text = render_markdown(result)
    # Arms in the order the rule names them: pat, ce, cbfocal, patcb, focal, noeq4.
    assert "| Class | pat | ce | cbfocal | patcb | focal | noeq4 |" in text
    assert "| Fence | 5/5 | 1/5 | 5/5 | 5/5 | 3/3 | 3/3 |" in text
    assert "| Bike | 5/5 | 0/5 | 5/5 | 5/5 | 3/3 | 3/3 |" in text
    mean, sd = mean_sd([6.0, 8.0, 4.0, 11.0, 7.0])
    fence = next(line for line in text.splitlines() if line.startswith("| Fence | ") and "±" in line)
    assert fence.split(" | ")[2] == f"{mean:.2f} ± {sd:.2f}" == "7.20 ± 2.59"
    assert "Train pixels" not in text  # the CSV holds no training statistics and the block gives none


def test_an_incomplete_study_says_so_first_and_every_verdict_is_provisional(tmp_path: Path) -> None:
    result = run_rule(*write_study(tmp_path, drop=("s3-patcb", "s4-patcb", "s2-focal")))
    assert result.missing == {"patcb": ("s3", "s4"), "focal": ("s2",)}
    by_name = {r.comparison.name: r for r in result.comparisons}
    assert by_name["C5"].n == 3 and by_name["C5"].unpaired == ("s3", "s4")
    assert by_name["C1"].provisional == "provisional (5 of 5 seeds; the family lacks some)"
    assert by_name["C7"].provisional == "provisional (3 of 5 seeds)"
    assert result.prediction is not None and result.prediction.provisional == "provisional (3 of 5 seeds)"
    focal = next(c for c in result.contrasts if c.arm == "focal" and c.on == "miou")
    assert focal.difference is not None and focal.difference.n == 2 and focal.unpaired == ("s2",)
    text = render_markdown(result)
    first = text.split("### Comparisons")[0]
    assert "**INCOMPLETE**: 2 of 6 arms lack seeds the rule lists (patcb lacks s3 s4; focal lacks s2)" in first
    assert "**every verdict below is provisional**" in first
    assert "| patcb | s0 s1 s2 s3 s4 | s0 s1 s2 | s3 s4 |" in first
    assert "C5, C6, C7, C8: seeds s3, s4 unpaired" in text
    assert "not shown: PAT helps, provisional (5 of 5 seeds; the family lacks some)" in text
    assert "| focal - pat | miou | 2 of 3 |" in text


def test_missing_exploratory_seeds_leave_the_familys_verdicts_final(tmp_path: Path) -> None:
    result = run_rule(*write_study(tmp_path, drop=("s2-noeq4",)))
    assert result.missing == {"noeq4": ("s2",)}
    assert not any(r.provisional for r in result.comparisons)
    text = render_markdown(result)
    assert "**INCOMPLETE**" in text and "its verdicts are final" in text


def test_runs_outside_the_rule_are_named_not_used(tmp_path: Path) -> None:
    sweep_file, csv_file = write_study(tmp_path)
    with open(csv_file, "a") as handle:  # a sixth seed of pat: not one the rule lists
        handle.write("study/s5-pat,CamVid,UNet,pat,0,5,5,test,1350,0.1,0.1,0.1,0.1,0.1,0.1\n")
    result = run_rule(sweep_file, csv_file)
    assert result.ignored == ("s5-pat",)  # and other/s0-pat is another study's
    assert next(r for r in result.comparisons if r.comparison.name == "C1").n == 5


def test_csv_output_holds_the_numbers_in_points(tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(run_rule(*write_study(tmp_path))))))
    c1 = next(row for row in rows if row["section"] == "comparison" and row["name"] == "C1")
    assert float(c1["mean"]) == pytest.approx(3.0) and float(c1["sd"]) == pytest.approx(math.sqrt(2.5))
    assert c1["outcome"] == "not distinguishable at n = 5" and c1["verdict"] == "not shown: PAT helps"
    prediction = next(row for row in rows if row["section"] == "prediction")
    assert prediction["outcome"] == "HOLDS" and prediction["name"] == "C3 C4 C5 C6 C7 C8"
    fence = next(row for row in rows if row["section"] == "class" and row["name"] == "Fence" and row["a"] == "ce")
    assert float(fence["mean"]) == pytest.approx(7.2) and fence["learned"] == "1" and fence["n"] == "5"


# --- bad rules -------------------------------------------------------------------------------------
BAD_RULES = [
    ({"alphas": 0.05}, "decision.alphas"),
    ({"comparisons": {**DECISION["comparisons"], "C1": {"a": "pat", "b": "ce", "on": "Q"}}}, "decision.comparisons.C1.on"),
    ({"comparisons": {**DECISION["comparisons"], "C3": {"a": "pat", "b": "cbfocal", "on": "S", "predicted": ">0"}}},
     "decision.comparisons.C3.predicted"),
    ({"comparisons": {**DECISION["comparisons"], "C1": {"a": "pat", "b": "ce", "on": "miou", "sign": 1}}},
     "decision.comparisons.C1.sign"),
    ({"comparisons": {**DECISION["comparisons"], "C1": {"a": "pat", "b": "lovasz", "on": "miou"}}}, "decision.comparisons.C1.b"),
    ({"descriptive": {"against": "pat", "arms": ["focal"], "seeds": SEEDS}}, "decision.descriptive.arms"),
    ({"prediction": ["C3", "C9"]}, "decision.prediction"),
    ({"split": None}, "decision.split"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "key"), BAD_RULES)
def test_a_bad_rule_is_refused_naming_the_file_and_key(tmp_path: Path, change: dict, key: str) -> None:
    sweep_file, _ = write_study(tmp_path, decision={**DECISION, **change})
    with pytest.raises(ValueError, match=re.escape(f"study.yaml: {key} ")):
        load_decision(sweep_file)


def test_a_group_class_the_runs_do_not_log_is_refused(tmp_path: Path) -> None:
    sweep_file, csv_file = write_study(
        tmp_path, decision={**DECISION, "groups": {"S": ["Pole", "Sign"], "F": ["Fence", "Bicyclist"]}}
    )
    with pytest.raises(ValueError, match=r"study\.yaml: decision\.groups\.F names the class 'Bicyclist'"):
        run_rule(sweep_file, csv_file)


def test_the_camvid_studys_rule_parses() -> None:
    rule = load_decision(REPO / "configs/sweeps/camvid_table3.yaml")
    assert rule.study == "camvid_table3" and rule.split == "test" and rule.alpha == 0.05
    assert [c.name for c in rule.comparisons] == [f"C{i}" for i in range(1, 9)]
    assert rule.groups == {"S": ("Pole", "SignSymbol", "Pedestrian"), "F": ("Fence", "Bicyclist")}
    c4 = rule.comparisons[3]
    assert (c4.a, c4.b, c4.on, c4.predicted) == (
        "pat",
        "cbfocal",
        "F",
        "< 0",
    )  # `on:` read as the key, not YAML 1.1's true
    assert rule.prediction == ("C3", "C4", "C5", "C6", "C7", "C8")
    assert len(rule.arms) == 12 and rule.arms["focal"] == ("s0", "s1", "s2")


# --- run folders, and the console script --------------------------------------------------------------
def test_logdir_runs_and_their_training_statistics(tmp_path: Path) -> None:
    """Run folders (event files and hparams.yaml) instead of the CSV: the class shares come from the runs."""
    counts, images = [600, 300, 100], [10, 9, 2]
    decision = {
        "split": "test",
        "seeds": ["s0", "s1", "s2"],
        "comparisons": {"C1": {"a": "pat", "b": "ce", "on": "miou"}},
    }
    sweep = {"name": "sweep", "axes": {"seed": {s: {} for s in ("s0", "s1", "s2")}, "loss": {"ce": {}, "pat": {}}}}
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({**sweep, "decision": decision}, sort_keys=False))
    logs = tmp_path / "logs"
    for i, seed in enumerate(("s0", "s1", "s2")):
        for arm, miou in (("ce", 0.40 + 0.01 * i), ("pat", 0.42 + 0.02 * i)):
            iou = (0.04, 0.09, 0.17)[i]
            scalars = {"test/miou": [(1, miou)], **{f"test/iou/{c}": [(1, iou)] for c in ("a", "b", "c")}}
            run = make_run(logs, f"{seed}-{arm}", scalars)
            hparams = {"class_names": ["a", "b", "c"], "class_counts": counts, "class_image_counts": images}
            hparams["summary"] = {"step": 1, "metrics": {"hp/miou": 0.5}}  # the fit finished (run_status)
            (run / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    rule = load_decision(sweep_file)
    result = execute(rule, runs_from_logdir(rule, str(logs)))
    c1 = result.comparisons[0]
    assert c1.n == 3 and c1.difference is not None
    assert c1.difference.mean * 100 == pytest.approx((2 + 3 + 4) / 3)  # 0.02 + 0.01 i
    text = render_markdown(result)
    assert "| Class | Train pixels % | Train images | pat | ce |" in text
    # 600 of 1000 pixels; IoU 4, 9, 17: mean 10, sd sqrt((36 + 1 + 49) / 2) = 6.56
    assert "| a | 60.00 | 10 | 10.00 ± 6.56 | 10.00 ± 6.56 |" in text
    assert "| c | 10.00 | 2 |" in text
    assert "| a | 1/3 | 1/3 |" in text  # only 0.17 > 0.1


def test_the_console_script_executes_the_rule_and_refuses_a_split_it_does_not_use(tmp_path: Path) -> None:
    sweep_file, csv_file = write_study(tmp_path)
    result = pat_seg("report", "--from-csv", str(csv_file), "--decision", str(sweep_file))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "### Prediction: **HOLDS**" in result.stdout
    assert "| C4 | pat - cbfocal | F | 5 | -2.98 |" in result.stdout
    refused = pat_seg("report", "--from-csv", str(csv_file), "--decision", str(sweep_file), "--split", "val")
    short_error(refused, "--split val", "test")
    assert refused.returncode == 2 and refused.stdout == ""


def test_training_statistics_from_the_blocks_classes_entry(tmp_path: Path) -> None:
    classes = {"Pole": {"pixel_share": 0.0102, "images": 366}, "Bike": {"pixel_share": 0.003, "images": 201}}
    text = render_markdown(run_rule(*write_study(tmp_path, decision={**DECISION, "classes": classes})))
    assert "| Class | Train pixels % | Train images | pat |" in text
    assert "| Pole | 1.02 | 366 | " in text and "| Bike | 0.30 | 201 | " in text
    assert "| Sky | – | – | " in text  # not given: not invented
    (tmp_path / "bad").mkdir()
    bad = write_study(
        tmp_path / "bad", decision={**DECISION, "classes": {"Bicyclist": {"pixel_share": 0.003, "images": 1}}}
    )
    with pytest.raises(ValueError, match=r"study\.yaml: decision\.classes\.Bicyclist is not a class the runs"):
        run_rule(*bad)


def test_report_options_that_do_not_apply_to_a_decision_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep_file, csv_file = write_study(tmp_path)
    common = ["--from-csv", str(csv_file), "--decision", str(sweep_file)]
    for extra, named in ((["--paired-against", "PAT"], "--paired-against"), (["--format", "latex"], "latex")):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, *extra])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert named in error and len(error.strip().splitlines()) == 1
    output = tmp_path / "decision.csv"
    main([*common, "--format", "csv", "--split", "test", "--output", str(output)])  # the rule's own split is fine
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert [row["name"] for row in rows if row["section"] == "comparison"] == [f"C{i}" for i in range(1, 9)]
