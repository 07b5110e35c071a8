"""Configs by name from any folder: ``--config cityscapes_pat.yaml`` reads the config pat-seg ships.

In this checkout the shipped configs are the repository's ``configs/``; a wheel carries them as
``pat_seg/configs/``. The slow tests build a wheel and an editable install of a copy of the
repository, install each into a fresh virtual environment and run the console script from an empty
folder. Expected values are read off the YAML files by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from test_run_safety import REPO, short_error

from pat_seg.cli import cli_main
from pat_seg.cli.help import top_level_help
from pat_seg.cli.saved_config import saved_config
from pat_seg.config_files import shipped_config, with_shipped_configs
from pat_seg.exceptions import ConfigurationError
from pat_seg.experiments.sweep import load_sweep

CONFIGS = REPO / "configs"


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder outside the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_name_that_is_no_file_here_is_a_shipped_config(elsewhere: Path) -> None:
    assert shipped_config("cityscapes_pat.yaml") == CONFIGS / "cityscapes_pat.yaml"
    assert shipped_config("configs/cityscapes_pat.yaml") == CONFIGS / "cityscapes_pat.yaml"
    assert shipped_config("configs/loss/pat.yaml") == CONFIGS / "loss" / "pat.yaml"
    assert shipped_config("model/deeplabv3plus.yaml") == CONFIGS / "model" / "deeplabv3plus.yaml"
    assert shipped_config("sweeps/table3.yaml") == CONFIGS / "sweeps" / "table3.yaml"
    assert shipped_config("default.yaml") == REPO / "pat_seg" / "configs" / "default.yaml"
    for unknown in ("nothing.yaml", "configs/nothing.yaml", "cityscapes_pat", "loss/pat.json"):
        assert shipped_config(unknown) is None, unknown
    assert shipped_config(CONFIGS / "cityscapes_pat.yaml") is None  # absolute: taken as it is
    (elsewhere / "cityscapes_pat.yaml").write_text("trainer: {max_epochs: 1}\n")
    assert shipped_config("cityscapes_pat.yaml") is None  # a file here comes first


def test_arguments_name_shipped_configs_and_pieces(elsewhere: Path) -> None:
    (elsewhere / "mine.yaml").write_text("trainer: {max_epochs: 1}\n")
    given = [
        "fit",
        "--config",
        "cityscapes_pat.yaml",
        "--config=model/segnet.yaml",
        "-c",
        "mine.yaml",
        "--data",
        "configs/data/camvid.yaml",
        "--trainer.max_epochs=3",
        "--name",
        "unknown.yaml",
    ]
    assert with_shipped_configs(given) == [
        "fit",
        "--config",
        str(CONFIGS / "cityscapes_pat.yaml"),
        f"--config={CONFIGS / 'model' / 'segnet.yaml'}",
        "-c",
        "mine.yaml",
        "--data",
        str(CONFIGS / "data" / "camvid.yaml"),
        "--trainer.max_epochs=3",
        "--name",
        "unknown.yaml",
    ]


def test_a_shipped_config_and_its_nested_pieces_configure_a_run_from_any_folder(elsewhere: Path) -> None:
    cityscapes = saved_config(["fit", "--config", "cityscapes_pat.yaml"])
    assert cityscapes["name"] == "cityscapes_pat"
    assert cityscapes["trainer"]["max_steps"] == 30000
    assert cityscapes["model"]["model"]["class_path"] == "pat_seg.models.SegNet"
    assert cityscapes["model"]["model"]["init_args"]["base_channels"] == 64
    assert cityscapes["model"]["loss"]["class_path"] == "pat_seg.losses.PATLoss"  # loss: loss/pat.yaml
    assert cityscapes["data"]["class_path"] == "pat_seg.data.CityscapesDataModule"  # data: data/cityscapes_paper.yaml
    assert cityscapes["data"]["init_args"]["size"] == [256, 512]
    # camvid_pat.yaml's trainer, network and data are pieces (camvid/trainer.yaml, camvid/network.yaml,
    # data/camvid.yaml); a model piece composed over it by name.
    camvid = saved_config(["fit", "--config", "configs/camvid_pat.yaml", "--config", "model/segnet.yaml"])
    assert camvid["trainer"]["max_epochs"] == 40
    assert camvid["data"]["init_args"]["void_values"] == [11]
    assert camvid["model"]["model"]["class_path"] == "pat_seg.models.SegNet"


def test_a_shipped_sweep_by_name(elsewhere: Path) -> None:
    sweep = load_sweep("sweeps/synthetic_table3.yaml")
    assert sweep.name == "synthetic_table3" and len(sweep.runs) == 8 * 3  # 8 losses x 3 seeds
    assert sweep.runs[0].configs == ["configs/synthetic_ce.yaml"]  # resolved by `pat-seg fit` itself


def test_a_missing_config_says_where_configs_come_from(elsewhere: Path) -> None:
    with pytest.raises(ConfigurationError) as missing:
        cli_main(["fit", "--config", "nothing.yaml"], run=False)
    assert "nothing.yaml" in str(missing.value)
    assert "--config takes a file, or a config pat-seg ships by its name" in str(missing.value)
    assert "cityscapes_pat.yaml" in top_level_help() and "PAT_SEG_MAX_IMAGE_PIXELS" in top_level_help()


# --- installed: the built wheel, and an editable install -------------------------------------------------
SOURCES = ("pat_seg", "configs", "pyproject.toml", "README.md", "MANIFEST.in", "build_configs.py")


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def build(source: Path, out: Path, kind: str) -> Path:
    """``build_sdist``, ``build_wheel`` or ``build_editable`` of the setuptools backend in ``source``,
    offline (no build isolation); the file made."""
    script = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(out)!r}))"
    result = run([sys.executable, "-c", script], cwd=source)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


def installed_wheel(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A copy of the repository built as ``kind`` (``wheel``: as ``python -m build`` does, from the
    unpacked sdist; ``editable``: as ``pip install -e`` does) and installed into a fresh virtual
    environment; ``(the wheel, the environment)``."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:  # what the repository holds, without build leftovers
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    if kind == "wheel":
        sdist = build(source, tmp_path / "dist", "sdist")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp_path / "unpacked", filter="data")
        source = next((tmp_path / "unpacked").iterdir())
    wheel = build(source, tmp_path / "dist", kind)
    # This environment's dependencies (torch, Lightning) go on the new one's path after the install, so
    # pip never sees this environment's own pat-seg.
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path).returncode == 0
    python = str(venv / "bin" / "python")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", str(wheel)]
    installed = run(install, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return wheel, venv


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_an_installed_pat_seg_runs_shipped_configs_from_an_empty_folder(tmp_path: Path, kind: str) -> None:
    wheel, venv = installed_wheel(tmp_path, kind)
    if kind == "wheel":
        shipped = {
            name.removeprefix("pat_seg/configs/") for name in zipfile.ZipFile(wheel).namelist() if "/configs/" in name
        }
        assert shipped == {path.relative_to(CONFIGS).as_posix() for path in CONFIGS.rglob("*.yaml")} | {"default.yaml"}
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PAT_SEG_DEBUG")}
    env["OMP_NUM_THREADS"] = "1"
    where = run([str(venv / "bin" / "python"), "-c", "import pat_seg; print(pat_seg.__file__)"], cwd=empty, env=env)
    package = venv if kind == "wheel" else tmp_path / "source"  # an editable install runs the source copy
    assert Path(where.stdout.strip()).is_relative_to(package), where.stdout + where.stderr[-2000:]
    pat_seg = str(venv / "bin" / "pat-seg")
    printed = run([pat_seg, "fit", "--config", "cityscapes_pat.yaml", "--print_config"], cwd=empty, env=env)
    assert printed.returncode == 0, printed.stderr[-3000:]
    for value in ("class_path: pat_seg.models.SegNet", "class_path: pat_seg.losses.PATLoss", "max_steps: 30000"):
        assert value in printed.stdout, value
    without_data = run([pat_seg, "fit", "--config", "cityscapes_pat.yaml"], cwd=empty, env=env)
    assert without_data.returncode == 2, without_data.stderr[-3000:]
    short_error(without_data, "pat-seg fit: error: data/cityscapes does not exist")
    assert sorted(empty.iterdir()) == []  # nothing written
