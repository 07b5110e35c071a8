"""Fault tolerance end to end: SIGKILL mid-epoch + ``--ckpt_path last`` == uninterrupted; SIGTERM checkpoints.

SIGINT, the held signals' stopping points and the end-of-epoch cases are in tests/test_interrupts.py.

Each run is a real ``python -m pat_seg fit`` subprocess on CPU with deterministic settings. The
reference is an uninterrupted run with the same config; a resumed run must end on bit-identical
weights, which holds only if the optimizer, scheduler, step counter AND the position in the
shuffled epoch are all restored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 4  # 16 training images, batch 4
MAX_EPOCHS = 2


class SignalAtStep(L.Callback):
    """Test-only: send ``signal`` to this very process once ``global_step`` reaches ``step`` or, with
    ``during_step``, while the trainer takes optimizer step ``step`` (from its batch's start, as a
    signal from outside mostly arrives)."""

    def __init__(self, step: int, signal: str = "SIGKILL", during_step: bool = False) -> None:
        self.step, self.during_step = step, during_step
        self.signum = getattr(__import__("signal"), signal)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.during_step and trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.during_step and trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def tiny_config(root: Path, extra_callbacks: list[dict] = (), every_n_train_steps: int = 3) -> dict:
    """A config small enough for 2 shared CPU cores; YAML is a superset of JSON, so it is written as JSON."""
    return {
        "seed_everything": 0,
        "trainer": {
            "default_root_dir": str(root),
            "accelerator": "cpu",
            "max_epochs": MAX_EPOCHS,
            "deterministic": True,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "callbacks": [
                {
                    "class_path": "pat_seg.callbacks.StepCheckpoint",
                    "init_args": {"every_n_train_steps": every_n_train_steps},
                },
                {"class_path": "pat_seg.callbacks.PreemptionCheckpoint"},
                {"class_path": "pat_seg.callbacks.NonFiniteLossGuard"},
                *extra_callbacks,
            ],
        },
        "model": {"model": {"init_args": {"base_channels": 4, "depth": 2}}},
        "data": {"init_args": {"num_train": 16, "num_val": 4, "num_test": 4, "image_size": 32, "batch_size": 4}},
    }


def run_pat_seg(
    args: list[str], timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m pat_seg ARGS`` with this checkout (and tests/, for test-only callbacks) importable."""
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    environment.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "pat_seg", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fit(root: Path, extra_callbacks: list[dict] = (), resume: bool = False) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(json.dumps(tiny_config(root, list(extra_callbacks))))
    return run_pat_seg(["fit", "--config", str(config), *(["--ckpt_path", "last"] if resume else [])])


def last_checkpoint(root: Path, version: int) -> dict:
    # The experiment is named after the config file, config.yaml.
    path = root / "lightning_logs" / "config" / f"version_{version}" / "checkpoints" / "last.ckpt"
    assert path.is_file(), f"no {path}"
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual["global_step"] == expected["global_step"] == MAX_EPOCHS * STEPS_PER_EPOCH
    assert actual["state_dict"].keys() == expected["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), f"{name} differs after resume"


@pytest.fixture(scope="module")
def interrupted_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Reference, SIGKILL-ed and SIGTERM-ed runs, started together (the machine has 2 cores)."""
    base = tmp_path_factory.mktemp("resume")
    # Step 7 is the 3rd batch of epoch 2; the last step checkpoint (every 3) is step 6, mid-epoch.
    kill = {"class_path": "test_resume.SignalAtStep", "init_args": {"step": 7, "signal": "SIGKILL"}}
    term = {
        "class_path": "test_resume.SignalAtStep",
        "init_args": {"step": 5, "signal": "SIGTERM", "during_step": True},
    }
    with ThreadPoolExecutor(3) as pool:
        runs = dict(
            zip(
                ("reference", "killed", "terminated"),
                pool.map(
                    lambda job: fit(*job),
                    [(base / "reference",), (base / "killed", [kill]), (base / "terminated", [term])],
                ),
            )
        )
    assert runs["reference"].returncode == 0, runs["reference"].stderr[-3000:]
    return {"base": base, **runs}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(interrupted_runs: dict[str, Any]) -> None:
    base = interrupted_runs["base"]
    assert interrupted_runs["killed"].returncode == -signal.SIGKILL
    saved = last_checkpoint(base / "killed", 0)
    assert saved["global_step"] == 6 and saved["epoch"] == 1  # mid-epoch: 2 of the epoch's 4 batches done
    resumed = fit(base / "killed", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    # Resumed in place: the same run folder, no second version.
    assert_same_weights(last_checkpoint(base / "killed", 0), last_checkpoint(base / "reference", 0))
    assert not (base / "killed" / "lightning_logs" / "config" / "version_1").exists()


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_that_resumes_to_the_same_weights(interrupted_runs: dict[str, Any]) -> None:
    base = interrupted_runs["base"]
    terminated = interrupted_runs["terminated"]
    assert terminated.returncode == 128 + signal.SIGTERM, terminated.stderr[-3000:]
    assert "pre-empted by SIGTERM at global step 5" in terminated.stderr, terminated.stderr[-3000:]
    saved = last_checkpoint(base / "terminated", 0)
    assert saved["global_step"] == 5  # it stopped after finishing the step during which the signal came
    resumed = fit(base / "terminated", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(last_checkpoint(base / "terminated", 0), last_checkpoint(base / "reference", 0))
