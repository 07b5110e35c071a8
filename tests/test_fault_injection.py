"""SIGKILL at 20 random moments, some inside a checkpoint save; every resume ends on the same weights.

A tiny run saves ``last.ckpt`` after every optimizer step. Each process of it is killed by
:class:`KillAt` at a moment drawn from a seeded generator: after a random number of steps, after a
random time (wherever that falls: a step, a save, validation), or half-way through writing a
checkpoint (the bytes written so far stay on disk, as after a real kill). ``pat-seg fit --ckpt_path
last`` then resumes it. The system temp folder is /dev/shm, another filesystem than the run's, where
a checkpoint moved from the temp folder would be copied rather than renamed. The final weights must
equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from test_resume import run_pat_seg, tiny_config

from pat_seg.experiments.checkpoint_files import read_checkpoint

KILLS = 20
# Far more steps than 20 kills can use up: a kill after 1-2 steps or saves moves the run on by at most
# 2 steps, but one after up to 0.6 s moves it on by as many steps as the machine runs in that time
# (over 10 on an idle machine), and every kill must find the run unfinished.
EPOCHS, STEPS_PER_EPOCH = 60, 4
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH


def sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(L.Callback):
    """Test-only: SIGKILL this process after ``count`` steps (``step``), after ``seconds`` of training
    (``timer``), or half-way through writing its ``count``-th checkpoint (``save``)."""

    def __init__(self, moment: str, count: int = 1, seconds: float = 0.0) -> None:
        self.moment, self.count, self.seconds = moment, count, seconds
        self.seen = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.moment == "timer":
            threading.Timer(self.seconds, sigkill).start()
        elif self.moment == "save":
            save = torch.save

            def dying_save(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
                self.seen += 1
                if self.seen < self.count:
                    return save(obj, file, *args, **kwargs)
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                file.flush()
                os.fsync(file.fileno())
                sigkill()

            torch.save = dying_save

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.moment == "step":
            self.seen += 1
            if self.seen == self.count:
                sigkill()


def fit(root: Path, killer: dict[str, Any] | None, resume: bool) -> Any:
    """One ``pat-seg fit`` process of the run in ``root`` (a fixed run folder, as a sweep's). A resume of a
    run killed before its first checkpoint starts it afresh, as ``--ckpt_path last`` then says (and as
    ``pat-seg sweep`` does): its folder is removed first."""
    run = root / "tiny" / "run"
    if resume and not any((run / "checkpoints").glob("*.ckpt")):
        shutil.rmtree(run, ignore_errors=True)
        resume = False
    config = tiny_config(root, [killer] if killer else [], every_n_train_steps=1)
    config["trainer"]["max_epochs"] = EPOCHS
    config["trainer"]["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(root), "name": "tiny", "version": "run"},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(json.dumps(config))
    arguments = ["fit", "--config", str(path), *(["--ckpt_path", "last"] if resume else [])]
    return run_pat_seg(arguments, env={"TMPDIR": "/dev/shm"} if Path("/dev/shm").is_dir() else None)


def moments(generator: random.Random) -> list[dict[str, Any]]:
    """20 kill moments: a third of them inside a checkpoint save, the rest after steps or seconds."""
    chosen = []
    for index in range(KILLS):
        kind = ("save", "step", "timer")[index % 3]
        init = {"moment": kind, "count": generator.randint(1, 2)}
        if kind == "timer":
            init["seconds"] = round(generator.uniform(0.0, 0.6), 3)
        chosen.append({"class_path": "test_fault_injection.KillAt", "init_args": init})
    generator.shuffle(chosen)
    return chosen


@pytest.mark.slow
def test_twenty_kills_then_resumes_end_on_the_uninterrupted_weights(tmp_path: Path) -> None:
    reference = fit(tmp_path / "reference", None, resume=False)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = read_checkpoint(tmp_path / "reference" / "tiny" / "run" / "checkpoints" / "last.ckpt")
    assert expected["global_step"] == TOTAL_STEPS

    root, last = tmp_path / "killed", tmp_path / "killed" / "tiny" / "run" / "checkpoints" / "last.ckpt"
    survived = []
    for number, killer in enumerate(moments(random.Random(20)), 1):
        result = fit(root, killer, resume=True)
        assert result.returncode == -signal.SIGKILL, f"kill {number} ({killer['init_args']}): {result.stderr[-3000:]}"
        assert "cannot read" not in result.stderr
        if last.exists():
            survived.append(read_checkpoint(last)["global_step"])  # whole after every kill
    assert len(survived) >= KILLS - 2 and survived == sorted(survived) and survived[-1] < TOTAL_STEPS
    finished = fit(root, None, resume=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    actual = read_checkpoint(last)
    assert actual["global_step"] == TOTAL_STEPS
    assert actual["state_dict"].keys() == expected["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], value), f"{name} differs after {KILLS} kills"
    assert not list(last.parent.glob(".*.partial"))  # the last save removed what the kills left
