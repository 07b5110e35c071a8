"""The ``pat-seg`` command line: the LightningCLI subclass, its help, its errors, its warning filters.

It sits above :mod:`pat_seg.experiments` (which decides where a command writes) and the training core
(data, models, losses, :class:`~pat_seg.module.SegmentationModule`); nothing below imports it.
"""

from pat_seg.cli.app import DEFAULT_CONFIG, PatSegCLI, cli_main, main, run_quietly

__all__ = ["DEFAULT_CONFIG", "PatSegCLI", "cli_main", "main", "run_quietly"]
