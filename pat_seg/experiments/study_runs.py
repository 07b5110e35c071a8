"""A study's runs, as a decision rule reads them: each run's last ``<split>/*`` values.

A run is the folder ``<sweep name>/<seed>-<arm>`` (the sweep's first axis is the seed, its version the
axis values joined by ``-``): its arm is the version after the first ``-``. Its value on the metric is
its last ``<split>/<metric>``; on a group, the mean of its classes' last ``<split>/iou/<class>``. The runs
come from the study's per-run CSV (:func:`runs_from_csv`, ``--from-csv``) or its run folders
(:func:`runs_from_logdir`, ``--logdir``), which also give the training split's class statistics that
their ``hparams.yaml`` records (the per-run CSV does not hold them).
Pure Python: no torch; the report's readers are imported only to read the runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pat_seg.experiments.decision_rule import DecisionRule, TrainingShare
from pat_seg.experiments.run_folder import HPARAMS


@dataclass
class StudyRuns:
    """What the study's runs logged: per run version, each ``<split>/<tag>``'s last value (tag without the split)."""

    source: str
    values: dict[str, dict[str, float]]
    classes: list[str]  # the per-class IoU tags' class names, in logging order
    training: dict[str, TrainingShare] = field(default_factory=dict)  # from the runs' hparams.yaml
    others: list[str] = field(default_factory=list)  # run folders of the study that are not <seed>-<arm>


def _last_values(scalars: Mapping[str, Sequence[tuple[int, float]]], split: str) -> dict[str, float]:
    """The last logged value of each ``<split>/*`` tag; NaN (a class the split lacks) counts as no value."""
    prefix = f"{split}/"
    return {
        tag[len(prefix) :]: points[-1][1]
        for tag, points in scalars.items()
        if tag.startswith(prefix) and points and not math.isnan(points[-1][1])
    }


def _study_runs(rule: DecisionRule, source: str, runs: Iterable[tuple[Path, Mapping[str, Any]]]) -> StudyRuns:
    """The runs of ``rule.study`` among ``(folder, scalars)`` pairs (folders named ``.../<study>/<version>``)."""
    values: dict[str, dict[str, float]] = {}
    classes: dict[str, None] = {}
    prefix = f"{rule.split}/iou/"
    for folder, scalars in runs:
        if folder.parent.name != rule.study:
            continue
        values[folder.name] = _last_values(scalars, rule.split)
        classes.update(dict.fromkeys(tag[len(prefix) :] for tag in scalars if tag.startswith(prefix)))
    if not values:
        raise ValueError(f"{source} holds no run of the study {rule.study!r} (run folders {rule.study}/<seed>-<arm>)")
    return StudyRuns(source, values, list(classes))


def runs_from_csv(rule: DecisionRule, path: str) -> StudyRuns:
    """The study's runs from its per-run CSV (``pat-seg report --format csv --per-run``)."""
    from pat_seg.experiments.report import entries_from_csv  # the report's reader (it imports the losses)

    entries = entries_from_csv(path, rule.split)
    return _study_runs(rule, f"--from-csv {path!r}", ((e.run.path, e.run.scalars) for e in entries))


def runs_from_logdir(rule: DecisionRule, logdir: str) -> StudyRuns:
    """The study's runs from their folders under ``logdir``, with the training class statistics their
    ``hparams.yaml`` records when every run records the same ones."""
    from pat_seg.experiments.runs import find_runs  # TensorBoard's reader

    # A run that did not finish (interrupted, failed) is not a result: the study lacks it until it does.
    found = [run for run in find_runs(logdir, f"{rule.study}/*") if run.finished]
    study = _study_runs(rule, f"--logdir {logdir!r}", ((run.path, run.scalars) for run in found))
    recorded = {_training_shares(run.path / HPARAMS) for run in found}
    if len(recorded) == 1:  # runs that disagree (or some without) would make any one of them a guess
        study.training = dict(recorded.pop())
    return study


def _training_shares(hparams: Path) -> tuple[tuple[str, TrainingShare], ...]:
    """Each class's training pixel share and image count from a run's ``hparams.yaml`` (empty without them)."""
    recorded = yaml.safe_load(hparams.read_text()) if hparams.is_file() else None
    if not isinstance(recorded, dict):
        return ()
    names, pixels, images = (recorded.get(key) for key in ("class_names", "class_counts", "class_image_counts"))
    if not (isinstance(names, list) and isinstance(pixels, list) and isinstance(images, list)):
        return ()
    if not len(names) == len(pixels) == len(images) or sum(pixels) <= 0:
        return ()
    total = sum(pixels)
    return tuple(
        (str(name), TrainingShare(count / total, int(shown))) for name, count, shown in zip(names, pixels, images)
    )
