"""pat-seg sweep: grid expansion, the commands it prints, the SLURM array, and what the CLI makes of them."""

from __future__ import annotations

import csv
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pat_seg.cli import cli_main
from pat_seg.experiments.sweep import load_sweep, main, print_commands, run_all, slurm_script

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


GRID = {
    "name": "grid",
    "save_dir": "out",
    "configs": ["base.yaml"],
    "args": {"trainer.max_epochs": 3},
    "axes": {
        "dataset": {"cityscapes": {}, "nyuv2": {}},
        "loss": {
            "pat": {"configs": "configs/{dataset}_{loss}.yaml"},
            "ce": {"configs": ["configs/{dataset}_{loss}.yaml"]},
        },
        "seed": {
            "s0": {"args": {"seed_everything": 0}},
            "s1": {"args": {"seed_everything": 1, "trainer.max_epochs": 5}},
        },
    },
}


def test_grid_is_the_product_of_the_axes_first_axis_outermost(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path / "g.yaml", GRID))
    assert [r.version for r in sweep.runs] == [
        f"{d}-{loss}-{s}" for d in ("cityscapes", "nyuv2") for loss in ("pat", "ce") for s in ("s0", "s1")
    ]
    run = sweep.runs[5]  # nyuv2-pat-s1
    assert run.configs == ["base.yaml", "configs/nyuv2_pat.yaml"]
    assert run.args == {"trainer.max_epochs": 5, "seed_everything": 1}  # axis args override the base
    assert sweep.run_dir(run) == Path("out/grid/nyuv2-pat-s1")


def test_a_list_of_grids_runs_each_grid_in_turn(tmp_path: Path) -> None:
    # Core arms with three seeds, then another arm with two: seeds outermost within each grid.
    seeds = {f"s{k}": {"args": {"seed_everything": k}} for k in range(3)}
    spec = {
        "axes": [
            {"seed": seeds, "loss": {"pat": {}, "ce": {}}},
            {"seed": dict(list(seeds.items())[:2]), "loss": {"focal": {"args": {"trainer.max_epochs": 2}}}},
        ]
    }
    sweep = load_sweep(write(tmp_path / "g.yaml", spec))
    expected = [f"s{k}-{loss}" for k in range(3) for loss in ("pat", "ce")] + ["s0-focal", "s1-focal"]
    assert [run.version for run in sweep.runs] == expected
    assert sweep.runs[-1].args == {"seed_everything": 1, "trainer.max_epochs": 2}


def test_printed_commands_spell_out_every_override(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path / "g.yaml", GRID))
    lines = print_commands(sweep, ["--trainer.fast_dev_run=true"]).splitlines()
    assert len(lines) == 8
    assert shlex.split(lines[1]) == [
        "pat-seg",
        "fit",
        "--config",
        "base.yaml",
        "--config",
        "configs/cityscapes_pat.yaml",
        "--trainer.max_epochs=5",
        "--seed_everything=1",
        "--trainer.logger.class_path=lightning.pytorch.loggers.TensorBoardLogger",
        "--trainer.logger.init_args.save_dir=out",
        "--trainer.logger.init_args.name=grid",
        "--trainer.logger.init_args.version=cityscapes-pat-s1",
        "--trainer.fast_dev_run=true",
    ]


def test_slurm_script_is_an_array_over_the_commands(tmp_path: Path) -> None:
    spec = dict(GRID, slurm={"gres": "gpu:1", "time": "01:00:00"})
    sweep = load_sweep(write(tmp_path / "g.yaml", spec))
    script = slurm_script(sweep, [])
    assert "#SBATCH --array=0-7" in script and "#SBATCH --gres=gpu:1" in script and "#SBATCH --time=01:00:00" in script
    # The bash array holds exactly the printed commands, in order: task i runs command i (with
    # $RESUME, set when a requeued task finds its run's checkpoints), then marks its run done (so that
    # `--mode run` afterwards adds it to a study CSV without training it).
    body = script.split("COMMANDS=(\n")[1].split("\n)")[0].splitlines()
    versions = [run.version for run in sweep.runs]
    assert [shlex.split(line.strip())[0] for line in body] == [
        f"{line} $RESUME && touch out/grid/{version}/.sweep-done"
        for line, version in zip(print_commands(sweep, []).splitlines(), versions)
    ]
    run_dirs = script.split("RUN_DIRS=(\n")[1].split("\n)")[0].splitlines()
    assert [line.strip() for line in run_dirs] == [f"out/grid/{version}" for version in versions]
    assert script.rstrip().endswith('eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"')


