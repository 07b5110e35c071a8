"""Interrupts lose nothing: Ctrl-C writes ``last.ckpt``, a resume validates every epoch, a stopped sweep
goes on where it stopped, and ``report`` never counts an unfinished run.

Each run is a real ``pat-seg`` subprocess on CPU (``deterministic: true``) with 4 optimizer steps an
epoch (16 training images, batch 4). Where a test needs a signal to arrive at a known moment, the run
pauses at that step (:class:`PauseAt`) and says so in a marker file the test polls; the test signals it
then, so no test depends on how fast the machine is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from test_resume import MAX_EPOCHS, REPO, STEPS_PER_EPOCH, run_pat_seg, tiny_config
from test_run_safety import pat_seg
from test_sweep import write

from pat_seg.callbacks import PreemptionCheckpoint
from pat_seg.experiments.checkpoint_files import read_checkpoint

TOTAL_STEPS = MAX_EPOCHS * STEPS_PER_EPOCH
NEVER = 1000  # every_n_train_steps of a run whose only checkpoint is the interrupt's


class PauseAt(L.Callback):
    """Test-only: at optimizer step ``step`` write ``marker``, then wait (as if the step were still
    running) until the file ``<marker>.go`` exists, 120 s at most. Once a stop signal is held, it
    writes ``<marker>.held``."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.write_text(str(trainer.global_step))
        held, go = Path(f"{self.marker}.held"), Path(f"{self.marker}.go")
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            if not held.exists() and any(
                isinstance(callback, PreemptionCheckpoint) and callback.requested is not None
                for callback in trainer.callbacks
            ):
                held.write_text("held")
            time.sleep(0.01)


class KillAt(L.Callback):
    """Test-only: SIGKILL this process in ``hook`` (``on_validation_start`` or ``on_train_epoch_end``) of
    epoch ``epoch`` (never in the sanity check)."""

    def __init__(self, hook: str, epoch: int) -> None:
        self.hook, self.epoch = hook, epoch

    def _maybe_kill(self, trainer: L.Trainer, hook: str) -> None:
        if hook == self.hook and trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_kill(trainer, "on_validation_start")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_kill(trainer, "on_train_epoch_end")


def wait_for(path: Path, process: subprocess.Popen, output: Path, seconds: float = 180) -> None:
    """Poll until ``path`` exists; fail with the process's ``output`` if it ends or time runs out first."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"no {path.name} (exit {process.returncode}):\n{output.read_text()[-4000:]}")
        time.sleep(0.05)


def start(command: list[str], cwd: Path, output: Path, new_group: bool = False) -> subprocess.Popen:
    """``python -m pat_seg COMMAND`` in the background, stdout and stderr to the file ``output`` (a pipe
    nobody reads while the test polls could fill up and stall the run). ``new_group``: in a process group
    of its own, as a terminal's foreground job, which Ctrl-C reaches whole."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    with open(output, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pat_seg", *command],
            cwd=cwd,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_group,
        )


def config_file(root: Path, callbacks: list[dict], every_n_train_steps: int) -> Path:
    """The tiny run's config in ``root`` (runs go to ``root/lightning_logs/config/version_N``), with
    ``callbacks`` placed before :class:`PreemptionCheckpoint` (so a pause holds the signal before it)."""
    root.mkdir(parents=True, exist_ok=True)
    config = tiny_config(root, every_n_train_steps=every_n_train_steps)
    config["trainer"]["callbacks"][1:1] = callbacks
    path = root / "config.yaml"
    path.write_text(json.dumps(config))
    return path


def run_folder(root: Path) -> Path:
    return root / "lightning_logs" / "config" / "version_0"


