"""Reading finished ``pat-seg fit`` / ``pat-seg test`` runs back from disk.

A run is a logger directory (``<save_dir>/<name>/<version>/``) holding the ``config.yaml`` that
LightningCLI saved and one or more TensorBoard event files (a resumed run adds one); ``pat-seg test``
and ``validate`` of the run write into its ``test/`` and ``validate/`` folders, read with it. What a
run *is* -- loss, model, data set, seed -- is read from the saved config, never from the directory
name, so renamed or hand-made runs report correctly, and what its classes are called is read from the
classes (:mod:`pat_seg.experiments.class_identity`). Two runs are the same experiment only when their
configs agree in everything but the seeds (:attr:`Run.identity`) and their data sets have one name: a
folder of the user's own is named by its ``name``, else after its folder, wherever it lies
(:func:`~pat_seg.experiments.class_identity.data_set_name`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pat_seg.arguments import check_choice
from pat_seg.experiments.class_identity import (
    Kind,
    canonical,
    data_set_name,
    label,
    loss_description,
    loss_plumbing,
    not_identifying,
    own_labels,
)
from pat_seg.experiments.run_folder import CONFIG, PLUMBING, SEED_KEYS, SUBFOLDERS, experiment_identity, flatten
from pat_seg.experiments.run_status import fit_finished
from pat_seg.losses.description import FROM_THE_DATA, short_number

# Init args that say nothing about *which* method, model or data set a run used: the data module's
# and network's arguments among the run folder's plumbing and seeds, those that come from the data,
# and the batch size (which a label need not show). A loss's own description may name more
# (class_identity.not_identifying). Not among them: class_names. The module's copy (model.class_names)
# is plumbing, filled from the data, but a data module that is given class_names (a folder of the
# user's own) is told which classes its masks hold: other classes are another data set.
NOT_IDENTITY = (
    {
        key.rsplit(".", 1)[-1]
        for key in (*PLUMBING, *SEED_KEYS)
        if key.startswith(("data.init_args.", "model.model.init_args."))
    }
    | {"batch_size"}
    | set(FROM_THE_DATA)
)
DATA_SET_NAME = "name"  # the data module argument that holds the data set's name in Run.data and Run.identity
# Folders a run's evaluations write into, read as part of the run (predictions hold no scalars).
EVALUATION_FOLDERS = tuple(folder for command, folder in SUBFOLDERS.items() if command != "predict")


@dataclass
class Run:
    """One logger directory: its saved config and every scalar its event files hold."""

    path: Path
    config: dict[str, Any]
    scalars: dict[str, list[tuple[int, float]]] = field(repr=False)

    # --- what the run was ------------------------------------------------------------------------
    @property
    def seed(self) -> int | None:
        return self.config.get("seed_everything")

    @property
    def loss(self) -> tuple[str, dict[str, Any]]:
        """The loss's class path (:func:`canonical`) and its arguments, switches its config predates filled in."""
        path, args = class_and_args(self.config.get("model", {}).get("loss"))
        return path, loss_description(path).with_switch_defaults(args)

    @property
    def model(self) -> tuple[str, dict[str, Any]]:
        return class_and_args(self.config.get("model", {}).get("model"))

    @property
    def data(self) -> tuple[str, dict[str, Any]]:
        """The data module class and its arguments, with its number of classes (NYUv2 13/14/40 differ)
        and its data set's name (:func:`with_data_set_name`)."""
        path, args = class_and_args(self.config.get("data"))
        classes = len(self.class_names("val") or self.class_names("test"))
        return path, with_data_set_name({**args, "classes": classes}, DATA_SET_NAME, self.data_set)

    @property
    def data_set(self) -> str | None:
        """The name its data module gives the data set it read (None: the class names it):
        :func:`~pat_seg.experiments.class_identity.data_set_name`."""
        return data_set_name(*class_and_args(self.config.get("data")))

    @property
    def seeds(self) -> tuple[Any, ...]:
        """The values of :data:`SEED_KEYS` (initialisation and data order): what repeats of a run vary."""
        flat = flatten(self.config)
        return tuple(flat.get(key) for key in SEED_KEYS)

    @property
    def identity(self) -> dict[str, Any]:
        """The run's config without seeds and logging plumbing: equal for repeats of one experiment."""
        switches = loss_description(self.loss[0]).with_switch_defaults({})
        defaults = {f"model.loss.init_args.{arg}": value for arg, value in switches.items()}
        identity = experiment_identity(self.config, defaults, loss_plumbing(self.config))
        # The data set's name, not the root it was read from (plumbing): one data set on two machines pools.
        return with_data_set_name(identity, f"data.init_args.{DATA_SET_NAME}", self.data_set)

    @property
    def identity_key(self) -> str:
        return yaml.safe_dump(self.identity, sort_keys=True, default_flow_style=True).strip()

    def class_names(self, split: str) -> list[str]:
        """Class names in logging order, from the ``<split>/iou/<name>`` tags."""
        prefix = f"{split}/iou/"
        return [tag[len(prefix) :] for tag in self.scalars if tag.startswith(prefix)]

    @property
    def finished(self) -> bool:
        """Whether its fit ended at its budget with final metrics (:func:`~pat_seg.experiments.run_status.fit_finished`)."""
        return fit_finished(self.path)

    @property
    def last_step(self) -> int | None:
        """The largest step it logged anything at (None: nothing logged)."""
        return max((values[-1][0] for values in self.scalars.values() if values), default=None)

    # --- what the run measured -------------------------------------------------------------------
    def last(self, tag: str) -> float | None:
        """The value logged at the largest step (the last epoch); None when the tag is absent."""
        values = self.scalars.get(tag)
        return values[-1][1] if values else None

    def epoch_mean(self, tag: str) -> float | None:
        """Mean over every logged value of ``tag`` (for per-epoch costs such as utilisation)."""
        values = self.scalars.get(tag)
        return math.fsum(v for _, v in values) / len(values) if values else None


