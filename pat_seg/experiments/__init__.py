"""Runs on disk: a run's folder and identity, the plan of a command before the Trainer exists,
checkpoint files, the end-of-run summary, and the tools over many runs (report, paired statistics,
sweep). It uses the training core and is used by :mod:`pat_seg.cli`; it imports neither Lightning's CLI
nor the command line.
"""
