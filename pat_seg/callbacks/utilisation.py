"""Per-epoch training cost, the quantities of the paper's Fig. 5, logged to TensorBoard.

Tags (one value per training epoch, at the epoch's last global step):

- ``utilisation/epoch_seconds``: wall time of the epoch, validation included.
- ``utilisation/samples_per_second``: training samples of all processes per second of training
  (validation time excluded, so a long validation does not hide a fast loss).
- ``utilisation/peak_cuda_memory_mib``: ``torch.cuda.max_memory_allocated`` during the epoch (CUDA).
- ``utilisation/peak_rss_mib``: the process's peak resident set size so far (``getrusage``; the
  kernel keeps no per-epoch peak), where the platform reports it.
- ``utilisation/gpu_percent``: mean GPU utilisation reported by the driver (``torch.cuda.utilization``,
  which needs the optional ``nvidia-ml-py`` package: ``pip install "pat-seg[gpu]"``); not logged
  where unavailable.

Lightning's ``ThroughputMonitor`` logs per step and calls ``torch.cuda.synchronize()`` after every
batch, which costs the CPU/GPU overlap it is meant to measure, and ``DeviceStatsMonitor`` logs dozens
of raw allocator counters per step (and needs ``psutil`` on the CPU); neither gives per-epoch
figures, so this callback measures them itself with one synchronisation per epoch boundary.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor

from pat_seg.arguments import NonNegativeFloat, check_number
from pat_seg.exceptions import ConfigurationError

log = logging.getLogger(__name__)

MIB = 2**20


def batch_size_of(batch: Any) -> int:
    """Number of samples in a pat-seg batch (``{"image": [B, ...], ...}``), a tensor or a sequence of them."""
    if isinstance(batch, dict):
        batch = batch.get("image", next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    raise ConfigurationError(
        f"cannot tell the batch size of a {type(batch).__name__}; expected a dict with 'image' or a tensor"
    )


def peak_rss_mib() -> float | None:
    """Peak resident set size of this process in MiB, or None where ``resource`` is unavailable."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def gpu_utilisation_percent(device: torch.device) -> float | None:
    """The driver's GPU utilisation in percent, or None where it cannot be read (no NVML, no CUDA)."""
    if device.type != "cuda":
        return None
    try:
        return float(torch.cuda.utilization(device))
    except Exception as error:  # pynvml missing (ModuleNotFoundError) or NVML unsupported here
        log.info("GPU utilisation not logged: %s", error)
        return None


class UtilisationMonitor(L.Callback):
    """Log seconds per epoch, samples per second, peak memory and GPU utilisation (paper Fig. 5).

    Args:
        min_sample_interval: seconds between two GPU-utilisation readings; the driver itself
            averages over about 1/6 to 1 s, so reading after every short step adds cost, not detail.
    """

    def __init__(self, min_sample_interval: NonNegativeFloat = 0.5) -> None:
        super().__init__()
        self.min_sample_interval = check_number("min_sample_interval", min_sample_interval, at_least=0, note="seconds")
        self._read_gpu = True
        self._reset()

    def _reset(self) -> None:
        self._epoch_start = time.perf_counter()
        self._validation_start = 0.0
        self._validation_seconds = 0.0
        self._samples = 0
        self._gpu_readings: list[float] = []
        self._last_reading = float("-inf")

    @staticmethod
    def _synchronize(pl_module: L.LightningModule) -> None:
        # Kernels still queued belong to the interval being closed; wait for them once per boundary.
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._synchronize(pl_module)
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._reset()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += batch_size_of(batch)
        now = time.perf_counter()
        if self._read_gpu and now - self._last_reading >= self.min_sample_interval:
            reading = gpu_utilisation_percent(pl_module.device)
            self._read_gpu = reading is not None  # absent once, absent for the run: stop asking
            if reading is not None:
                self._gpu_readings.append(reading)
            self._last_reading = now

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._synchronize(pl_module)
            self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._synchronize(pl_module)
            self._validation_seconds += time.perf_counter() - self._validation_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._synchronize(pl_module)
        seconds = time.perf_counter() - self._epoch_start
        train_seconds = max(seconds - self._validation_seconds, 1e-9)
        samples = trainer.strategy.reduce(torch.tensor(float(self._samples), device=pl_module.device), reduce_op="sum")
        metrics = {"epoch_seconds": seconds, "samples_per_second": float(samples) / train_seconds}
        if pl_module.device.type == "cuda":
            metrics["peak_cuda_memory_mib"] = torch.cuda.max_memory_allocated(pl_module.device) / MIB
        rss = peak_rss_mib()
        if rss is not None:
            metrics["peak_rss_mib"] = rss
        if self._gpu_readings:
            metrics["gpu_percent"] = sum(self._gpu_readings) / len(self._gpu_readings)
        for name, value in metrics.items():
            pl_module.log(f"utilisation/{name}", value, on_step=False, on_epoch=True, rank_zero_only=True)
