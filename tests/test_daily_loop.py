"""The researcher's daily loop, through the ``pat-seg`` console script as a user types it.

Two configs x two seeds at a tiny budget; one run SIGKILL-ed mid-run and resumed with
``--ckpt_path last``; ``test`` and ``predict`` from a run; then ``report``. What must hold: one
folder per run, named for its config; the resumed run's TensorBoard steps continuous and never
repeated; test metrics and prediction PNGs inside the run's folder; report rows that keep the two
configs apart, each pooling its two seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
PAT_SEG = str(Path(sys.executable).parent / "pat-seg")
IMAGE_SIZE, NUM_TRAIN, BATCH, EPOCHS = 32, 16, 4, 3
STEPS = NUM_TRAIN // BATCH * EPOCHS  # 12 optimizer steps a run


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([PAT_SEG, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"pat-seg {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result


def write_config(path: Path, loss: str, callbacks: list[dict] = ()) -> Path:
    """A tiny experiment; YAML is a superset of JSON."""
    config = {
        "trainer": {
            "max_epochs": EPOCHS,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "accelerator": "cpu",
            "deterministic": True,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"monitor": "val/miou", "mode": "max"},
                },
                {"class_path": "pat_seg.callbacks.StepCheckpoint", "init_args": {"every_n_train_steps": 3}},
                *callbacks,
            ],
        },
        "model": {
            "model": {"class_path": "pat_seg.models.UNet", "init_args": {"base_channels": 4, "depth": 2}},
            "loss": {"class_path": f"pat_seg.losses.{loss}"},
        },
        "data": {
            "class_path": "pat_seg.data.SyntheticLongTailDataModule",
            "init_args": {
                "num_train": NUM_TRAIN,
                "num_val": 4,
                "num_test": 3,
                "image_size": IMAGE_SIZE,
                "batch_size": BATCH,
            },
        },
    }
    path.write_text(json.dumps(config))
    return path


def scalar_steps(folder: Path, tag: str) -> list[int]:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


@pytest.mark.slow
def test_fit_kill_resume_test_predict_report(tmp_path: Path) -> None:
    pat, ce = (
        write_config(tmp_path / "tiny_pat.yaml", "PATLoss"),
        write_config(tmp_path / "tiny_ce.yaml", "CrossEntropyLoss"),
    )
    # The kill switch is a second --config, so the experiment is still named after tiny_pat.yaml.
    kill = tmp_path / "kill.yaml"
    write_config(kill, "PATLoss", [{"class_path": "test_resume.SignalAtStep", "init_args": {"step": 7}}])

    for config in (pat, ce):
        run(["fit", "--config", str(config), "--seed_everything", "0"], tmp_path)
    run(["fit", "--config", str(ce), "--seed_everything", "1"], tmp_path)
    killed = run(["fit", "--config", str(pat), "--config", str(kill), "--seed_everything", "1"], tmp_path, check=False)
    assert killed.returncode == -signal.SIGKILL
    resumed = run(["fit", "--config", str(pat), "--seed_everything", "1", "--ckpt_path", "last"], tmp_path)
    assert "resuming" in resumed.stderr and "dirpath has changed" not in resumed.stderr

    logs = tmp_path / "lightning_logs"
    assert sorted(str(path.relative_to(logs)) for path in logs.glob("*/*")) == [
        "tiny_ce/version_0",
        "tiny_ce/version_1",
        "tiny_pat/version_0",
        "tiny_pat/version_1",
    ]
    resumed_run = logs / "tiny_pat" / "version_1"
    assert len(list(resumed_run.glob("events.out.tfevents.*"))) == 2  # the killed process's and the resumed one's
    assert scalar_steps(resumed_run, "train/loss_step") == list(range(STEPS))

    tested = run(["test", "--config", str(resumed_run / "config.yaml"), "--ckpt_path", "best"], tmp_path)
    assert "test/miou" in tested.stdout
    assert scalar_steps(resumed_run / "test", "test/miou")  # the test metrics are in the run's folder
    predicted = run(["predict", "--config", str(resumed_run / "config.yaml"), "--ckpt_path", "last"], tmp_path)
    predictions = resumed_run / "predictions"
    assert str(predictions) in predicted.stderr + predicted.stdout  # it says where its output went
    pngs = sorted((predictions / "labels").glob("*.png"))
    assert [path.name for path in pngs] == ["000000.png", "000001.png", "000002.png"]
    for path in pngs:
        labels = np.asarray(Image.open(path))
        assert labels.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert set(np.unique(labels).tolist()) <= set(range(9)) | {255}
    assert sorted(path.relative_to(logs).parts[:2] for path in logs.glob("*/*")) == [
        ("tiny_ce", "version_0"),
        ("tiny_ce", "version_1"),
        ("tiny_pat", "version_0"),
        ("tiny_pat", "version_1"),
    ]

    report = run(["report", "--logdir", str(logs)], tmp_path)
    table3 = report.stdout.split("Table 3", 1)[1].split("###", 1)[0]
    rows = {
        line.split("|")[1].strip(): line
        for line in table3.splitlines()
        if line.startswith("| ") and "Method" not in line
    }
    assert sorted(rows) == ["CE", "PAT (T=20)"]
    assert all(row.count("(n=2)") == 3 for row in rows.values())  # mIoU, pixel accuracy, Dice error
    assert "warning" not in report.stderr
