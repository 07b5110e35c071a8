"""pat-seg sweep: grid expansion, the commands it prints, the SLURM array, and what the CLI makes of them."""

from __future__ import annotations

import shlex
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
    # The bash array holds exactly the printed commands, in order: task i runs command i.
    body = script.split("COMMANDS=(\n")[1].split("\n)")[0].splitlines()
    assert [shlex.split(line.strip())[0] for line in body] == print_commands(sweep, []).splitlines()
    assert script.rstrip().endswith('eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"')


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
        ({"axes": {"loss": {"pat": {"config": "x.yaml"}}}}, "must be a mapping with 'configs' and/or 'args'"),
        ({"axes": {"loss": {"pat": {"configs": "{dataset}.yaml"}}}}, "refers to 'dataset' but the axes are ['loss']"),
        ({"axes": {"loss": {"pat": {"args": ["seed_everything", 1]}}}}, "must be a mapping of flag -> value"),
        ({"axis": {}}, "unknown keys ['axis']"),
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
    with pytest.raises(ValueError, match=r"do not exist: \['base.yaml', 'configs/cityscapes_ce.yaml'"):
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
    import signal

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
