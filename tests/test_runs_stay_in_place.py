"""Hostile run names, second fits, sweep scripts and prediction names: every run stays where it belongs.

- A name or version that is not one folder name (``../../x``, an absolute path, a line break) is
  refused with exit 2 before anything is written, wherever it comes from: a flag, a config file, the
  logger's options, a sweep's axis.
- A ``fit`` without ``--ckpt_path`` into a run folder that holds a run (a sweep's fixed version)
  leaves every file of it byte-identical.
- A SLURM script runs exactly the sweep's commands: values with line breaks are quoted or refused.
- ``pat-seg sweep --mode run`` never imports a ``pat_seg.py`` or ``lightning.py`` lying in the folder it runs in.
- Prediction outputs never share a file, and an image whose output name is too long is skipped,
  named and counted while the rest of the folder is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import lightning as L
import numpy as np
import pytest
import yaml
from PIL import Image
from test_predict_output import ThresholdNet
from test_run_safety import digest, pat_seg, short_error, write
from test_sweep import TINY

from pat_seg.callbacks import PredictionWriter
from pat_seg.callbacks.predictions import class_palette
from pat_seg.data import ImageFolderDataModule
from pat_seg.exceptions import ConfigurationError
from pat_seg.experiments import sweep as sweep_module
from pat_seg.experiments.run_folder import ResumeError, RunFolder, folder_name, refuse_existing_run
from pat_seg.experiments.sweep import load_sweep, slurm_script
from pat_seg.losses import CrossEntropyLoss
from pat_seg.module import SegmentationModule

LOGGER = "--trainer.logger.class_path=lightning.pytorch.loggers.TensorBoardLogger"
VICTIM = "victim config.yaml: must stay as it is\n"


def logged(save_dir: str, name: str, version: str) -> list[str]:
    """The TensorBoard logger flags `pat-seg sweep` gives each run's fit: a fixed folder."""
    return [
        LOGGER,
        f"--trainer.logger.init_args.save_dir={save_dir}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.logger.init_args.version={version}",
    ]


