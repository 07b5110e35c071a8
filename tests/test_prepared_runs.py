"""Training on a prepared split, end to end: the console script, exact mid-epoch resume and DDP sharding.

Each run is a real ``pat-seg`` process on a generated Cityscapes-layout set (16 training images of
8x16, the paper's 20-class protocol) with ``--data.prepared=require``, so a run that silently fell
back to the source files would fail.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
from test_data_cityscapes import every_id_label, write_png
from test_data_nyuv2 import write_mat, write_npy
from test_data_oxford_pet import write_pet
from test_ddp import free_port
from test_resume import assert_same_weights, last_checkpoint, run_pat_seg, tiny_config
from test_run_safety import pat_seg

NUM_TRAIN, NUM_VAL = 16, 4
MAX_ERROR_LINES = 15


class RecordTrainIndices(L.Callback):
    """Test-only: each process writes the sample indices of its training batches, per epoch, to ``<path>.<rank>``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["index"].tolist())

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        Path(f"{self.path}.{trainer.global_rank}").write_text(json.dumps(self.seen))


def write_cityscapes_set(root: Path, train: int = NUM_TRAIN, val: int = NUM_VAL) -> None:
    """The official leftImg8bit / gtFine layout, 8x16 frames in four cities."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            city = ("aachen", "bochum", "bremen", "cologne")[i % 4]
            stem = f"{city}_{i:06d}_000019"
            write_png(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                rng.integers(0, 255, size=(8, 16, 3), dtype=np.uint8),
            )
            write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", every_id_label(shift=i))


def cityscapes_config(root: Path, data_root: Path, callbacks: list[dict] = ()) -> Path:
    config = tiny_config(root, list(callbacks))
    config["data"] = {
        "class_path": "pat_seg.data.CityscapesDataModule",
        "init_args": {
            "root": str(data_root),
            "void_as_class": True,
            "size": [8, 16],
            "augment": False,
            "batch_size": 4,
            "num_workers": 0,
            "prepared": "require",
        },
    }
    path = root / "config.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_cityscapes_set(root)
    return root


@pytest.mark.slow
def test_fit_requiring_a_prepared_split_without_one_names_the_command(tmp_path: Path) -> None:
    write_cityscapes_set(tmp_path / "data")
    config = cityscapes_config(tmp_path / "run", tmp_path / "data")
    result = pat_seg("fit", "--config", str(config), cwd=tmp_path, timeout=600)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) <= MAX_ERROR_LINES, result.stderr
    assert "Traceback" not in result.stderr
    assert "no prepared 'train' split" in result.stderr
    assert f"run: pat-seg prepare --config {config}" in result.stderr, result.stderr


@pytest.mark.slow
def test_prepare_then_fit_from_the_console_script(tmp_path: Path) -> None:
    write_cityscapes_set(tmp_path / "data")
    config = cityscapes_config(tmp_path / "run", tmp_path / "data")
    prepared = pat_seg("prepare", "--config", str(config), "--workers", "2", cwd=tmp_path, timeout=600)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    for split in ("train", "val", "test"):
        assert f"{split}: " in prepared.stderr and "images/s" in prepared.stderr
    fit = pat_seg("fit", "--config", str(config), "--trainer.max_epochs=1", cwd=tmp_path, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "source files" not in fit.stderr + fit.stdout
    checkpoint = last_checkpoint(tmp_path / "run", 0)
    assert checkpoint["global_step"] == NUM_TRAIN // 4


@pytest.mark.slow
def test_mid_epoch_resume_on_a_prepared_split_is_bit_identical(tmp_path: Path, data_root: Path) -> None:
    prepared = run_pat_seg(
        ["prepare", "--config", str(cityscapes_config(tmp_path / "prepare", data_root)), "--workers", "1"]
    )
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    kill = {"class_path": "test_resume.SignalAtStep", "init_args": {"step": 7, "signal": "SIGKILL"}}
    reference = run_pat_seg(["fit", "--config", str(cityscapes_config(tmp_path / "reference", data_root))])
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed_config = cityscapes_config(tmp_path / "killed", data_root, [kill])
    killed = run_pat_seg(["fit", "--config", str(killed_config)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = last_checkpoint(tmp_path / "killed", 0)
    assert saved["global_step"] == 6 and saved["epoch"] == 1  # mid-epoch: 2 of the epoch's 4 batches done
    resume_config = cityscapes_config(tmp_path / "killed", data_root)  # the same run, without the kill
    resumed = run_pat_seg(["fit", "--config", str(resume_config), "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(last_checkpoint(tmp_path / "killed", 0), last_checkpoint(tmp_path / "reference", 0))


@pytest.mark.slow
def test_two_process_ddp_sees_each_prepared_sample_once_per_epoch(tmp_path: Path, data_root: Path) -> None:
    record = {"class_path": "test_prepared_runs.RecordTrainIndices", "init_args": {"path": str(tmp_path / "seen")}}
    config = cityscapes_config(tmp_path, data_root, [record])
    prepared = run_pat_seg(["prepare", "--config", str(config), "--workers", "1", "--splits", "[train, val]"])
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    fit = run_pat_seg(
        ["fit", "--config", str(config), "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"],
        env={"MASTER_PORT": str(free_port())},
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"seen.{rank}").read_text()) for rank in (0, 1)]
    for epoch in ("0", "1"):
        indices = ranks[0][epoch] + ranks[1][epoch]
        assert sorted(indices) == list(range(NUM_TRAIN)), (epoch, ranks[0][epoch], ranks[1][epoch])
        assert len(ranks[0][epoch]) == len(ranks[1][epoch]) == NUM_TRAIN // 2
    assert ranks[0]["0"] != ranks[0]["1"]  # reshuffled each epoch


# Each disk data set's fixture and its data module at a size the tiny U-Net takes (divisible by 2).
DISK_DATA_SETS: dict[str, tuple[Any, dict[str, Any]]] = {
    "cityscapes": (
        write_cityscapes_set,
        {"class_path": "pat_seg.data.CityscapesDataModule", "init_args": {"size": [8, 16]}},
    ),
    "nyuv2_npy": (
        write_npy,
        {"class_path": "pat_seg.data.NYUv2DataModule", "init_args": {"layout": "npy", "size": [6, 8]}},
    ),
    "nyuv2_mat": (
        write_mat,
        {
            "class_path": "pat_seg.data.NYUv2DataModule",
            "init_args": {"layout": "mat", "num_classes": 40, "size": [6, 8]},
        },
    ),
    "oxford_pet": (write_pet, {"class_path": "pat_seg.data.OxfordPetDataModule", "init_args": {"size": [8, 8]}}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DISK_DATA_SETS))
def test_prepare_then_fit_with_the_default_callbacks_and_model_summary(tmp_path: Path, name: str) -> None:
    """A new user's first run on a disk data set: ``pat-seg prepare``, then ``pat-seg fit`` with the default
    callbacks (prediction images included) and the model summary, on the default augmented protocol."""
    write, data = DISK_DATA_SETS[name]
    write(tmp_path / "data")
    config = {
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
        "model": {"model": {"init_args": {"base_channels": 4, "depth": 1}}},
        "data": {
            "class_path": data["class_path"],
            "init_args": {**data["init_args"], "root": str(tmp_path / "data"), "batch_size": 2, "prepared": "require"},
        },
    }
    path = tmp_path / "first.yaml"
    path.write_text(json.dumps(config))
    prepared = pat_seg("prepare", "--config", str(path), "--workers", "1", cwd=tmp_path, timeout=600)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    fit = pat_seg("fit", "--config", str(path), cwd=tmp_path, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    summary = fit.stdout + fit.stderr
    assert "Trainable params" in summary and "FLOPs" in summary  # the summary ran the network on its example
    run = tmp_path / "lightning_logs" / "first" / "version_0"
    assert list((run / "checkpoints").glob("epoch000-miou*.ckpt")), sorted(p.name for p in run.rglob("*"))