def summary(run: Path) -> dict[str, Any]:
    return yaml.safe_load((run / "hparams.yaml").read_text())["summary"]


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual["global_step"] == expected["global_step"] == TOTAL_STEPS
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), f"{name} differs after resume"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run: its last checkpoint and its summary."""
    root = tmp_path_factory.mktemp("reference")
    result = run_pat_seg(["fit", "--config", str(config_file(root, [], every_n_train_steps=4))])
    assert result.returncode == 0, result.stderr[-3000:]
    run = run_folder(root)
    return {"checkpoint": read_checkpoint(run / "checkpoints" / "last.ckpt"), "summary": summary(run)}


@pytest.mark.slow
def test_ctrl_c_saves_the_finished_step_and_says_how_to_continue(tmp_path: Path, reference: dict) -> None:
    marker = tmp_path / "step"
    pause = {"class_path": "test_interrupts.PauseAt", "init_args": {"step": 2, "marker": str(marker)}}
    output = tmp_path / "fit.log"
    fit = start(["fit", "--config", str(config_file(tmp_path, [pause], every_n_train_steps=NEVER))], REPO, output)
    wait_for(marker, fit, output)  # optimizer step 2 is done; the run is paused inside its batch
    fit.send_signal(signal.SIGINT)
    wait_for(Path(f"{marker}.held"), fit, output)
    Path(f"{marker}.go").touch()
    fit.wait(timeout=180)
    stderr = output.read_text()
    assert fit.returncode == 128 + signal.SIGINT, stderr[-3000:]
    last = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    (line,) = [line for line in stderr.splitlines() if "pre-empted" in line]
    config = run_folder(tmp_path) / "config.yaml"
    assert f"pre-empted by SIGINT at global step 2 (epoch 0): saved {last}" in line, line
    assert line.endswith(f"continue with: pat-seg fit --config {config} --ckpt_path last"), line
    assert "Traceback" not in stderr
    assert read_checkpoint(last)["global_step"] == 2  # the step under way when Ctrl-C came, no more

    # The command the line names continues the run in its folder and ends where the uninterrupted run does.
    resumed = run_pat_seg(["fit", "--config", str(config), "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "global step 2)" in resumed.stderr
    assert_same_weights(read_checkpoint(last), reference["checkpoint"])
    assert summary(run_folder(tmp_path))["metrics"] == reference["summary"]["metrics"]
    assert not (tmp_path / "lightning_logs" / "config" / "version_1").exists()


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path: Path) -> None:
    marker = tmp_path / "step"
    pause = {"class_path": "test_interrupts.PauseAt", "init_args": {"step": 2, "marker": str(marker)}}
    output = tmp_path / "fit.log"
    fit = start(["fit", "--config", str(config_file(tmp_path, [pause], every_n_train_steps=NEVER))], REPO, output)
    wait_for(marker, fit, output)
    fit.send_signal(signal.SIGINT)
    wait_for(Path(f"{marker}.held"), fit, output)  # the first one is held until the step ends ...
    fit.send_signal(signal.SIGINT)  # ... the second one does not wait
    fit.wait(timeout=180)
    stderr = output.read_text()
    assert fit.returncode not in (0, 128 + signal.SIGINT), stderr[-3000:]
    assert "pre-empted" not in stderr
    assert not list((run_folder(tmp_path) / "checkpoints").glob("*"))  # nothing written, not even in part


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hook", "saved_step"),
    [
        # Killed between the final epoch's last step (8) and its validation: that step's checkpoint waits
        # for the validation, so the newest is step 4's, written after epoch 0's validation. (Written at
        # step 8 itself, Lightning would resume past the validation and the run would end without metrics.)
        ("on_validation_start", 4),
        # Killed after the final validation, with step 8 saved: the resume trains nothing, validates
        # nothing, and still ends with the final validation's metrics.
        ("on_train_epoch_end", 8),
    ],
)
def test_a_resume_around_the_last_epochs_validation_ends_with_its_metrics(
    tmp_path: Path, reference: dict, hook: str, saved_step: int
) -> None:
    kill = {"class_path": "test_interrupts.KillAt", "init_args": {"hook": hook, "epoch": MAX_EPOCHS - 1}}
    killed = run_pat_seg(["fit", "--config", str(config_file(tmp_path, [kill], every_n_train_steps=4))])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = run_folder(tmp_path)
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == saved_step
    assert "summary" not in (yaml.safe_load((run / "hparams.yaml").read_text()) or {})

    resumed = run_pat_seg(
        ["fit", "--config", str(config_file(tmp_path, [], every_n_train_steps=4)), "--ckpt_path", "last"]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(read_checkpoint(run / "checkpoints" / "last.ckpt"), reference["checkpoint"])
    assert summary(run)["metrics"] == reference["summary"]["metrics"] != {}


@pytest.mark.slow
def test_a_sweep_stopped_by_ctrl_c_goes_on_from_the_last_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "step"
    pause = {"class_path": "test_interrupts.PauseAt", "init_args": {"step": 2, "marker": str(marker)}}
    config = tiny_config(tmp_path, every_n_train_steps=NEVER)
    config["trainer"]["callbacks"][1:1] = [pause]
    del config["trainer"]["default_root_dir"]
    write(tmp_path / "tiny.yaml", config)
    seeds = {"s0": {"args": {"seed_everything": 0}}, "s1": {"args": {"seed_everything": 1}}}
    write(
        tmp_path / "sweep.yaml", {"name": "tiny", "save_dir": "out", "configs": ["tiny.yaml"], "axes": {"seed": seeds}}
    )
    command = ["sweep", "sweep.yaml", "--mode", "run"]
    output = tmp_path / "sweep.log"
    sweep = start(command, tmp_path, output, new_group=True)
    wait_for(marker, sweep, output)  # run s0 finished step 2
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C: the sweep and its run get it
    wait_for(Path(f"{marker}.held"), sweep, output)
    Path(f"{marker}.go").touch()
    sweep.wait(timeout=180)
    assert sweep.returncode == 128 + signal.SIGINT, output.read_text()[-4000:]
    s0, s1 = tmp_path / "out" / "tiny" / "s0", tmp_path / "out" / "tiny" / "s1"
    assert read_checkpoint(s0 / "checkpoints" / "last.ckpt")["global_step"] == 2 and not s1.exists()
    # Not finished: the report leaves it out and says so.
    report = pat_seg("report", "--logdir", "out", cwd=tmp_path)
    assert report.returncode == 2 and "1 unfinished run" in report.stderr and "out/tiny/s0" in report.stderr

    again = pat_seg(*command, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "[1/2] s0: an unfinished run, continued from its last checkpoint" in again.stdout
    assert f"resuming {Path('out/tiny/s0')} from" in again.stderr and "global step 2)" in again.stderr
    for run in (s0, s1):
        assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == TOTAL_STEPS
        assert summary(run)["metrics"]
    assert not (tmp_path / "out" / ".sweep-incomplete").exists()  # nothing redone from scratch
    report = pat_seg("report", "--logdir", "out", cwd=tmp_path)
    assert report.returncode == 0 and "unfinished" not in report.stdout + report.stderr, report.stderr
    assert "(n=2)" in report.stdout
