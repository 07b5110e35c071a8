"""UtilisationMonitor: per-epoch seconds, samples/s, peak memory, GPU utilisation in TensorBoard."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard_utils import read_scalars

from pat_seg.callbacks import UtilisationMonitor
from pat_seg.callbacks import utilisation
from pat_seg.cli import cli_main

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
    for seconds, rate in zip(scalars["utilisation/epoch_seconds"], scalars["utilisation/samples_per_second"]):
        assert 0 < seconds < 120
        assert rate >= num_train / seconds  # training time <= epoch time (validation excluded)
    if sys.platform.startswith("linux"):
        assert 0 < max(scalars["utilisation/peak_rss_mib"]) <= vm_hwm_mib() + 1


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
    module = SimpleNamespace(device=torch.device("cpu"), log=lambda name, value, **kwargs: logged.__setitem__(name, value))
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
    with pytest.raises(ValueError, match="min_sample_interval must be >= 0 seconds; got -1"):
        UtilisationMonitor(min_sample_interval=-1)
