"""Whether a ``pat-seg fit`` run finished, read from its folder (no torch: the report and the sweep ask).

A run's ``hparams.yaml`` is written by Lightning when the fit starts; :class:`~pat_seg.experiments.
run_summary.RunSummary` adds a ``summary`` to it when fitting ends at its budget (``max_epochs``,
``max_steps`` or ``max_time``), with the final validation metrics. A fit stopped before that (killed,
interrupted, failed) leaves no ``summary``, and one that ended without any validation metrics left an
empty ``metrics``: both are unfinished. A run folder without ``hparams.yaml`` was not written by
``pat-seg fit`` (a hand-made or imported run) and is taken as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pat_seg.experiments.run_folder import HPARAMS, flatten

SUMMARY = "summary"  # the key of hparams.yaml that RunSummary writes
BUDGET = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_time")


def fit_summary(run_dir: Path) -> dict[str, Any] | None:
    """The ``summary`` of ``run_dir``'s ``hparams.yaml`` (None: no such file, or no summary in it)."""
    path = run_dir / HPARAMS
    if not path.is_file():
        return None
    try:
        recorded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:  # Lightning wrote it with objects safe_load refuses: read as no summary
        return None
    summary = recorded.get(SUMMARY) if isinstance(recorded, dict) else None
    return summary if isinstance(summary, dict) else None


def fit_completed(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a ``pat-seg fit`` that ended at its budget with final validation metrics."""
    summary = fit_summary(run_dir)
    return summary is not None and bool(summary.get("metrics"))


def fit_finished(run_dir: Path) -> bool:
    """Whether the run of ``run_dir`` counts as finished (module doc): :func:`fit_completed`, or a folder
    without ``hparams.yaml`` (not a ``pat-seg fit`` run's)."""
    return not (run_dir / HPARAMS).is_file() or fit_completed(run_dir)


def unfinished_reason(run_dir: Path, config: dict[str, Any], last_step: int | None) -> str:
    """Why ``run_dir`` is not finished, with how far it got: ``step 40 of trainer.max_steps=384``."""
    summary = fit_summary(run_dir)
    flat = flatten(config)
    budget = ", ".join(f"{key}={flat[key]}" for key in BUDGET if flat.get(key) is not None and flat.get(key) != -1)
    reached = "no step logged" if last_step is None else f"step {last_step}"
    why = "ended with no validation metrics" if summary is not None else "stopped before its budget"
    return f"{why}: {reached}" + (f" of {budget}" if budget else "")
