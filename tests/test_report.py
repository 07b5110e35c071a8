"""pat-seg report: tables from hand-written runs whose right answer is known, and from a real tiny sweep."""

from __future__ import annotations

import csv
import io
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_run_safety import pat_seg, short_error
from torch.utils.tensorboard import SummaryWriter

from pat_seg.experiments.report import report
from pat_seg.experiments.report_command import main

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["sky", "road", "light"]


def make_run(
    root: Path,
    version: str,
    scalars: dict[str, list[tuple[int, float]]],
    loss: str = "CrossEntropyLoss",
    loss_args: dict | None = None,
    model: str = "UNet",
    seed: int = 0,
    data: str = "SyntheticLongTailDataModule",
    walltimes: list[float] | None = None,
    extra: dict | None = None,
    subfolder: str | None = None,
    data_args: dict | None = None,
    data_seed: int | None = None,
) -> Path:
    """A run directory as `pat-seg fit` leaves it: config.yaml and an event file with these scalars.

    ``extra`` adds top-level config sections (e.g. ``{"trainer": {...}}``); ``subfolder`` writes the
    scalars into ``<run>/<subfolder>/`` as `pat-seg test` does.
    """
    run_dir = root / "sweep" / version
    run_dir.mkdir(parents=True)
    per_class = {f"val/iou/{name}": [(1, 0.5)] for name in CLASSES}
    config = {
        "seed_everything": seed,
        "model": {
            "loss": {"class_path": f"pat_seg.losses.{loss}", "init_args": {"ignore_index": 255, **(loss_args or {})}},
            "model": {"class_path": f"pat_seg.models.{model}", "init_args": {"base_channels": 16}},
        },
        "data": {
            "class_path": f"pat_seg.data.{data}",
            "init_args": {"batch_size": 16, **({} if data_seed is None else {"seed": data_seed}), **(data_args or {})},
        },
        **(extra or {}),
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if subfolder is not None:
        SummaryWriter(str(run_dir)).close()
        run_dir = run_dir / subfolder
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    writer = SummaryWriter(str(run_dir))
    for tag, points in scalars.items():
        for i, (step, value) in enumerate(points):
            writer.add_scalar(tag, value, step, walltime=walltimes[i] if walltimes else 1000.0 + i)
    for tag, points in per_class.items():  # per-class tags tell the report the data set's classes
        if tag not in scalars:
            for step, value in points:
                writer.add_scalar(tag, value, step)
    writer.close()
    return run_dir


def val(miou: float, acc: float = 0.9, dice_error: float = 0.3) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a run whose last epoch (step 9) logged these values; an earlier epoch logged others."""
    return {
        "val/miou": [(4, 0.99), (9, miou)],
        "val/pixel_accuracy": [(4, 0.01), (9, acc)],
        "val/dice_error": [(4, 0.0), (9, dice_error)],
    }


def cell(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """The expected `mean ± std` text, computed here in float64 from the numbers written above."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f} (n={len(values)})"


def table(text: str, title: str) -> list[list[str]]:
    """The rows (as cell lists) of the markdown table under the heading that contains ``title``."""
    section = text.split(title, 1)[1].split("###", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_a_table_without_one_value_is_left_out(tmp_path: Path) -> None:
    make_run(tmp_path, "unet", val(0.40, 0.80, 0.30))
    nan = float("nan")
    make_run(tmp_path, "dlv3p", val(nan, nan, nan), model="DeepLabV3Plus")  # diverged: every metric NaN
    text = report(str(tmp_path))
    assert table(text, "Table 3: method x data set (UNet)")[0][1:4] == ["40.00 (n=1)", "80.00 (n=1)", "0.300 (n=1)"]
    assert "(DLV3+)" not in text.split("Table 4")[0]  # no Table 3 of DeepLabV3+, which has nothing to show


def test_table3_mean_and_sample_std_over_seeds_of_the_last_epoch(tmp_path: Path) -> None:
    make_run(tmp_path, "ce-s0", val(0.40, 0.80, 0.30), seed=0)
    make_run(tmp_path, "ce-s1", val(0.44, 0.84, 0.20), seed=1)
    make_run(tmp_path, "pat-s0", val(0.50, 0.82, 0.25), "PATLoss", {"temperature": 20.0}, seed=0)
    make_run(tmp_path, "pat-s1", val(0.56, 0.81, 0.35), "PATLoss", {"temperature": 20.0}, seed=1)
    rows = table(report(str(tmp_path)), "Table 3")
    assert rows == [
        ["CE", cell([0.40, 0.44]), f"**{cell([0.80, 0.84])}**", f"**{cell([0.30, 0.20], 1, 3)}**"],
        ["PAT (T=20)", f"**{cell([0.50, 0.56])}**", cell([0.82, 0.81]), cell([0.25, 0.35], 1, 3)],
    ]  # CE's Dice error mean 0.25 < PAT's 0.30: lower is better for Dice error


def test_runs_a_sweep_set_aside_in_a_hidden_folder_are_never_counted(tmp_path: Path) -> None:
    make_run(tmp_path, "ce-s0", val(0.40), seed=0)
    make_run(tmp_path, "ce-s1", val(0.44), seed=1)
    # An unfinished run moved aside by `pat-seg sweep` (<save_dir>/.sweep-incomplete/<name>/<version>-<time>/).
    make_run(tmp_path / ".sweep-incomplete" / "grid", "ce-s2-20261207", val(0.10), seed=2)
    rows = table(report(str(tmp_path)), "Table 3")
    assert rows[0][:2] == ["CE", cell([0.40, 0.44])]


def test_csv_holds_raw_means_and_std(tmp_path: Path) -> None:
    make_run(tmp_path, "ce-s0", val(0.40), seed=0)
    make_run(tmp_path, "ce-s1", val(0.44), seed=1)
    make_run(tmp_path, "ce-s2", val(0.45), seed=2)
    rows = list(csv.DictReader(io.StringIO(report(str(tmp_path), "csv"))))
    miou = next(r for r in rows if r["table"].startswith("Table 3") and r["metric"] == "miou")
    assert float(miou["mean"]) == pytest.approx((0.40 + 0.44 + 0.45) / 3, abs=1e-7)
    assert float(miou["std"]) == pytest.approx(statistics.stdev([0.40, 0.44, 0.45]), abs=1e-7)
    assert (miou["row"], miou["group"], miou["n"], miou["best"]) == ("CE", "Synthetic", "3", "0")


def test_a_step_written_twice_keeps_the_later_write(tmp_path: Path) -> None:
    # A resumed run rewrites epoch 9: the later wall time is what the run ended with.
    make_run(tmp_path, "ce-s0", {"val/miou": [(9, 0.10), (9, 0.30), (4, 0.90)]}, walltimes=[5.0, 7.0, 6.0])
    assert table(report(str(tmp_path)), "Table 3")[0][:2] == ["CE", "30.00 (n=1)"]


def test_tables_4_and_5_appear_with_models_and_temperatures_best_within_each_model(tmp_path: Path) -> None:
    make_run(tmp_path, "unet-ce", val(0.40), model="UNet")
    make_run(tmp_path, "unet-pat10", val(0.45), "PATLoss", {"temperature": 10.0}, model="UNet")
    make_run(tmp_path, "unet-pat5", val(0.42), "PATLoss", {"temperature": 5.0}, model="UNet")
    make_run(tmp_path, "dl-ce", val(0.60), model="DeepLabV3Plus")
    make_run(tmp_path, "dl-pat5", val(0.55), "PATLoss", {"temperature": 5.0}, model="DeepLabV3Plus")
    text = report(str(tmp_path))
    assert "Table 3: method x data set (UNet)" in text and "Table 3: method x data set (DLV3+)" in text
    assert [r[:3] for r in table(text, "Table 4")] == [
        ["UNet", "CE", "40.00 (n=1)"],
        ["UNet", "PAT (T=5)", "42.00 (n=1)"],
        ["UNet", "PAT (T=10)", "**45.00 (n=1)**"],
        ["DLV3+", "CE", "**60.00 (n=1)**"],
        ["DLV3+", "PAT (T=5)", "55.00 (n=1)"],
    ]
    assert [r[:3] for r in table(text, "Table 5")] == [
        ["UNet", "PAT (T=5)", "42.00 (n=1)"],
        ["UNet", "PAT (T=10)", "**45.00 (n=1)**"],
        ["DLV3+", "PAT (T=5)", "55.00 (n=1)"],
    ]


def test_other_differing_loss_arguments_keep_runs_apart(tmp_path: Path) -> None:
    make_run(tmp_path, "a", val(0.40), "PATLoss", {"temperature": 20.0, "detach_weight": False})
    make_run(tmp_path, "b", val(0.50), "PATLoss", {"temperature": 20.0, "detach_weight": True})
    rows = table(report(str(tmp_path)), "Table 3")
    assert [r[:2] for r in rows] == [
        ["PAT (T=20, detach_weight=False)", "40.00 (n=1)"],
        ["PAT (T=20, detach_weight=True)", "**50.00 (n=1)**"],
    ]


def test_per_class_table_and_utilisation_averaged_over_epochs(tmp_path: Path) -> None:
    scalars = {**val(0.4), "val/miou_tail": [(9, 0.125)], "utilisation/seconds_per_epoch": [(1, 10.0), (3, 14.0)]}
    make_run(tmp_path, "ce-s0", scalars, seed=0)
    make_run(tmp_path, "ce-s1", {**scalars, "utilisation/seconds_per_epoch": [(1, 20.0), (3, 20.0)]}, seed=1)
    text = report(str(tmp_path))
    header = [line for line in text.split("Table 6")[1].splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method",
        "sky↑",
        "road↑",
        "light↑",
        "mIoU head↑",
        "mIoU tail↑",
        "mIoU↑",
    ]
    assert table(text, "Table 6") == [
        [
            "CE",
            "50.00 ± 0.00 (n=2)",
            "50.00 ± 0.00 (n=2)",
            "50.00 ± 0.00 (n=2)",
            "",
            "12.50 ± 0.00 (n=2)",
            "40.00 ± 0.00 (n=2)",
        ]
    ]
    # per-run means 12 and 20 s: mean 16, sample std 5.657
    assert table(text, "Utilisation") == [["Synthetic", "UNet", "CE", "16 ± 5.7 (n=2)"]]


def test_latex_marks_best_and_escapes(tmp_path: Path) -> None:
    make_run(tmp_path, "ce", val(0.40))
    make_run(tmp_path, "pat", val(0.50), "PATLoss", {"temperature": 20.0})
    text = report(str(tmp_path), "latex")
    assert r"PAT (T=20) & \textbf{50.00 (n=1)} & " in text
    assert r"CE & 40.00 (n=1) & \textbf{90.00 (n=1)} & \textbf{0.300 (n=1)} \\" in text  # ties are all marked
    assert r"mIoU$\uparrow$" in text and r"Dice err$\downarrow$" in text and "mean $\\pm$ std" in text


def test_split_test_reads_test_tags(tmp_path: Path) -> None:
    make_run(tmp_path, "ce", {**val(0.40), "test/miou": [(9, 0.37)]})
    assert table(report(str(tmp_path), split="test"), "Table 3")[0][:2] == ["CE", "37.00 (n=1)"]


def test_split_test_reads_the_runs_test_folder(tmp_path: Path) -> None:
    make_run(tmp_path, "ce", {"test/miou": [(9, 0.37)]}, subfolder="test")
    assert table(report(str(tmp_path), split="test"), "Table 3")[0][:2] == ["CE", "37.00 (n=1)"]


def test_runs_that_differ_beyond_seeds_are_never_pooled(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    long, short = {"trainer": {"max_epochs": 12}}, {"trainer": {"max_epochs": 2}}
    make_run(tmp_path, "long-s0", val(0.70), "PATLoss", {"temperature": 20.0}, seed=0, extra=long)
    make_run(tmp_path, "long-s1", val(0.72), "PATLoss", {"temperature": 20.0}, seed=1, extra=long)
    make_run(tmp_path, "short-s0", val(0.30), "PATLoss", {"temperature": 20.0}, seed=0, extra=short)
    make_run(tmp_path, "short-s1", val(0.36), "PATLoss", {"temperature": 20.0}, seed=1, extra=short)
    # Same experiment as long-s*, apart from seeds and where it was logged: pooled with them.
    logged_elsewhere = {
        "trainer": {"max_epochs": 12, "logger": {"init_args": {"version": "x"}}},
        "name": "other",
        "data": {
            "class_path": "pat_seg.data.SyntheticLongTailDataModule",
            "init_args": {"batch_size": 16, "seed": 7, "num_workers": 4},
        },
    }
    make_run(tmp_path, "long-s2", val(0.74), "PATLoss", {"temperature": 20.0}, seed=2, extra=logged_elsewhere)
    rows = table(report(str(tmp_path)), "Table 3")
    assert [row[:2] for row in rows] == [  # natural order: 2 before 12
        ["PAT (T=20) [trainer.max_epochs=2]", cell([0.30, 0.36])],
        ["PAT (T=20) [trainer.max_epochs=12]", f"**{cell([0.70, 0.72, 0.74])}**"],
    ]
    assert "warning" not in capsys.readouterr().err


def finished(run_dir: Path, miou: float) -> None:
    """Give a hand-made run the hparams.yaml a finished ``pat-seg fit`` leaves (a summary with metrics)."""
    summary = {"step": 384, "parameters": {}, "metrics": {"hp/miou": miou}}
    (run_dir / "hparams.yaml").write_text(yaml.safe_dump({"num_classes": 3, "summary": summary}))


def test_an_unfinished_run_never_stands_in_for_the_finished_run_of_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import os

    budget = {"trainer": {"max_steps": 384, "max_epochs": -1}}
    done = make_run(tmp_path, "ce-s0", {"val/miou": [(383, 0.715)]}, seed=0, extra=budget)
    finished(done, 0.715)
    # The same config and seed, started again later and interrupted after 40 steps: Lightning wrote its
    # hparams.yaml at the start, no summary at the end. Newer, it would count in place of the finished run.
    stopped = make_run(tmp_path, "ce-s0-again", {"val/miou": [(40, 0.4286)]}, seed=0, extra=budget)
    (stopped / "hparams.yaml").write_text(yaml.safe_dump({"num_classes": 3}))
    os.utime(done / "config.yaml", (1000, 1000))
    text = report(str(tmp_path))
    assert table(text, "Table 3")[0][:2] == ["CE", "71.50 (n=1)"]
    assert (
        f"Left out: 1 unfinished run: {stopped} (stopped before its budget: step 40 of trainer.max_steps=384)" in text
    )
    assert "repeat" not in capsys.readouterr().err  # not a rerun of the finished one: not counted at all
    # A fit that ended without validation metrics is unfinished too; CSV gets the note on stderr.
    (stopped / "hparams.yaml").write_text(yaml.safe_dump({"summary": {"step": 384, "metrics": {}}}))
    assert ",CE,Synthetic,miou,0.71499" in report(str(tmp_path), fmt="csv")  # float32 in the event file
    assert f"left out: 1 unfinished run: {stopped} (ended with no validation metrics" in capsys.readouterr().err
    # Only unfinished runs: refused, naming them.
    (done / "hparams.yaml").write_text(yaml.safe_dump({"num_classes": 3}))
    with pytest.raises(ValueError, match="no finished run logged val/miou; left out: 2 unfinished runs"):
        report(str(tmp_path))


def test_a_rerun_with_the_same_seeds_counts_once_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import os

    first = make_run(tmp_path, "ce-s0", val(0.40), seed=0)
    make_run(tmp_path, "ce-s1", val(0.44), seed=1)
    rerun = make_run(tmp_path, "ce-s0-again", val(0.50), seed=0)
    os.utime(first / "config.yaml", (1000, 1000))  # the first run is the older one
    rows = table(report(str(tmp_path)), "Table 3")
    assert rows[0][:2] == ["CE", cell([0.44, 0.50])]
    err = capsys.readouterr().err
    assert "warning" in err and str(first) in err and f"only the newest, {rerun}" in err
    with pytest.raises(ValueError, match="no paired table"):
        report(str(tmp_path), paired_against="CE")
    capsys.readouterr()
    make_run(tmp_path, "pat-s1", val(0.60), "PATLoss", {"temperature": 20.0}, seed=1)
    report(str(tmp_path), paired_against="CE")  # the paired tables reuse the same labelled runs
    assert capsys.readouterr().err.count("warning") == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--logdir", "/nonexistent/logs"], "is not a directory"),
        (["--logdir", "{tmp}"], "no runs"),
        (["--logdir", "{tmp}", "--format", "html"], "invalid choice: 'html'"),
        (["--decision", "{tmp}/sweep.yaml", "--holm", "methods"], "leave out --holm"),
        (["--decision", "{tmp}/sweep.yaml", "--holm"], "leave out --holm"),
    ],
)
def test_bad_input_exits_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path) for a in args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def last_values(run_dir: Path, tag: str) -> float:
    """The test's own reading of an event file: the value at the largest step."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return max(accumulator.Scalars(tag), key=lambda event: event.step).value


@pytest.mark.slow
def test_tiny_sweep_then_report_prints_the_logged_numbers(tmp_path: Path) -> None:
    """2 losses x 2 seeds through `pat-seg sweep --mode run`, then `pat-seg report` (markdown and CSV)."""
    tiny = {
        "trainer.max_epochs": 2,
        "trainer.limit_train_batches": 2,
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "data.init_args.num_train": 8,
        "data.init_args.num_val": 4,
        "data.init_args.image_size": 32,
        "data.init_args.batch_size": 4,
        "model.model.init_args.base_channels": 4,
        "model.model.init_args.depth": 2,
        "model.optimizer.init_args.lr": 0.05,
    }
    spec = {
        "name": "tiny",
        "save_dir": str(tmp_path / "logs"),
        "args": tiny,
        "axes": {
            "loss": {"pat": {"configs": "configs/synthetic_pat.yaml"}, "ce": {"configs": "configs/synthetic_ce.yaml"}},
            "seed": {"s0": {"args": {"seed_everything": 0}}, "s1": {"args": {"seed_everything": 1}}},
        },
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    pat_seg = [sys.executable, "-m", "pat_seg"]
    subprocess.run(
        pat_seg + ["sweep", str(tmp_path / "tiny.yaml"), "--mode", "run"], cwd=REPO, check=True, capture_output=True
    )
    out = subprocess.run(
        pat_seg + ["report", "--logdir", str(tmp_path / "logs")], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    rows = {row[0]: row for row in table(out, "Table 3")}
    means = {}
    for method, loss in (("CE", "ce"), ("PAT (T=20)", "pat")):
        runs = [tmp_path / "logs" / "tiny" / f"{loss}-s{seed}" for seed in (0, 1)]
        for column, (tag, scale, digits) in enumerate(
            [("val/miou", 100, 2), ("val/pixel_accuracy", 100, 2), ("val/dice_error", 1, 3)], 1
        ):
            expected = cell([last_values(run, tag) for run in runs], scale, digits)
            assert rows[method][column].strip("*") == expected, (method, tag)
        means[method] = [last_values(run, "val/pixel_accuracy") for run in runs]
    assert means["CE"] != means["PAT (T=20)"]  # the runs differ, so a mix-up of runs would be caught


def test_paired_differences_against_a_baseline_with_t_intervals(tmp_path: Path) -> None:
    cbfocal, pat = [0.50, 0.52, 0.55], [0.53, 0.56, 0.57]  # differences 0.03, 0.04, 0.02
    for seed in range(3):
        make_run(tmp_path, f"cbfocal-s{seed}", val(cbfocal[seed]), "ClassBalancedFocalLoss", seed=seed)
        make_run(tmp_path, f"pat-s{seed}", val(pat[seed]), "PATLoss", {"temperature": 20.0}, seed=seed)
    make_run(tmp_path, "ce-s0", val(0.40), seed=0)  # one seed only: no interval
    text = report(str(tmp_path), paired_against="CB-Focal")
    rows = table(text, "Paired differences against CB-Focal")
    # By hand: mean 0.03, sample sd 0.01, t(0.975, 2 df) = 4.302653 -> half width 0.0248414 (points x 100).
    assert rows == [
        ["Synthetic", "CE", "-10.00 (n=1, no interval)", "", ""],
        ["Synthetic", "PAT (T=20)", "+3.00 [+0.52, +5.48] (n=3)", "", ""],
    ]
    with pytest.raises(ValueError, match="matches none of the methods"):
        report(str(tmp_path), paired_against="LDAM")


def test_pat_ablations_are_named_by_what_they_switch_off(tmp_path: Path) -> None:
    make_run(tmp_path, "pat", val(0.50), "PATLoss", {"temperature": 20.0})  # saved before the switches existed
    make_run(tmp_path, "nobeta", val(0.45), "PATLoss", {"temperature": 20.0, "confidence_weight": False})
    make_run(
        tmp_path,
        "noeq4",
        val(0.40),
        "PATLoss",
        {"temperature": 20.0, "confidence_weight": True, "normalization": "pixel"},
    )
    make_run(
        tmp_path,
        "pat-new",
        val(0.52),
        "PATLoss",
        {"temperature": 20.0, "confidence_weight": True, "normalization": "image_class"},
        seed=1,
    )
    rows = table(report(str(tmp_path)), "Table 3")
    assert [row[:2] for row in rows] == [
        ["PAT (T=20)", f"**{cell([0.50, 0.52])}**"],  # old and new runs of the paper's method pool
        ["PAT w/o Eq. 4 (T=20)", "40.00 (n=1)"],
        ["PAT w/o beta", "45.00 (n=1)"],
    ]


def test_beta_minmax_runs_are_a_method_of_their_own(tmp_path: Path) -> None:
    make_run(tmp_path, "pat-old", val(0.50), "PATLoss", {"temperature": 20.0})  # saved before the option existed
    make_run(tmp_path, "pat-new", val(0.52), "PATLoss", {"temperature": 20.0, "weight_normalization": "none"}, seed=1)
    for seed, miou in enumerate((0.47, 0.49)):
        args = {"temperature": 20.0, "weight_normalization": "batch_minmax"}
        make_run(tmp_path, f"minmax-s{seed}", val(miou), "PATLoss", args, seed=seed)
    rows = table(report(str(tmp_path)), "Table 3")
    assert [row[:2] for row in rows] == [
        ["PAT (T=20)", f"**{cell([0.50, 0.52])}**"],
        ["PAT beta min-max (T=20)", cell([0.47, 0.49])],
    ]


def test_presence_and_mixture_runs_are_labelled_and_old_pat_runs_pool_with_new(tmp_path: Path) -> None:
    make_run(tmp_path, "pat-old", val(0.50), "PATLoss", {"temperature": 20.0})  # saved before presence existed
    make_run(
        tmp_path,
        "pat-new",
        val(0.52),
        "PATLoss",
        {"temperature": 20.0, "presence_exponent": 0.0, "class_presence": None},
        seed=1,
    )
    make_run(tmp_path, "half", val(0.55), "PATLoss", {"temperature": 20.0, "presence_exponent": 0.5})
    make_run(tmp_path, "full", val(0.56), "PATLoss", {"temperature": 20.0, "presence_exponent": 1.0})
    make_run(tmp_path, "mix", val(0.57), "PATCBMixtureLoss", {"mix": 0.5, "temperature": 20.0})
    rows = table(report(str(tmp_path)), "Table 3")
    assert [row[0] for row in rows] == [
        "PAT (T=20)",
        "PAT+CB mix (lambda=0.5)",
        "PAT+presence alpha=0.5 (T=20)",
        "PAT+presence alpha=1 (T=20)",
    ]
    assert rows[0][1] == cell([0.50, 0.52])


def t_two_sided_p_4df(t: float) -> float:
    """P(|T| > t) for 4 degrees of freedom, by hand: P(|T| <= t) = s (1 + c^2 / 2), s = t / sqrt(4 + t^2), c^2 = 4 / (4 + t^2)."""
    s_ = t / math.sqrt(4 + t * t)
    return 1 - s_ * (1 + 2 / (4 + t * t))


def t_quantile_4df(probability: float) -> float:
    """The two-sided ``probability`` point of t with 4 df, by bisection on the closed form above."""
    low, high = 0.0, 100.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if 1 - t_two_sided_p_4df(middle) < probability else (low, middle)
    return (low + high) / 2


HOLM_DIFFERENCES = {  # regime -> PAT+presence minus PAT, per seed (5 seeds)
    "mixed": [0.030, 0.040, 0.020, 0.050, 0.035],
    "small": [0.010, -0.020, 0.005, 0.000, 0.012],
    "infrequent": [0.200, 0.150, 0.260, 0.100, 0.180],
}


def write_holm_study(root: Path) -> None:
    """Runs of PAT and PAT+presence in three regimes x 5 seeds whose differences are HOLM_DIFFERENCES."""
    for regime, differences in HOLM_DIFFERENCES.items():
        for seed, difference in enumerate(differences):
            base = 0.40 + 0.01 * seed
            args = {"imbalance": 1000.0, "rarity": regime}
            make_run(
                root,
                f"s{seed}-{regime}-pat",
                val(base),
                "PATLoss",
                {"temperature": 20.0},
                seed=seed,
                data_seed=seed,
                data_args=args,
            )
            make_run(
                root,
                f"s{seed}-{regime}-presence",
                val(base + difference),
                "PATLoss",
                {"temperature": 20.0, "presence_exponent": 1.0},
                seed=seed,
                data_seed=seed,
                data_args=args,
            )


def holm_by_hand(
    differences: dict[str, list[float]],
) -> tuple[dict[str, tuple[float, float, float]], list[str], dict[str, float]]:
    """Per key, the mean, sd and two-sided p (4-df closed form) of its 5 paired differences; the keys
    in increasing p; and Holm's step-down over them: sorted p_(1) <= ... <= p_(m) become
    min(1, m p_(1)), then the running maximum of min(1, (m - k + 1) p_(k))."""
    stats = {}
    for key, values in differences.items():
        mean = sum(values) / 5
        sd = math.sqrt(sum((d - mean) ** 2 for d in values) / 4)
        stats[key] = (mean, sd, t_two_sided_p_4df(abs(mean) / (sd / math.sqrt(5))))
    order = sorted(stats, key=lambda key: stats[key][2])
    adjusted, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * stats[key][2]))
        adjusted[key] = running
    return stats, order, adjusted


def test_holm_adjusted_p_values_and_bonferroni_intervals_on_known_answers(tmp_path: Path) -> None:
    write_holm_study(tmp_path)
    text = report(str(tmp_path), paired_against="PAT", holm="datasets")
    rows = {row[0]: row for row in table(text, "Paired differences against PAT")}
    # By hand: per regime the mean, sd and t of the 5 differences, p from the 4-df closed form; Holm:
    # sorted p_(1) <= p_(2) <= p_(3) become 3 p_(1), max(that, 2 p_(2)), max(that, p_(3)).
    stats, order, adjusted = holm_by_hand(HOLM_DIFFERENCES)
    assert order == ["mixed", "infrequent", "small"]  # the Holm multipliers 3, 2, 1 all come into play
    half = t_quantile_4df(1 - 0.05 / 3)  # 98.33% two-sided: the three intervals hold together at 95%
    for regime, (mean, sd, _) in stats.items():
        label = next(label for label in rows if f"rarity={regime}" in label)
        low, high = mean - half * sd / math.sqrt(5), mean + half * sd / math.sqrt(5)
        p_text = f"p={stats[regime][2]:.3g}, p_Holm={adjusted[regime]:.3g}"
        assert rows[label][2] == (f"{mean * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}] (n=5, {p_text})"), regime
    assert adjusted["mixed"] < 0.05 < adjusted["small"]  # the fixture spans both decisions
    assert "Bonferroni-widened over the m = 3 data sets each method was compared on" in text
    plain = table(report(str(tmp_path), paired_against="PAT"), "Paired differences against PAT")
    assert all("p_Holm" not in cell_text for row in plain for cell_text in row)
    for seed, difference in enumerate([0.01, 0.03, 0.02, 0.04, 0.00]):  # CB in one regime only: a family of 1
        small = {"imbalance": 1000.0, "rarity": "small"}
        cb = val(0.40 + 0.01 * seed + difference)
        make_run(tmp_path, f"s{seed}-small-cb", cb, "ClassBalancedLoss", seed=seed, data_seed=seed, data_args=small)
    text = report(str(tmp_path), paired_against="PAT", holm="datasets")
    assert "Bonferroni-widened over the m = 1 or 3 data sets each method was compared on" in text


METHOD_DIFFERENCES = {  # (loss, label) -> its mIoU minus PAT's, per seed (5 seeds), all on one data set
    ("CrossEntropyLoss", "CE"): [-0.200, -0.150, -0.260, -0.100, -0.180],
    ("ClassBalancedLoss", "CB"): [0.030, 0.040, -0.010, 0.050, 0.035],
    ("ClassBalancedFocalLoss", "CBFocal"): [0.020, -0.008, 0.030, 0.015, 0.025],
}


def write_methods_study(root: Path) -> None:
    """PAT and three methods on one data set x 5 seeds (differences: METHOD_DIFFERENCES), and Focal at
    one seed only: one pair, no p-value, so not a test of the Holm family."""
    for seed in range(5):
        base = 0.40 + 0.01 * seed
        make_run(root, f"s{seed}-pat", val(base), "PATLoss", {"temperature": 20.0}, seed=seed, data_seed=seed)
        for (loss, _), differences in METHOD_DIFFERENCES.items():
            make_run(root, f"s{seed}-{loss}", val(base + differences[seed]), loss, seed=seed, data_seed=seed)
    make_run(root, "s0-focal", val(0.45), "FocalLoss", {"gamma": 2.0}, seed=0, data_seed=0)


def test_holm_over_the_methods_compared_on_one_data_set(tmp_path: Path) -> None:
    write_methods_study(tmp_path)
    # By hand: each method's mean, sd and t over its 5 differences, p from the 4-df closed form, then Holm's
    # step-down over the m = 3 methods (Focal's single pair has no p-value and does not count).
    stats, order, adjusted = holm_by_hand({label: d for (_, label), d in METHOD_DIFFERENCES.items()})
    # The fixture exercises Holm's every step: CB's p < 0.05 becomes 2 p > 0.05, and CBFocal's own p
    # (below 2 p of CB) is raised to CB's adjusted value by the running maximum.
    assert order == ["CE", "CB", "CBFocal"]
    assert stats["CB"][2] < 0.05 < adjusted["CB"] == adjusted["CBFocal"] > stats["CBFocal"][2]
    assert adjusted["CE"] < 0.05
    for family, m in (("methods", 3), ("datasets", 1)):  # one data set: each method's family is itself
        text = report(str(tmp_path), paired_against="PAT", holm=family)
        rows = {row[1]: row for row in table(text, "Paired differences against PAT")}
        half = t_quantile_4df(1 - 0.05 / m)  # the Bonferroni level: 98.33% for m = 3, 95% for m = 1
        for label, (mean, sd, p) in stats.items():
            low, high = mean - half * sd / math.sqrt(5), mean + half * sd / math.sqrt(5)
            p_holm = adjusted[label] if family == "methods" else p
            expected = f"{mean * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}] (n=5, p={p:.3g}, p_Holm={p_holm:.3g})"
            assert rows[label][2] == expected, (family, label)
        assert rows["Focal (gamma=2)"][2] == f"{(0.45 - 0.40) * 100:+.2f} (n=1, no interval)"
        members = "methods compared with PAT on each data set" if family == "methods" else "data sets each method"
        assert f"Bonferroni-widened over the m = {m} {members}" in text, text.rsplit("\n", 3)[-3:]


def test_an_unknown_holm_family_exits_2_with_a_short_message(tmp_path: Path) -> None:
    write_methods_study(tmp_path / "logs")
    output = tmp_path / "report.md"
    result = pat_seg(
        "report",
        "--logdir",
        str(tmp_path / "logs"),
        "--paired-against",
        "PAT",
        "--holm",
        "everything",
        "--output",
        str(output),
    )
    assert result.returncode == 2
    short_error(result, "--holm", "invalid choice: 'everything'", "datasets", "methods")
    assert not output.exists()


def test_per_run_csv_rebuilds_the_same_report_without_event_files(tmp_path: Path) -> None:
    write_holm_study(tmp_path / "logs")
    make_run(
        tmp_path / "logs",
        "curve",
        {"val/miou": [(4, 0.2), (9, 0.3), (14, 0.35)]},
        "ClassBalancedFocalLoss",
        seed=0,
        data_seed=0,
        data_args={"imbalance": 1000.0, "rarity": "small"},
    )
    per_run = report(str(tmp_path / "logs"), fmt="csv", per_run=True)
    rows = list(csv.DictReader(io.StringIO(per_run)))
    assert (
        len(rows) == 30 * 3 + 4
    )  # steps 1 (the fixture's per-class values), 4 and 9 per study run; and 14 for the curve
    curve = [row for row in rows if row["run"].endswith("curve")]
    assert [row["step"] for row in curve] == ["1", "4", "9", "14"] and curve[0]["miou"] == ""
    assert [float(row["miou"]) for row in curve[1:]] == pytest.approx([0.2, 0.3, 0.35], rel=1e-7)  # float32 events
    (tmp_path / "study.csv").write_text(per_run)
    for kwargs in ({}, {"paired_against": "PAT", "holm": "datasets"}, {"fmt": "csv"}):
        assert report("unused", from_csv=str(tmp_path / "study.csv"), **kwargs) == report(
            str(tmp_path / "logs"), **kwargs
        )


def test_learned_counts_per_class(tmp_path: Path) -> None:
    # light IoU over three seeds {0, 0, 0.679}: a mean of 22.6 +- 39.2 that is one success in three.
    for seed, light in enumerate([0.0, 0.0, 0.679]):
        make_run(
            tmp_path,
            f"pat-s{seed}",
            {**val(0.5), "val/iou/light": [(9, light)], "val/iou/sky": [(9, 0.9)], "val/iou/road": [(9, 0.0999)]},
            "PATLoss",
            {"temperature": 20.0},
            seed=seed,
        )
    text = report(str(tmp_path))
    header = text.split("Runs that learned each class", 1)[1].splitlines()[2]
    columns = [c.strip().rstrip("↑") for c in header.strip("|").split("|")]
    rows = table(text, "Runs that learned each class")
    assert dict(zip(columns, rows[0])) == {"Method": "PAT (T=20)", "sky": "3/3", "road": "0/3", "light": "1/3"}


def test_holm_needs_a_baseline_and_per_run_needs_csv(tmp_path: Path) -> None:
    make_run(tmp_path, "ce", val(0.4))
    with pytest.raises(ValueError, match="--holm corrects the paired differences"):
        report(str(tmp_path), holm="methods")
    with pytest.raises(ValueError, match="holm must be one of \\('datasets', 'methods'\\) or None; got True"):
        report(str(tmp_path), paired_against="CE", holm=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--per-run writes CSV"):
        report(str(tmp_path), per_run=True)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="is not a per-run file"):
        report("unused", from_csv=str(tmp_path / "bad.csv"))