def test_test_key_follows_each_fit_with_a_test_of_its_checkpoint(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path / "g.yaml", dict(GRID, test="best", csv="docs/studies/grid.csv")))
    assert sweep.csv == "docs/studies/grid.csv" and sweep.splits == ("val", "test")
    fit, test = print_commands(sweep, []).splitlines()[0].split(" && ")
    assert shlex.split(fit)[-1] == "--trainer.logger.init_args.version=cityscapes-pat-s0"
    assert shlex.split(test) == [
        "pat-seg",
        "test",
        "--config",
        "out/grid/cityscapes-pat-s0/config.yaml",
        "--ckpt_path=best",
    ]
    assert load_sweep(write(tmp_path / "h.yaml", GRID)).splits == ("val",)


def test_printed_command_configures_the_run_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    """The CLI itself parses a printed command: seed, temperature and logger name/version arrive."""
    monkeypatch.chdir(REPO)
    spec = {
        "name": "t5",
        "save_dir": str(tmp_path),
        "configs": ["configs/synthetic_pat.yaml"],
        "axes": {
            "temperature": {"T5": {"args": {"model.loss.init_args.temperature": 5.0}}},
            "seed": {"s3": {"args": {"seed_everything": 3}}},
        },
    }
    command = load_sweep(write(tmp_path / "t.yaml", spec)).runs[0].command("t5", str(tmp_path))
    with pytest.raises(SystemExit):
        cli_main(command[1:] + ["--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["seed_everything"] == 3
    assert config["model"]["loss"]["init_args"]["temperature"] == 5.0
    assert config["trainer"]["logger"]["init_args"]["name"] == "t5"
    assert config["trainer"]["logger"]["init_args"]["version"] == "T5-s3"


def test_only_selects_versions_by_glob(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main([str(write(tmp_path / "g.yaml", GRID)), "--mode", "print", "--only", "*-ce-s0", "--only", "nyuv2-pat-*"])
    versions = [line.rsplit("version=", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert versions == ["cityscapes-ce-s0", "nyuv2-pat-s0", "nyuv2-pat-s1", "nyuv2-ce-s0"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"axes": {}}, "'axes' must map"),
        ({"axes": [{"seed": {"s0": {}}}, {"seed": {"s0": {}}}]}, "the run 's0' more than once"),
        ({"axes": [{"seed": {"s0": {}}}, {}]}, "axes[1] must map"),
        ({"axes": {"loss": {"pat": {"config": "x.yaml"}}}}, "must be a mapping with 'configs' and/or 'args'"),
        ({"axes": {"loss": {"pat": {"configs": "{dataset}.yaml"}}}}, "refers to 'dataset' but the axes are ['loss']"),
        ({"axes": {"loss": {"pat": {"args": ["seed_everything", 1]}}}}, "must be a mapping of flag -> value"),
        ({"axis": {}}, "unknown keys ['axis']"),
        ({"axes": {"seed": {"s0": {}}}, "test": "final"}, "'test' must be one of ['last', 'best']"),
        ({"axes": {"seed": {"s0": {}}}, "csv": "docs/studies/x.tsv"}, "'csv' must be the path of the study's .csv"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_reason(tmp_path: Path, spec: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        load_sweep(write(tmp_path / "bad.yaml", spec))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "text, message",
    [
        # Flow style reads {los} as a mapping inside a list: invalid YAML, reported at its line and column.
        (
            "name: grid\naxes:\n  loss:\n    pat: {configs: [configs/{los}.yaml]}\n",
            "bad.yaml line 4, column 29 is not valid YAML: expected ',' or ']', but got '{' (quote a value",
        ),
        ("- configs/a.yaml\n", "bad.yaml must be a mapping of name, save_dir"),
    ],
)
def test_a_sweep_file_that_is_no_mapping_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "bad.yaml")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in error and len(error.strip().splitlines()) == 1


def test_run_refuses_before_training_when_a_config_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: no config of the grid exists there
    sweep = load_sweep(write(tmp_path / "g.yaml", GRID))
    # configs/{cityscapes,nyuv2}_{pat,ce}.yaml name configs pat-seg ships (pat_seg.config_files); base.yaml none.
    with pytest.raises(ValueError, match=r"do not exist: \['base.yaml'\] \(paths are relative to .*, or name a config"):
        run_all(sweep, [])


def test_the_papers_grids_expand_to_their_sizes(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    sizes = {
        "synthetic_table3": 8 * 3,
        "synthetic_table5": 4 * 3,
        "table3": 3 * 8 * 3,
        "table4": 2 * 5 * 5 * 3,
        "table5": 2 * 2 * 4 * 3,
    }
    for name, size in sizes.items():
        sweep = load_sweep(f"configs/sweeps/{name}.yaml")
        assert len(sweep.runs) == size and len({r.version for r in sweep.runs}) == size, name
    synthetic = load_sweep("configs/sweeps/synthetic_table3.yaml")
    assert {c for r in synthetic.runs for c in r.configs} == {
        f"configs/synthetic_{loss}.yaml" for loss in ("ce", "focal", "cb", "cbfocal", "bms", "ldam", "blv", "pat")
    }


def test_run_gives_the_callers_sigterm_handler_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    grid = {"name": "grid", "save_dir": "out", "axes": {"seed": {"s0": {"args": {"seed_everything": 0}}}}}
    sweep = load_sweep(write(tmp_path / "g.yaml", grid))
    (tmp_path / "out" / "grid" / "s0").mkdir(parents=True)
    (tmp_path / "out" / "grid" / "s0" / ".sweep-done").touch()  # finished: nothing is trained

    def callers_handler(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGTERM, callers_handler)
    try:
        assert run_all(sweep, []) == 0
        assert signal.getsignal(signal.SIGTERM) is callers_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- --mode run with a study CSV, --jobs -----------------------------------------------------------
SEEDS = {"seed": {"s0": {"args": {"seed_everything": 0}}, "s1": {"args": {"seed_everything": 1}}}}
HEADER = "run,dataset,model,method,is_pat,seed,data_seed,split,step,data.imbalance,miou\n"


def study_line(run: str, split: str = "val", miou: str = "0.5") -> str:
    return f"{run},Synthetic,UNet,CE,0,0,0,{split},9,null,{miou}\n"


@pytest.mark.parametrize(
    "csv_path, text, flags, message",
    [
        ("study.csv", None, ["--jobs", "0"], "--jobs must be 1 or more (runs at once); got 0"),
        ("g.yaml/study.csv", None, [], "csv: 'g.yaml/study.csv': its folder 'g.yaml' is not a folder"),
        ("studies/study.csv", None, [], "csv: 'studies/study.csv': its folder 'studies' does not exist"),
        ("study.csv", "a,b\n1,2\n", [], "csv: 'study.csv' is not a per-run CSV of `pat-seg report"),
        ("study.csv", HEADER + "grid/s0,Synthetic,UNet\n", [], "csv: 'study.csv' is not a per-run CSV"),
    ],
)
def test_bad_study_input_is_refused_in_one_line_before_any_run(
    tmp_path: Path,
    monkeypatch,
    capsys: pytest.CaptureFixture,
    csv_path: str,
    text: str | None,
    flags: list,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "g.yaml", {"name": "grid", "save_dir": "out", "csv": csv_path, "axes": SEEDS})
    if text is not None:
        (tmp_path / csv_path).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["g.yaml", "--mode", "run", *flags])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in error and len(error.strip().splitlines()) == 1, error
    assert not (tmp_path / "out").exists()  # nothing trained, no folder made
    if text is not None:
        assert (tmp_path / csv_path).read_text() == text


def test_runs_in_the_study_csv_are_skipped_where_their_folders_are_absent(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    """A fresh clone: the CSV holds both runs (val and test), no run folder exists, nothing trains."""
    monkeypatch.chdir(tmp_path)
    lines = HEADER + "".join(study_line(f"grid/{s}", split) for s in ("s0", "s1") for split in ("val", "test"))
    (tmp_path / "study.csv").write_text(lines)
    write(tmp_path / "g.yaml", {"name": "grid", "save_dir": "out", "csv": "study.csv", "test": "last", "axes": SEEDS})
    main(["g.yaml", "--mode", "run"])
    assert capsys.readouterr().out.splitlines() == [
        "[1/2] s0: in study.csv already, skipped",
        "[2/2] s1: in study.csv already, skipped",
    ]
    assert not (tmp_path / "out").exists() and (tmp_path / "study.csv").read_text() == lines


def test_study_csv_merges_columns_keeps_earlier_lines_and_orders_runs_as_the_grid(tmp_path: Path) -> None:
    from pat_seg.experiments.report import entries_from_csv
    from pat_seg.experiments.study_csv import StudyCsv

    path = tmp_path / "study.csv"
    earlier = HEADER + study_line("other/x", miou="0.25") + study_line("grid/s1", miou="0.75")
    path.write_text(earlier)
    study = StudyCsv.open(path)
    assert study.has("grid/s1", ["val"]) and not study.has("grid/s1", ["val", "test"])
    # A later run logs a metric and a data argument the earlier ones did not.
    header = "run,dataset,model,method,is_pat,seed,data_seed,split,step,data.imbalance,data.rarity,miou,miou_tail\n"
    new = "grid/s0,Synthetic,UNet,PAT (T=20),1,0,0,val,9,100.0,small,0.5,0.125\n"
    study.put("grid/s0", header.strip().split(","), [dict(zip(header.strip().split(","), new.strip().split(",")))])
    study.save(order=["grid/s0", "grid/s1"])
    text = path.read_text().splitlines()
    # Runs outside the grid first, as they were; then the grid's order (s0 before s1, though written after).
    assert text == [
        "run,dataset,model,method,is_pat,seed,data_seed,split,step,data.imbalance,data.rarity,miou,miou_tail",
        "other/x,Synthetic,UNet,CE,0,0,0,val,9,null,null,0.25,",
        "grid/s0,Synthetic,UNet,PAT (T=20),1,0,0,val,9,100.0,small,0.5,0.125",
        "grid/s1,Synthetic,UNet,CE,0,0,0,val,9,null,null,0.75,",
    ]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left beside it
    read = {entry.run.path.as_posix(): entry for entry in entries_from_csv(str(path))}
    assert read["grid/s0"].run.scalars == {"val/miou": [(9, 0.5)], "val/miou_tail": [(9, 0.125)]}
    assert read["grid/s1"].run.scalars == {"val/miou": [(9, 0.75)]} and read["grid/s1"].run.data[1]["rarity"] is None


def test_lines_written_before_the_grid_changed_are_relabelled(tmp_path: Path) -> None:
    """A regime added to the grid names the regime of the earlier runs too; their values stay."""
    from pat_seg.experiments.study_csv import LABEL_COLUMNS, StudyCsv

    path = tmp_path / "study.csv"
    path.write_text(HEADER + study_line("grid/s0") + study_line("other/x"))
    study = StudyCsv.open(path)
    fields = dict(zip(LABEL_COLUMNS, ["grid/s0", "Synthetic (rarity=small)", "UNet", "CE", "0", "0", "0"]))
    same = dict(zip(LABEL_COLUMNS, ["grid/s1", "Synthetic (rarity=mixed)", "UNet", "CE", "0", "1", "1"]))
    assert study.relabel({"grid/s0": fields, "grid/s1": same}) == [
        (
            "grid/s0",
            "grid/s0 / Synthetic / UNet / CE / 0 / 0 / 0",
            "grid/s0 / Synthetic (rarity=small) / UNet / CE / 0 / 0 / 0",
        )
    ]
    assert study.text().splitlines()[1:] == [
        "grid/s0,Synthetic (rarity=small),UNet,CE,0,0,0,val,9,null,0.5",
        "other/x,Synthetic,UNet,CE,0,0,0,val,9,null,0.5",
    ]


def test_a_save_interrupted_before_the_rename_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    from pat_seg.experiments.study_csv import StudyCsv

    path = tmp_path / "study.csv"
    path.write_text(HEADER + study_line("grid/s0"))
    study = StudyCsv.open(path)
    study.put(
        "grid/s1",
        HEADER.strip().split(","),
        [dict(zip(HEADER.strip().split(","), study_line("grid/s1").strip().split(",")))],
    )

    def killed(descriptor: int) -> None:
        raise KeyboardInterrupt  # the moment after the new text was written, before the rename

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        study.save()
    assert path.read_text() == HEADER + study_line("grid/s0") and list(tmp_path.iterdir()) == [path]


def test_a_run_that_cannot_be_configured_stops_the_sweep_before_any_run(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    axes = {"seed": {"s0": {}, "s1": {"args": {"model.loss.init_args.temprature": 5.0}}}}
    write(tmp_path / "g.yaml", {"name": "grid", "save_dir": "out", "csv": "study.csv", "axes": axes})
    with pytest.raises(SystemExit) as exit_info:
        main(["g.yaml", "--mode", "run"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2, error
    assert "run s1 of the sweep 'grid' cannot be configured" in error and "temprature" in error, error
    assert len(error.strip().splitlines()) <= 15 and not (tmp_path / "out").exists()
    assert not (tmp_path / "study.csv").exists()


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir() for child in (task / "children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_sigterm_ends_every_run_of_a_parallel_sweep(tmp_path: Path) -> None:
    spec = {"name": "grid", "save_dir": "out", "args": {"trainer.max_epochs": 10_000}, "axes": SEEDS}
    write(tmp_path / "g.yaml", spec)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pat_seg", "sweep", "g.yaml", "--mode", "run", "--jobs", "2"]
    sweep = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(children := _children(sweep.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children) == 2  # both runs started at once
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        sweep.kill()
        out = sweep.communicate()[0]
    for child in children:  # killed and reaped: no process is left behind
        assert not Path(f"/proc/{child}").exists(), child
    assert "2 runs, 2 at a time with" in out


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_a_study_csv_in_a_folder_that_cannot_be_written_is_refused(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir(mode=0o555)
    write(tmp_path / "g.yaml", {"name": "grid", "save_dir": "out", "csv": "studies/study.csv", "axes": SEEDS})
    with pytest.raises(SystemExit) as exit_info:
        main(["g.yaml", "--mode", "run"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "its folder 'studies' cannot be written" in error, error


# --- a study that stops half way and goes on in a fresh clone (slow: 4 tiny fits and tests) --------
TINY = {
    "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"},
    "data": {"init_args": {"num_train": 8, "num_val": 2, "num_test": 2, "image_size": 16, "batch_size": 4}},
    "model": {"model": {"class_path": "pat_seg.models.UNet", "init_args": {"base_channels": 4, "depth": 1}}},
}
# Seeds outermost; the two variants differ in loss and data, so each label names what differs
# ("Synthetic (imbalance=10)"): a label only the whole grid gives, not a run on its own.
STUDY = {
    "name": "tiny",
    "save_dir": "out",
    "configs": ["tiny.yaml"],
    "csv": "study.csv",
    "test": "last",
    "axes": {
        "seed": {
            "s0": {"args": {"seed_everything": 0, "data.init_args.seed": 0}},
            "s1": {"args": {"seed_everything": 1, "data.init_args.seed": 1}},
        },
        "variant": {
            "ce": {
                "args": {"model.loss.class_path": "pat_seg.losses.CrossEntropyLoss", "data.init_args.imbalance": 10}
            },
            "pat": {"args": {"model.loss.class_path": "pat_seg.losses.PATLoss", "data.init_args.imbalance": 20}},
        },
    },
}
VERSIONS = ["s0-ce", "s0-pat", "s1-ce", "s1-pat"]


def csv_lines(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Session 1 trains the s0 runs two at a time (--only, --jobs 2) and stops; session 2 is a fresh
    folder holding only the sweep file, its config and the CSV, and trains the rest one at a time."""
    from test_run_safety import pat_seg

    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    for folder in (first, second):
        write(folder / "tiny.yaml", TINY)
        write(folder / "study.yaml", STUDY)
    one = pat_seg("sweep", "study.yaml", "--mode", "run", "--only", "s0-*", "--jobs", "2", cwd=first, timeout=600)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    after_first = (first / "study.csv").read_text()
    (second / "study.csv").write_text(after_first)
    two = pat_seg("sweep", "study.yaml", "--mode", "run", cwd=second, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    return {"first": first, "second": second, "one": one.stdout, "two": two.stdout, "after_first": after_first}


@pytest.mark.slow
def test_a_stopped_study_goes_on_in_a_fresh_clone_with_only_the_missing_runs(study: dict) -> None:
    first, second = study["first"], study["second"]
    assert sorted(path.name for path in (first / "out" / "tiny").iterdir() if path.is_dir()) == ["s0-ce", "s0-pat"]
    # The fresh clone trained exactly the two runs the CSV lacked, and said so for the others.
    assert "[1/4] s0-ce: in study.csv already, skipped" in study["two"]
    assert "[2/4] s0-pat: in study.csv already, skipped" in study["two"]
    trained = [line.rsplit("version=", 1)[1] for line in study["two"].splitlines() if " pat-seg fit " in line]
    assert trained == ["s1-ce", "s1-pat"]
    assert sorted(path.name for path in (second / "out" / "tiny").iterdir()) == ["s1-ce", "s1-pat"]
    # Every run once per split, in the grid's order (val then test within a run); the first session's
    # lines are unchanged, byte for byte (both sessions logged the same columns).
    lines = csv_lines(second / "study.csv")
    assert [(line["run"], line["split"]) for line in lines] == [
        (f"tiny/{version}", split) for version in VERSIONS for split in ("val", "test")
    ]
    text = (second / "study.csv").read_text()
    assert text.startswith(study["after_first"]) and len(text.splitlines()) == 1 + 8
    # The seeds and labels of each line are what its grid point says.
    by_run = {line["run"]: line for line in lines}
    assert [(by_run[f"tiny/{v}"]["seed"], by_run[f"tiny/{v}"]["data_seed"]) for v in VERSIONS] == [
        ("0", "0"),
        ("0", "0"),
        ("1", "1"),
        ("1", "1"),
    ]
    assert {(line["dataset"], line["method"], line["is_pat"]) for line in lines} == {
        ("Synthetic (imbalance=10)", "CE", "0"),
        ("Synthetic (imbalance=20)", "PAT (T=20)", "1"),
    }


@pytest.mark.slow
def test_the_study_csv_holds_what_the_report_reads_from_the_run_folders(study: dict, tmp_path: Path) -> None:
    """All four run folders in one log directory: `pat-seg report --per-run` of them gives the CSV's
    lines (so the rows two parallel runs wrote are those of their folders), and `--from-csv` the
    report's tables, for val and test (the utilisation table is not in a per-run CSV)."""
    import shutil

    from pat_seg.experiments.report import report

    logs = tmp_path / "logs"
    for session in ("first", "second"):
        shutil.copytree(study[session] / "out", logs, dirs_exist_ok=True)
    lines = csv_lines(study["second"] / "study.csv")
    from_folders = []
    for split in ("val", "test"):
        from_folders += list(csv.DictReader(io.StringIO(report(str(logs), "csv", split, "tiny/*", per_run=True))))
        sections = report(str(logs), split=split, runs="tiny/*").split("### ")
        tables = "### ".join(section for section in sections if not section.startswith("Utilisation"))
        assert report("unused", split=split, from_csv=str(study["second"] / "study.csv")) == tables
        assert "Synthetic (imbalance=20)" in tables
    key = lambda line: (line["run"], line["split"], line["step"])  # noqa: E731
    assert sorted(lines, key=key) == sorted(from_folders, key=key)


@pytest.mark.slow
def test_two_jobs_train_at_the_same_time(study: dict) -> None:
    """With --jobs 2 the two s0 fits are both started before either ends (the next command of a job,
    its test, is started only once its fit ended); each with cores // 2 threads, its output in a log
    of its own. Read from the order of the sweep's lines, not from file times: the tiny runs train
    for well under a second, less than the spread of two process starts on a loaded machine."""
    runs = study["first"] / "out" / "tiny"
    lines = study["one"].splitlines()
    fits = [i for i, line in enumerate(lines) if " pat-seg fit " in line]
    after_a_fit = [i for i, line in enumerate(lines) if " pat-seg test " in line or ": finished" in line]
    assert len(fits) == 2 and len(after_a_fit) == 4 and max(fits) < min(after_a_fit), lines
    assert {version for version in ("s0-ce", "s0-pat") for i in fits if f"version={version} " in lines[i]} == {
        "s0-ce",
        "s0-pat",
    }
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert f"2 runs, 2 at a time with {max(1, cores // 2)} threads each" in study["one"]
    for version in ("s0-ce", "s0-pat"):
        log = (runs / f"sweep-{version}.log").read_text()
        assert "Trainer.fit` stopped" in log and "pat-seg test: metrics written to" in log


@pytest.mark.slow
def test_a_failed_run_writes_no_line_and_is_tried_again(tmp_path: Path) -> None:
    from test_run_safety import pat_seg

    write(tmp_path / "tiny.yaml", TINY)
    # Configured fine, refused by the data module when it is built: the run starts and fails.
    failing = {"args": {"data.init_args.imbalance": 100, "data.init_args.rarity": "infrequent"}}
    write(tmp_path / "study.yaml", dict(STUDY, axes={"seed": {"s0": failing}}))
    for _attempt in range(2):  # failed again: tried again, nothing written
        result = pat_seg("sweep", "study.yaml", "--mode", "run", cwd=tmp_path)
        assert result.returncode == 1 and "pat-seg sweep: 1 of 1 runs failed" in result.stderr, result.stderr[-2000:]
        assert "[1/1] s0: failed with exit code 2" in result.stdout and " pat-seg fit " in result.stdout
        assert not (tmp_path / "study.csv").exists() and not (tmp_path / "out" / "tiny" / "s0" / ".sweep-done").exists()


def test_an_unfinished_run_is_continued_from_its_checkpoint_or_else_set_aside(tmp_path: Path) -> None:
    # s0 was interrupted after its first checkpoint: continued from it (no finished step is trained
    # again). s2 was killed before any checkpoint: its folder is moved aside (a new fit into it would
    # mix its events with the killed run's) and it trains afresh. s3's fit finished (its summary has
    # metrics) but its test failed: only the test runs. s1 is done: skipped, left where it is.
    from pat_seg.experiments.sweep import DONE_MARKER, _plan

    spec = {
        "name": "grid",
        "save_dir": str(tmp_path / "out"),
        "test": "last",
        "axes": {"seed": dict.fromkeys(["s0", "s1", "s2", "s3"], {})},
    }
    sweep = load_sweep(write(tmp_path / "g.yaml", spec))
    interrupted, done, killed, untested = (tmp_path / "out" / "grid" / version for version in ("s0", "s1", "s2", "s3"))
    (interrupted / "checkpoints").mkdir(parents=True)
    (interrupted / "checkpoints" / "last.ckpt").write_bytes(b"interrupted run")
    done.mkdir(parents=True)
    (done / DONE_MARKER).touch()
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "hparams.yaml").write_text("num_classes: 3\n")
    (untested / "checkpoints").mkdir(parents=True)
    (untested / "checkpoints" / "last.ckpt").write_bytes(b"finished run")
    (untested / "hparams.yaml").write_text(yaml.safe_dump({"summary": {"step": 8, "metrics": {"hp/miou": 0.5}}}))
    jobs = {job.run.version: job for job in _plan(sweep, [], False, None)}
    assert sorted(jobs) == ["s0", "s2", "s3"]
    assert jobs["s0"].commands[0][:2] == ["pat-seg", "fit"] and jobs["s0"].commands[0][-1] == "--ckpt_path=last"
    assert (interrupted / "checkpoints" / "last.ckpt").read_bytes() == b"interrupted run"  # left in place
    assert "--ckpt_path=last" not in jobs["s2"].commands[0] and not killed.exists()
    (aside,) = (tmp_path / "out" / ".sweep-incomplete" / "grid").iterdir()
    assert aside.name.startswith("s2-") and (aside / "hparams.yaml").is_file()
    assert [command[:2] for command in jobs["s3"].commands] == [["pat-seg", "test"]]
    assert (done / DONE_MARKER).is_file()
    # --force trains every unfinished run afresh, the one with a checkpoint included.
    forced = {job.run.version: job for job in _plan(sweep, [], True, None)}
    assert "--ckpt_path=last" not in forced["s0"].commands[0] and not interrupted.exists()


def test_a_signal_while_a_run_starts_leaves_no_process_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGTERM delivered inside Popen, after the child exists (as when Popen waits for a slow exec on a
    # loaded machine): the sweep must still know the child, stop it and reap it.
    import pat_seg.experiments.sweep as sweep_module

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen_then_sigterm(*args: object, **kwargs: object) -> subprocess.Popen:
        child = real_popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started.append(child)
        os.kill(os.getpid(), signal.SIGTERM)  # handled before Popen returns
        time.sleep(0.2)  # give the handler its chance to run here, inside "Popen"
        return child

    monkeypatch.setattr(sweep_module.subprocess, "Popen", popen_then_sigterm)
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "g.yaml", {"name": "grid", "save_dir": "out", "axes": SEEDS})
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_all(load_sweep("g.yaml"), [])
        assert exit_info.value.code == 128 + signal.SIGTERM
        assert len(started) == 1  # no second run was started after the signal
        assert started[0].poll() is not None  # stopped and reaped, not left sleeping
    finally:
        for child in started:
            child.kill()
            child.wait()
