"""Lightning callbacks of pat-seg (one module per job)."""

from pat_seg.callbacks.predictions import PredictionImages

__all__ = ["PredictionImages"]