def with_data_set_name(args: dict[str, Any], key: str, name: str | None) -> dict[str, Any]:
    """``args`` with ``args[key]`` the data set's ``name``: a ``name`` given and the folder name equal to
    it are one data set. Without a name, a null ``name`` (what a run saves when none is given) is no
    ``name`` (what runs saved before the argument existed)."""
    if name is not None:
        return {**args, key: name}
    return {arg: value for arg, value in args.items() if arg != key or value is not None}


def differing_keys(identities: list[dict[str, Any]]) -> list[str]:
    """Dotted keys whose values are not the same in every one of ``identities``."""
    keys = sorted({key for identity in identities for key in identity})
    return [key for key in keys if len({repr(identity.get(key)) for identity in identities}) > 1]


def class_and_args(node: Any) -> tuple[str, dict[str, Any]]:
    """``(class path, init args)`` of a LightningCLI ``class_path`` node (``("", {})`` when absent); the
    path as :func:`canonical` spells it, so two spellings of one class are one class."""
    if isinstance(node, str):
        return canonical(node), {}
    if not isinstance(node, dict) or not isinstance(node.get("class_path"), str):
        return "", {}
    return canonical(node["class_path"]), dict(node.get("init_args") or {})


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every event file in ``run_dir``, per tag sorted by step.

    When the same step of a tag was written twice (a resumed run), the later write wins.
    """
    scalars: dict[str, list[tuple[int, float]]] = {}
    for folder in [run_dir, *(run_dir / name for name in EVALUATION_FOLDERS)]:
        if not any(folder.glob("events.out.tfevents.*")):
            continue
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            by_step: dict[int, tuple[float, float]] = {}
            for event in accumulator.Scalars(tag):
                if event.step not in by_step or event.wall_time >= by_step[event.step][0]:
                    by_step[event.step] = (event.wall_time, event.value)
            scalars[tag] = [(step, value) for step, (_, value) in sorted(by_step.items())]
    return scalars


def find_runs(logdir: str | Path, pattern: str = "**") -> list[Run]:
    """Every run under ``logdir``: a directory with a ``config.yaml`` and at least one event file, not
    inside a hidden folder.

    ``pattern`` is a glob relative to ``logdir`` selecting run directories (e.g. ``"synthetic_table3/*"``).
    """
    root = Path(logdir)
    if not root.is_dir():
        raise ValueError(f"logdir {str(root)!r} is not a directory")
    runs = []
    for config_file in sorted(root.glob(f"{pattern.rstrip('/')}/{CONFIG}")):
        run_dir = config_file.parent
        if not any(run_dir.glob("events.out.tfevents.*")):
            continue
        # Hidden folders hold what is not a result, e.g. runs a sweep set aside unfinished
        # (<save_dir>/.sweep-incomplete/): never counted in a report.
        if any(part.startswith(".") for part in run_dir.relative_to(root).parts):
            continue
        if (run_dir.parent / CONFIG).is_file():
            continue  # a run's test/, validate/ or predictions/ folder, read with the run
        config = yaml.safe_load(config_file.read_text()) or {}
        runs.append(Run(run_dir, config, read_scalars(run_dir)))
    return runs


def display_labels(identities: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, str]:
    """Readable, unique labels for the distinct ``(class path, init args)`` of one kind.

    ``kind`` is ``"loss"``, ``"model"`` or ``"data"``. The name comes from the class
    (:func:`pat_seg.experiments.class_identity.label`: the paper's for ours), or for a data set that its
    module names (a folder of the user's own) from the data set (``CamVid``); the loss's headline
    hyperparameters follow (``PAT (T=20)``); any other argument that differs between two identities of
    the same class (and, for data, the same name) is appended, so runs that differ are never merged
    under one label. Returns a map from :func:`identity_key` to label.
    """
    check_choice("kind", kind, Kind)
    unique = {identity_key(path, args): (path, args) for path, args in identities}
    names = {key: _base_name(path, args, cast(Kind, kind)) for key, (path, args) in unique.items()}
    labels: dict[str, str] = {}
    for key, (path, args) in unique.items():
        base, shown = names[key]
        parts = [f"{symbol}={short_number(args[arg])}" for arg, symbol in shown.items() if arg in args and symbol]
        # A data set's name tells it from data sets of other names already: only those of its name count.
        siblings = [
            other
            for other_key, other in unique.items()
            if other[0] == path and other[1] != args and (kind != "data" or names[other_key][0] == base)
        ]
        ignored = NOT_IDENTITY | not_identifying(path)
        differing = sorted(
            {
                arg
                for _, other in siblings
                for arg in set(args) | set(other)
                if args.get(arg) != other.get(arg) and arg not in shown and arg not in ignored
            }
        )
        parts += [f"{arg}={short_number(args.get(arg))}" for arg in differing]
        labels[key] = f"{base} ({', '.join(parts)})" if parts else base
    return labels


def _base_name(path: str, args: dict[str, Any], kind: Kind) -> tuple[str, dict[str, str]]:
    """The name :func:`display_labels` starts a label with, and the arguments it shows by symbol (an
    empty symbol: in the name, never repeated): a loss's description's; a data set's own name
    (:func:`data_set_name`), with its class's label where it is also the label of one of pat-seg's data
    sets (``Synthetic (SegmentationFolder)``); else the class's label."""
    if kind == "loss":
        description = loss_description(path)
        base, shown = description.named(args)
        return base, {**shown, **dict.fromkeys(description.switches, "")}
    name = data_set_name(path, args) if kind == "data" else None
    if name is None:
        return label(path, kind), {}
    if name in own_labels("data"):  # a folder called Cityscapes is not pat-seg's Cityscapes: say whose it is
        name = f"{name} ({label(path, kind)})"
    return name, {DATA_SET_NAME: ""}


def identity_key(path: str, args: dict[str, Any]) -> str:
    """A hashable key for ``(class path, init args)`` that ignores arguments which do not identify."""
    ignored = NOT_IDENTITY | not_identifying(path)
    kept = {k: v for k, v in args.items() if k not in ignored}
    return f"{path}{yaml.safe_dump(kept, sort_keys=True, default_flow_style=True).strip()}"
