"""Lightning callbacks of pat-seg (one module per job)."""

from pat_seg.callbacks.utilisation import UtilisationMonitor

__all__ = ["UtilisationMonitor"]
