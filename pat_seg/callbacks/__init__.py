"""Lightning callbacks of pat-seg (one module per job)."""

from pat_seg.callbacks.fault_tolerance import NonFiniteLossError, NonFiniteLossGuard, PreemptionCheckpoint, StepCheckpoint

__all__ = ["NonFiniteLossError", "NonFiniteLossGuard", "PreemptionCheckpoint", "StepCheckpoint"]