def sweep_file(path: Path, **spec: object) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --- names and versions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, reason",
    [
        ("../../escape", "path separator"),
        ("/tmp/elsewhere", "path separator"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("", "empty"),
        ("a\nb", "control character"),
        ("a\0b", "control character"),
        ("a\\b", "path separator"),
        ("é" * 128, "256 bytes long"),  # 2 bytes a character in UTF-8
    ],
)
def test_a_value_that_is_not_one_folder_name_is_refused_naming_it(value: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        folder_name(value, "--name")
    assert f"--name {value!r} cannot name a run folder: it" in str(refused.value) and reason in str(refused.value)


@pytest.mark.parametrize("value", ["cityscapes_pat", "version_3", "pat-s0", "a.b", "é" * 127, "x" * 255])
def test_one_folder_name_is_accepted_as_it_is(value: str) -> None:
    assert folder_name(value, "--name") == value


def test_an_int_logger_version_is_lightnings_version_folder() -> None:
    assert RunFolder.of_logger(Path("logs"), "exp", 3).path == Path("logs/exp/version_3")
    assert RunFolder.of_logger(Path("logs"), "exp", None).path is None  # the next free version_N
    with pytest.raises(ConfigurationError, match=r"logger's version .*'\.\./x' cannot name a run folder"):
        RunFolder.of_logger(Path("logs"), "exp", "../x")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``tmp_path/project/sub`` to run in, and ``tmp_path/victim/config.yaml``: an escape's target."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "config.yaml").write_text(VICTIM)
    (tmp_path / "project" / "sub").mkdir(parents=True)
    return tmp_path / "project" / "sub"


@pytest.mark.parametrize(
    "args, value",
    [
        # The logger's version: logs/exp/../../../../victim is tmp_path/victim, whose config.yaml a fit overwrote.
        (logged("logs", "exp", "../../../../victim"), "../../../../victim"),
        pytest.param(["--name", "../../escape"], "../../escape", marks=pytest.mark.slow),
        # absolute: lightning_logs/<absolute> is the absolute path
        pytest.param(["--name", "{victim}"], "{victim}", marks=pytest.mark.slow),
        pytest.param(["--name", "tiny\nrm -rf ~"], "tiny\nrm -rf ~", marks=pytest.mark.slow),
        pytest.param(["--config", "escape.yaml"], "../../../victim", marks=pytest.mark.slow),  # name: in a config file
        pytest.param(logged("logs", "..", "v0"), "..", marks=pytest.mark.slow),
        # A CSVLogger's name and version are folders inside its save dir as well.
        pytest.param(
            ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", *logged("logs", "exp", "../../../../victim")[1:]],
            "../../../../victim",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_run_name_that_leaves_the_save_dir_is_refused_before_anything_is_written(
    tmp_path: Path, project: Path, args: list[str], value: str
) -> None:
    victim = str(tmp_path / "victim")
    args, value = [arg.replace("{victim}", victim) for arg in args], value.replace("{victim}", victim)
    write(project / "escape.yaml", {"name": "../../../victim"})
    before = digest(tmp_path)
    result = pat_seg("fit", *args, cwd=project)
    short_error(result, repr(value), "cannot name a run folder", "one folder name inside the save dir")
    assert result.returncode == 2
    assert digest(tmp_path) == before  # nothing written, in the project or beside it


def test_a_sweep_axis_that_leaves_the_save_dir_is_refused_before_any_run(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    sweep_file(project / "g.yaml", name="grid", save_dir="out", axes={"seed": {"s0": {}, "../../../victim": {}}})
    monkeypatch.chdir(project)
    before = digest(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main(["g.yaml", "--mode", "run"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(error.strip().splitlines()) == 1, error
    assert "g.yaml: the run version (its axis values joined by '-') '../../../victim' cannot name a run folder" in error
    assert digest(tmp_path) == before


@pytest.mark.parametrize("name", ["../escape", "grid\ntouch INJECTED"])
def test_a_sweep_name_that_is_not_one_folder_name_is_refused_in_every_mode(tmp_path: Path, name: str) -> None:
    path = sweep_file(tmp_path / "g.yaml", name=name, axes={"seed": {"s0": {}}})
    with pytest.raises(ConfigurationError, match="the sweep's name .* cannot name a run folder"):
        load_sweep(path)


# --- a second fit into a run's folder ----------------------------------------------------------------------
def fill_run(run: Path) -> None:
    """The files a finished fit leaves in its folder (their contents do not matter to the refusal)."""
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "hparams.yaml", "events.out.tfevents.1.host.1.0"):
        (run / name).write_text(f"the first run's {name}\n")
    for name in ("last.ckpt", "epoch000-miou0.5000.ckpt"):
        (run / "checkpoints" / name).write_bytes(f"the first run's {name}".encode())


@pytest.mark.parametrize("version, folder", [("s0", "s0"), pytest.param("0", "version_0", marks=pytest.mark.slow)])
def test_a_second_fit_into_a_runs_folder_is_refused_and_leaves_every_file_as_it_was(
    tmp_path: Path, version: str, folder: str
) -> None:
    run = tmp_path / "out" / "grid" / folder
    fill_run(run)
    before = digest(tmp_path)
    result = pat_seg("fit", *logged("out", "grid", version), cwd=tmp_path)
    short_error(result, f"run folder {Path('out') / 'grid' / folder} exists already", "--ckpt_path last", "delete")
    assert result.returncode == 2 and digest(tmp_path) == before


def test_only_a_run_folder_that_holds_files_is_refused(tmp_path: Path) -> None:
    refuse_existing_run(None)  # logs elsewhere
    refuse_existing_run(RunFolder(tmp_path, "exp"))  # a new version_N
    refuse_existing_run(RunFolder(tmp_path, "exp", "s0"))  # not there yet
    (tmp_path / "exp" / "s0").mkdir(parents=True)
    refuse_existing_run(RunFolder(tmp_path, "exp", "s0"))  # there, empty: nothing to overwrite
    (tmp_path / "exp" / "s0" / "hparams.yaml").write_text("{}")
    with pytest.raises(ResumeError, match="exists already"):
        refuse_existing_run(RunFolder(tmp_path, "exp", "s0"))


# --- the SLURM script ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, key",
    [
        ({"slurm": {"time": "01:00:00\ntouch INJECTED"}}, "slurm: 'time'"),
        ({"slurm": {"gres\ntouch INJECTED": "gpu:1"}}, "slurm: 'gres\\ntouch INJECTED'"),
        ({"save_dir": "out\ntouch INJECTED"}, "save_dir"),
    ],
)
def test_a_line_break_in_an_sbatch_value_is_refused_naming_its_key(
    tmp_path: Path, spec: dict, key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    path = sweep_file(tmp_path / "g.yaml", name="grid", axes={"seed": {"s0": {}}}, **spec)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main([str(path), "--mode", "slurm"])
    out, error = capsys.readouterr()
    assert exit_info.value.code == 2 and out == "" and len(error.strip().splitlines()) == 1, error
    assert f"pat-seg sweep: error: sweep {key}: " in error and "line break" in error


@pytest.mark.slow
def test_a_line_break_in_an_sbatch_value_is_refused_by_the_console_script(tmp_path: Path) -> None:
    path = sweep_file(tmp_path / "g.yaml", name="grid", axes={"seed": {"s0": {}}}, slurm={"time": "1:00\ntouch X"})
    result = pat_seg("sweep", str(path), "--mode", "slurm", cwd=tmp_path)
    short_error(result, "sweep slurm: 'time': '1:00\\ntouch X' holds a line break")
    assert result.returncode == 2 and result.stdout == ""


def test_a_line_break_in_a_runs_flags_stays_inside_its_argument(tmp_path: Path) -> None:
    """The script parses (``bash -n``) and, run as task 0 with a stand-in ``pat-seg`` that records its
    arguments, passes the hostile value as one argument; the line after the break never runs."""
    hostile = f"x\ntouch {tmp_path / 'INJECTED'}\n'; touch {tmp_path / 'QUOTED'}; '"
    sweep = load_sweep(
        sweep_file(tmp_path / "g.yaml", name="grid", save_dir="out", axes={"seed": {"s0": {"args": {"note": hostile}}}})
    )
    script = tmp_path / "job.sh"
    script.write_text(slurm_script(sweep, [f"--extra={hostile}"]))
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert script.read_text().splitlines()[1:4] == [
        "#SBATCH --job-name=grid",
        "#SBATCH --array=0-0",
        "#SBATCH --output=out/grid/slurm-%A_%a.out",
    ]
    assert [line for line in script.read_text().splitlines() if not line.startswith("#")][0] == "set -euo pipefail"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pat-seg").write_text(f"#!/bin/bash\nprintf '%s\\0' \"$@\" > {tmp_path / 'args'}\n")
    (bin_dir / "pat-seg").chmod(0o755)
    (tmp_path / "out" / "grid" / "s0").mkdir(parents=True)
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "0"}
    ran = subprocess.run(["bash", str(script)], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    received = (tmp_path / "args").read_text().split("\0")[:-1]
    assert received == sweep.runs[0].command("grid", "out", [f"--extra={hostile}"])[1:]
    assert f"--note={hostile}" in received and f"--extra={hostile}" in received
    assert not (tmp_path / "INJECTED").exists() and not (tmp_path / "QUOTED").exists()
    assert (tmp_path / "out" / "grid" / "s0" / ".sweep-done").is_file()  # the line after the command ran
    # Requeued after a pre-emption (its run saved a checkpoint): the task continues the run.
    (tmp_path / "out" / "grid" / "s0" / "checkpoints").mkdir()
    (tmp_path / "out" / "grid" / "s0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    ran = subprocess.run(["bash", str(script)], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    received = (tmp_path / "args").read_text().split("\0")[:-1]
    assert received == [*sweep.runs[0].command("grid", "out", [f"--extra={hostile}"])[1:], "--ckpt_path=last"]


# --- sweep runs do not import from the current folder -------------------------------------------------------
SHADOW = "import pathlib\npathlib.Path({marker!r}).write_text('imported {module} from the current folder')\n"


@pytest.mark.slow
def test_sweep_runs_never_import_modules_from_the_current_folder(tmp_path: Path) -> None:
    markers = {module: tmp_path / f"IMPORTED_{module}" for module in ("pat_seg", "lightning")}
    for module, marker in markers.items():
        (tmp_path / f"{module}.py").write_text(SHADOW.format(marker=str(marker), module=module))
    # The planted files shadow the real modules for a plain `python -m pat_seg` started here.
    plain = subprocess.run([sys.executable, "-m", "pat_seg", "--help"], cwd=tmp_path, capture_output=True)
    assert plain.returncode == 0 and markers["pat_seg"].is_file()
    markers["pat_seg"].unlink()
    # A run that configures (read by the study's config process) and fails as the data module is built:
    # both of the sweep's processes start, and the refusal comes from the real pat-seg.
    write(tmp_path / "tiny.yaml", TINY)
    failing = {"args": {"data.init_args.imbalance": 100, "data.init_args.rarity": "infrequent"}}
    axes = {"seed": {"s0": failing}}
    sweep_file(tmp_path / "g.yaml", name="grid", save_dir="out", configs=["tiny.yaml"], csv="study.csv", axes=axes)
    result = pat_seg("sweep", "g.yaml", "--mode", "run", cwd=tmp_path)
    assert "reading the configs of the 1 runs of 'grid'" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "[1/1] s0: failed with exit code 2" in result.stdout, result.stdout + result.stderr[-2000:]
    assert not any(marker.exists() for marker in markers.values())


def test_a_pat_seg_found_only_beside_the_current_folder_comes_first_on_the_childs_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's pat_seg is found on its path: the child's PYTHONPATH is the caller's, untouched.
    monkeypatch.setenv("PYTHONPATH", "/users/own/classes")
    assert sweep_module.child_environment(os.environ)["PYTHONPATH"] == "/users/own/classes"
    assert sweep_module.child_environment(os.environ)["PYTHONSAFEPATH"] == "1"
    # A pat_seg imported from a source checkout that no path entry leads to: that checkout leads.
    checkout = tmp_path / "checkout"
    (checkout / "pat_seg").mkdir(parents=True)
    (checkout / "pat_seg" / "__init__.py").write_text("")
    elsewhere = ModuleType("pat_seg")
    elsewhere.__file__ = str(checkout / "pat_seg" / "__init__.py")
    monkeypatch.setitem(sys.modules, "pat_seg", elsewhere)
    environment = sweep_module.child_environment(os.environ)
    assert environment["PYTHONPATH"] == os.pathsep.join([str(checkout), "/users/own/classes"])


# --- prediction outputs ----------------------------------------------------------------------------------------
def predict_folder(photos: Path, out: Path, overlay: bool = True) -> PredictionWriter:
    data = ImageFolderDataModule(str(photos), num_classes=3, batch_size=8)
    writer = PredictionWriter(overlay=overlay, output_dir=str(out))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[writer]
    )
    trainer.predict(SegmentationModule(ThresholdNet(), CrossEntropyLoss(), num_classes=3), datamodule=data)
    return writer


def red_image(path: Path, red: int) -> None:
    """An 8x8 image of one red value: ThresholdNet predicts class 2 above 0.5 (red 250), else class 0 (red 10)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), (red, 0, 0), dtype=np.uint8)).save(path)


def test_an_image_named_like_anothers_overlay_gets_outputs_of_its_own(tmp_path: Path) -> None:
    red_image(tmp_path / "photos" / "x.png", 250)  # class 2
    red_image(tmp_path / "photos" / "x_overlay.png", 10)  # class 0
    writer = predict_folder(tmp_path / "photos", tmp_path / "out")
    out = tmp_path / "out"
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    assert written == ["labels/x.png", "labels/x_overlay.png", "overlays/x.png", "overlays/x_overlay.png"]
    assert writer.written == 2
    assert (np.asarray(Image.open(out / "labels" / "x.png")) == 2).all()
    assert (np.asarray(Image.open(out / "labels" / "x_overlay.png")) == 0).all()
    # Each overlay paints its own image's class: half its palette colour, half the image, which both
    # images show pure red (each image is stretched to its own range, here 0 to its red).
    palette = class_palette(3).numpy().astype(float) * 255
    for name, label in {"x.png": 2, "x_overlay.png": 0}.items():
        painted = np.asarray(Image.open(out / "overlays" / name)).astype(float)[:8, :8]
        expected = (palette[label] + [255, 0, 0]) / 2
        np.testing.assert_allclose(painted, np.broadcast_to(expected, painted.shape), atol=1)


def test_an_image_whose_output_name_is_too_long_is_skipped_named_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    photos = tmp_path / "photos"
    long_png = "l" * 248 + ".png"  # 252 bytes: its outputs' names are 252 bytes too, under the 255 limit
    stem = "s" * 250  # s.jpeg (255 bytes) beside s.png: their outputs s_jpeg.png and s_png.png are 260 and 259
    for name, red in {long_png: 250, "good.png": 10, f"{stem}.jpeg": 250, f"{stem}.png": 10}.items():
        red_image(photos / name, red)
    writer = predict_folder(photos, tmp_path / "out")
    out = tmp_path / "out"
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    assert written == [f"{kind}/{name}" for kind in ("labels", "overlays") for name in ("good.png", "l" * 248 + ".png")]
    assert (np.asarray(Image.open(out / "labels" / long_png)) == 2).all()
    assert (writer.written, writer.too_long, writer.skipped) == (2, 2, 0)
    for skipped in (f"{stem}.jpeg", f"{stem}.png"):
        assert f"{photos / skipped}: its output name is too long for the file system" in caplog.text
    assert "wrote 2 label maps" in caplog.text and "skipped 2 image(s) whose output name is too long" in caplog.text


@pytest.mark.slow
def test_predict_writes_every_hostile_names_outputs_through_the_console_script(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    stem = "s" * 250
    for name in ("x.png", "x_overlay.png", "l" * 248 + ".png", f"{stem}.jpeg", f"{stem}.png"):
        red_image(photos / name, 250)
    tiny = ["--model.model.init_args.base_channels=4", "--model.model.init_args.depth=1", "--predictions.overlay=true"]
    result = pat_seg(
        "predict", "--data=ImageFolderDataModule", f"--data.root={photos}", "--data.num_classes=3", *tiny, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "lightning_logs" / "default" / "version_0" / "predictions_photos"
    names = ["l" * 248 + ".png", "x.png", "x_overlay.png"]
    written = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png"))
    assert written == [f"{kind}/{name}" for kind in ("labels", "overlays") for name in names]
    assert (
        f"wrote 3 label maps to {folder / 'labels'} and overlays to {folder / 'overlays'}; "
        "skipped 2 image(s) whose output name is too long, named above" in result.stderr
    )
    assert f"{photos / (stem + '.jpeg')}: its output name is too long" in result.stderr
