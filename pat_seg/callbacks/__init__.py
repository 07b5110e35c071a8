"""Lightning callbacks of pat-seg (one module per job)."""

from pat_seg.callbacks.fault_tolerance import (
    NonFiniteLossError,
    NonFiniteLossGuard,
    PreemptionCheckpoint,
    StepCheckpoint,
)
from pat_seg.callbacks.prediction_writer import PredictionWriter
from pat_seg.callbacks.predictions import PredictionImages
from pat_seg.callbacks.utilisation import UtilisationMonitor

__all__ = [
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PredictionImages",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "StepCheckpoint",
    "UtilisationMonitor",
]
