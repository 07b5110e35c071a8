"""UtilisationMonitor: per-epoch seconds, samples/s, peak memory, GPU utilisation in TensorBoard."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard_utils import read_scalars

from pat_seg.callbacks import UtilisationMonitor, utilisation
from pat_seg.cli import cli_main
from pat_seg.data import SyntheticLongTailDataModule
from pat_seg.losses import PATLoss
from pat_seg.models import UNet
from pat_seg.module import SegmentationModule

TAGS = ("utilisation/epoch_seconds", "utilisation/samples_per_second", "utilisation/peak_rss_mib")


def vm_hwm_mib() -> float:
    """Peak RSS from /proc (a source independent of getrusage)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_default_cli_fit_logs_utilisation_tags_to_tensorboard(tmp_path: Path) -> None:
    num_train, epochs = 8, 2
    cli_main(
        [
            "fit",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.max_epochs={epochs}",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--data.num_train={num_train}",
            "--data.num_val=4",
            "--data.num_test=4",
            "--data.image_size=16",
            "--data.batch_size=4",
            "--model.model.init_args.base_channels=4",
            "--model.model.init_args.depth=1",
        ]
    )
    scalars = read_scalars(tmp_path)
    for tag in TAGS:
        assert len(scalars.get(tag, [])) == epochs, (tag, sorted(scalars))
    assert "utilisation/gpu_percent" not in scalars  # no GPU, no driver reading: not logged, no crash
    assert "utilisation/peak_cuda_memory_mib" not in scalars
    if sys.platform.startswith("linux"):
        assert 0 < max(scalars["utilisation/peak_rss_mib"]) <= vm_hwm_mib() + 1


class Stopwatch(L.Callback):
    """The test's own clock on the same epoch boundaries: training time and validation time per epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append({"start": time.perf_counter(), "validation": 0.0})

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.epochs:
            self.epochs[-1]["validation_start"] = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.epochs:
            self.epochs[-1]["validation"] += time.perf_counter() - self.epochs[-1]["validation_start"]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs[-1]["end"] = time.perf_counter()


def test_epoch_seconds_and_samples_per_second_agree_with_an_outside_clock(tmp_path: Path) -> None:
    num_train, epochs = 12, 2
    data = SyntheticLongTailDataModule(num_train=num_train, num_val=8, num_test=4, image_size=32, batch_size=4)
    module = SegmentationModule(UNet(9, base_channels=4, depth=2), PATLoss(), num_classes=9)
    stopwatch = Stopwatch()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
        callbacks=[stopwatch, UtilisationMonitor()],
    )
    trainer.fit(module, datamodule=data)
    scalars = read_scalars(tmp_path / "run" / "version_0")
    for epoch, logged_seconds, logged_rate in zip(
        stopwatch.epochs, scalars["utilisation/epoch_seconds"], scalars["utilisation/samples_per_second"]
    ):
        seconds = epoch["end"] - epoch["start"]
        training = seconds - epoch["validation"]
        assert epoch["validation"] > 0 and 0 < training < seconds
        assert logged_seconds == pytest.approx(seconds, rel=0.05, abs=0.02)
        assert logged_rate == pytest.approx(num_train / training, rel=0.05)  # validation time left out


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_epoch_arithmetic_excludes_validation_and_averages_gpu_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    readings = iter([50.0, 70.0])
    monkeypatch.setattr(utilisation.time, "perf_counter", clock)
    monkeypatch.setattr(utilisation, "gpu_utilisation_percent", lambda device: next(readings))
    logged: dict[str, float] = {}
    module = SimpleNamespace(
        device=torch.device("cpu"), log=lambda name, value, **kwargs: logged.__setitem__(name, value)
    )
    trainer = SimpleNamespace(
        state=SimpleNamespace(fn="fit"),
        sanity_checking=False,
        strategy=SimpleNamespace(reduce=lambda tensor, reduce_op: tensor * 2),  # two processes, same count
    )
    monitor = UtilisationMonitor(min_sample_interval=1.0)
    batch = {"image": torch.zeros(3, 3, 4, 4), "target": torch.zeros(3, 4, 4, dtype=torch.long)}

    monitor.on_train_epoch_start(trainer, module)
    for step in range(4):  # batches at t = 100.0, 100.5, 101.0, 101.5: readings at 100.0 and 101.0 only
        monitor.on_train_batch_end(trainer, module, None, batch, step)
        clock.now += 0.5
    monitor.on_validation_start(trainer, module)
    clock.now += 4.0
    monitor.on_validation_end(trainer, module)
    clock.now += 1.0
    monitor.on_train_epoch_end(trainer, module)

    assert logged["utilisation/epoch_seconds"] == pytest.approx(7.0)
    assert logged["utilisation/samples_per_second"] == pytest.approx(2 * 4 * 3 / 3.0)  # 24 samples in 3 s
    assert logged["utilisation/gpu_percent"] == pytest.approx(60.0)


def test_missing_driver_reading_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_nvml(device: torch.device) -> float:
        raise ModuleNotFoundError("pynvml does not seem to be installed")

    monkeypatch.setattr(utilisation.torch.cuda, "utilization", no_nvml)
    assert utilisation.gpu_utilisation_percent(torch.device("cuda", 0)) is None
    assert utilisation.gpu_utilisation_percent(torch.device("cpu")) is None


def test_batch_size_and_bad_arguments() -> None:
    assert utilisation.batch_size_of({"image": torch.zeros(5, 3, 2, 2)}) == 5
    assert utilisation.batch_size_of((torch.zeros(2, 1), torch.zeros(2))) == 2
    with pytest.raises(ValueError, match="batch size of a str"):
        utilisation.batch_size_of("images")
    with pytest.raises(ValueError, match=r"min_sample_interval must be a finite number >= 0 \(seconds\); got -1"):
        UtilisationMonitor(min_sample_interval=-1)
