"""``pat-seg sweep``: the paper's grids as ``pat-seg fit`` commands, run locally, printed or as a SLURM array.

A sweep file (``configs/sweeps/*.yaml``)::

    name: synthetic_table3            # logger name: runs land in <save_dir>/<name>/<version>/
    save_dir: lightning_logs          # optional (default lightning_logs)
    configs: []                       # optional: --config files of every run
    args: {trainer.max_epochs: 12}    # optional: flags of every run
    axes:                             # the grid: every combination, first axis outermost
      loss:
        pat: {configs: [configs/synthetic_pat.yaml]}
        ce:  {configs: [configs/synthetic_ce.yaml]}
      seed:
        s0: {args: {seed_everything: 0}}
        s1: {args: {seed_everything: 1}}
    slurm: {time: "02:00:00", gres: "gpu:1"}   # optional #SBATCH options for --mode slurm
    csv: docs/studies/synthetic_table3.csv     # optional: the study's per-run CSV, kept by --mode run
    test: last                                 # optional: after fit, `pat-seg test` of the last (or best) checkpoint
    decision: {...}                            # optional: the study's decision rule (`pat-seg report --decision`)

``axes`` may also be a list of such grids, run in turn: a study whose arms have different numbers
of seeds (its core arms with 5, the rest with 3) is one file, core grid first. Versions must differ
across the grids.

Config paths and argument values may name the value chosen on any axis in braces, e.g.
``configs/{dataset}_{loss}.yaml``. A run's version is its axis values joined by ``-`` (``pat-s0``),
so a run directory says which grid point it is, and its saved ``config.yaml`` says exactly what ran
(``pat-seg report`` reads the latter). No scheduler is invented: ``run`` trains the runs in this
process's environment, one after the other (``--jobs N``: N at once), ``print`` lists the commands,
``slurm`` writes a job-array script.

``test: last|best`` follows each successful fit with ``pat-seg test --config <run>/config.yaml
--ckpt_path last|best``, which writes the ``test/*`` values into the run's ``test/`` folder (``pat-seg
report --split test`` reads them). A run is done when its commands exited 0: ``--mode run`` then
writes ``.sweep-done`` into its folder and skips it next time. With ``csv:``, ``--mode run`` also adds
the run's lines (``val``, and ``test`` with ``test:``) to that file at once, as ``pat-seg report
--format csv --per-run`` writes them (:mod:`pat_seg.experiments.study_csv`), and skips every run the
file holds, even where its folder is absent (a fresh clone): a sweep stopped at any point goes on,
on any machine with the file, by running the same command again. A run that failed writes no line and
is tried again: one that left a checkpoint (interrupted by Ctrl-C or SIGTERM, which stop it where it
can be continued, or killed) is continued from it with ``--ckpt_path last``; one whose fit finished
only has its test redone; one that left nothing to continue from is set aside and trained afresh.
Stopping the sweep (Ctrl-C, SIGTERM) stops its runs the same way, each saving its ``last.ckpt``. The SLURM tasks write no line (they run at once elsewhere; the file has one writer):
each marks its run done, and ``--mode run`` afterwards adds the marked runs to the file without training.

The sweep's name and every version must be one folder name (:func:`~pat_seg.experiments.run_folder.folder_name`).
``--mode run`` starts each command with this Python without the current folder on its import path, so
a ``pat_seg.py`` or ``lightning.py`` lying there is never imported (:func:`python_module`); the SLURM
script quotes every value of its shell lines and refuses a line break in an ``#SBATCH`` value.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, get_args

import yaml

from pat_seg.config_files import resolve_config, shipped_config
from pat_seg.experiments.run_folder import CHECKPOINTS, CONFIG, SUBFOLDERS, folder_name, yaml_value
from pat_seg.experiments.run_status import fit_completed
from pat_seg.table_text import holds_control_character

if TYPE_CHECKING:
    from pat_seg.experiments.study_csv import StudyCsv

MODES = ("run", "print", "slurm")
# Written into a run directory when its `pat-seg fit` (and `pat-seg test`, with `test:`) exited 0.
DONE_MARKER = ".sweep-done"
LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"
TestCheckpoint = Literal["last", "best"]
KEYS = ("name", "save_dir", "configs", "args", "axes", "slurm", "csv", "test", "decision")
POLL_SECONDS = 0.2  # how often --mode run looks whether a run's process has ended


@dataclass
class SweepRun:
    """One grid point: its version name, --config files and flags."""

    version: str
    configs: list[str]
    args: dict[str, Any]

    def command(self, name: str, save_dir: str, extra: list[str] | None = None) -> list[str]:
        """The ``pat-seg fit`` argument list with every override spelled out."""
        command = ["pat-seg", "fit"]
        for config in self.configs:
            command += ["--config", config]
        # A string goes as it is (jsonargparse parses it); anything else as YAML writes it inline.
        command += [f"--{key}={v if isinstance(v, str) else yaml_value(v)}" for key, v in self.args.items()]
        command += [
            f"--trainer.logger.class_path={LOGGER}",
            f"--trainer.logger.init_args.save_dir={save_dir}",
            f"--trainer.logger.init_args.name={name}",
            f"--trainer.logger.init_args.version={self.version}",
        ]
        return command + list(extra or [])


@dataclass
class Sweep:
    """The expanded sweep file: ``runs`` to do (``--only`` selects some), of the whole ``grid``."""

    name: str
    save_dir: str
    runs: list[SweepRun]
    slurm: dict[str, Any]
    csv: str | None = None
    test: TestCheckpoint | None = None
    grid: list[SweepRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.grid = self.grid or list(self.runs)

    def run_dir(self, run: SweepRun) -> Path:
        return Path(self.save_dir) / self.name / run.version

    def run_name(self, run: SweepRun) -> str:
        """The run as the study CSV's ``run`` column names it: its folder relative to save_dir."""
        return f"{self.name}/{run.version}"

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits whose values the study records for each run."""
        return ("val", "test") if self.test is not None else ("val",)

    def commands(self, run: SweepRun, extra: list[str]) -> list[list[str]]:
        """``pat-seg fit``, then with ``test:`` ``pat-seg test`` of the checkpoint it names, read with
        the config the fit saved (the test's metrics go to the run's ``test/`` folder)."""
        commands = [run.command(self.name, self.save_dir, extra)]
        if self.test is not None:
            config = str(self.run_dir(run) / CONFIG)
            commands.append(["pat-seg", "test", "--config", config, f"--ckpt_path={self.test}"])
        return commands

    def shell_line(self, run: SweepRun, extra: list[str]) -> str:
        return " && ".join(shlex.join(command) for command in self.commands(run, extra))


def _configs_and_args(entry: dict[str, Any], where: str) -> tuple[list[str], dict[str, Any]]:
    """The ``configs`` (a path or a list of paths) and ``args`` (flag -> value) of the sweep's top level
    or of one value of an axis; ``where`` starts their names in an error."""
    configs, args = entry.get("configs"), entry.get("args")
    configs = [] if configs is None else [configs] if isinstance(configs, str) else configs
    if not isinstance(configs, list) or not all(isinstance(config, str) for config in configs):
        raise ValueError(f"{where}configs must be a path or a list of paths; got {entry['configs']!r}")
    if not isinstance(args, dict | None):
        raise ValueError(f"{where}args must be a mapping of flag -> value; got {args!r}")
    return list(configs), dict(args or {})


def _fill(text: Any, choice: dict[str, str], path: Path) -> Any:
    """Replace ``{axis}`` in a string of the sweep file ``path`` by the value name chosen on that axis."""
    if not isinstance(text, str):
        return text
    try:
        return text.format(**choice)
    except (KeyError, IndexError) as error:
        raise ValueError(f"{path} refers to {error} but the axes are {sorted(choice)}") from None


def _grid_runs(axes: Any, where: str, base_configs: list[str], base_args: dict[str, Any], path: Path) -> list[SweepRun]:
    """The runs of one grid (``axes``: axis name -> value name -> {configs, args}), first axis outermost."""
    if not isinstance(axes, dict) or not axes or not all(isinstance(v, dict) and v for v in axes.values()):
        raise ValueError(
            f"{where} must map each axis name to a non-empty mapping of value name -> "
            f"{{configs, args}} (or be a list of such grids); got {axes!r}"
        )
    runs = []
    for combination in itertools.product(*[list(values.items()) for values in axes.values()]):
        choice = {axis: str(value_name) for axis, (value_name, _) in zip(axes, combination)}
        configs, args = list(base_configs), dict(base_args)
        for axis, (value_name, entry) in zip(axes, combination):
            entry = entry or {}
            at = f"{where}.{axis}.{value_name}"
            if not isinstance(entry, dict) or set(entry) - {"configs", "args"}:
                raise ValueError(f"{at} must be a mapping with 'configs' and/or 'args'; got {entry!r}")
            more_configs, more_args = _configs_and_args(entry, f"{at}.")
            configs += more_configs
            args.update(more_args)
        configs = [_fill(config, choice, path) for config in configs]
        args = {key: _fill(value, choice, path) for key, value in args.items()}
        runs.append(SweepRun("-".join(choice.values()), configs, args))
    return runs


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file (a path, or a shipped one by name: ``sweeps/table3.yaml``,
    :mod:`pat_seg.config_files`); errors name the file and the offending entry."""
    path = Path(resolve_config(str(path)))
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as error:  # e.g. unquoted braces in a flow mapping: {configs: [{loss}.yaml]}
        mark = error.problem_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        hint = " (quote a value that holds braces)" if "{" in str(error.problem) else ""
        raise ValueError(f"{path}{where} is not valid YAML: {error.problem}{hint}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path} must be a mapping of name, save_dir, configs, args, axes, slurm; got {spec!r}")
    unknown = set(spec) - set(KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected {', '.join(KEYS)}")
    csv, test = spec.get("csv"), spec.get("test")
    # The study's decision rule, fixed with the sweep: `pat-seg report --decision FILE` executes it.
    if not isinstance(spec.get("decision"), dict | None):
        raise ValueError(f"{path}: 'decision' must be a mapping (the study's decision rule); got {spec['decision']!r}")
    if csv is not None and (not isinstance(csv, str) or not csv.endswith(".csv")):
        raise ValueError(f"{path}: 'csv' must be the path of the study's .csv file; got {csv!r}")
    if test is not None and test not in get_args(TestCheckpoint):
        raise ValueError(
            f"{path}: 'test' must be one of {list(get_args(TestCheckpoint))} (the checkpoint to test); got {test!r}"
        )
    name = spec.get("name") or path.stem
    axes = spec.get("axes")
    # A list of grids runs them in turn: arms with different seed counts in one study (core first).
    grids = axes if isinstance(axes, list) and axes else [axes]
    base_configs, base_args = _configs_and_args(spec, f"{path}: ")
    runs: list[SweepRun] = []
    for number, grid in enumerate(grids):
        where = f"{path}: axes[{number}]" if isinstance(axes, list) else f"{path}: 'axes'"
        runs += _grid_runs(grid, where, base_configs, base_args, path)
    versions = [run.version for run in runs]
    # Each run's folder is <save_dir>/<name>/<version>: both must be one folder name (no '/', '..').
    folder_name(name, f"{path}: the sweep's name")
    for version in versions:
        folder_name(version, f"{path}: the run version (its axis values joined by '-')")
    repeated = sorted({version for version in versions if versions.count(version) > 1})
    if repeated:
        raise ValueError(
            f"{path}: the grids give the run {repeated[0]!r} more than once; each grid point needs a name of its own"
        )
    return Sweep(name, str(spec.get("save_dir") or "lightning_logs"), runs, dict(spec.get("slurm") or {}), csv, test)


def print_commands(sweep: Sweep, extra: list[str]) -> str:
    """One line per run: its ``pat-seg fit`` (``&& pat-seg test ...`` with ``test:``)."""
    return "".join(sweep.shell_line(run, extra) + "\n" for run in sweep.runs)


def slurm_script(sweep: Sweep, extra: list[str]) -> str:
    """A job-array script: task ``i`` runs the ``i``-th command and, when it succeeds, marks the run done
    (``sbatch`` it from the repository root). The tasks do not write the study CSV: they run at once on
    other nodes, and the CSV has one writer. ``--mode run`` afterwards adds the marked runs to it. A
    task that finds checkpoints in its run's folder (SLURM requeued it after a pre-emption) continues
    that run with ``--ckpt_path=last``.

    The script's first command is ``set -euo pipefail`` (``#SBATCH`` lines must come before any
    command). Every value in a shell line is quoted (``shlex.quote``); an ``#SBATCH`` line is read by
    ``sbatch``, not by the shell, so a value there with a line break, which would start a shell line
    of its own, is refused (``ValueError`` naming its key).
    """
    options = [  # (what sets it, #SBATCH option, value)
        ("name", "job-name", sweep.name),
        ("the number of runs", "array", f"0-{len(sweep.runs) - 1}"),
        ("save_dir", "output", f"{sweep.save_dir}/{sweep.name}/slurm-%A_%a.out"),
        *((f"slurm: {str(key)!r}", key, value) for key, value in sweep.slurm.items()),
    ]
    lines = ["#!/bin/bash"]
    for where, key, value in options:
        for text in (str(key), str(value)):
            if holds_control_character(text):
                raise ValueError(
                    f"sweep {where}: {text!r} holds a line break or another control character, which would "
                    f"end its #SBATCH line and run the rest as a shell command"
                )
        lines.append(f"#SBATCH --{key}={value}")
    lines += ["set -euo pipefail", "", "COMMANDS=("]
    for run in sweep.runs:
        fit, *after = sweep.commands(run, extra)
        # $RESUME, expanded when the line is eval'd: empty, or --ckpt_path=last for a requeued task.
        line = " && ".join([f"{shlex.join(fit)} $RESUME", *map(shlex.join, after)])
        marker = shlex.quote(str(sweep.run_dir(run) / DONE_MARKER))
        lines.append(f"  {shlex.quote(f'{line} && touch {marker}')}")
    lines += [")", "RUN_DIRS=("]
    lines += [f"  {shlex.quote(str(sweep.run_dir(run)))}" for run in sweep.runs]
    lines += [
        ")",
        f"mkdir -p {shlex.quote(sweep.save_dir)}",
        # A task SLURM requeued (pre-empted: its run saved last.ckpt) continues its run; a fit without
        # --ckpt_path into a folder that holds a run is refused.
        'RESUME=""',
        'if compgen -G "${RUN_DIRS[$SLURM_ARRAY_TASK_ID]}/checkpoints/*.ckpt" > /dev/null; then',
        '  RESUME="--ckpt_path=last"',
        "fi",
        'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"',
        "",
    ]
    return "\n".join(lines)


# `python -m MODULE` puts the current folder first on sys.path, so a `pat_seg.py`, `lightning.py` or
# `torch/` there would be imported instead of the real ones. A run's process starts through this
# bootstrap, which drops that entry (`python -P` would, from Python 3.11) and runs MODULE as `python -m`
# would; PYTHONSAFEPATH (3.11+) keeps it out of the processes the run starts itself (DDP's, which
# Lightning starts with `python -m pat_seg.__main__`).
_BOOTSTRAP = """\
import runpy, sys
if not getattr(sys.flags, "safe_path", False):
    del sys.path[0]
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


def python_module(module: str, args: list[str]) -> list[str]:
    """The command that runs ``python -m module *args`` with this interpreter, importing nothing from
    the current folder (run it with :func:`child_environment`)."""
    return [sys.executable, "-c", _BOOTSTRAP, module, *args]


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` for a :func:`python_module` process: PYTHONSAFEPATH set, and PYTHONPATH as given
    (users' own classes may live on it), led by the folder this process imported pat_seg from when
    that pat_seg would not be found without the current folder (a sweep started from a source
    checkout with ``python -m pat_seg``)."""
    environment = {**base, "PYTHONSAFEPATH": "1"}
    init = sys.modules["pat_seg"].__file__
    if init is not None and _origin_without_current_folder("pat_seg") != init:
        paths = [str(Path(init).parent.parent), *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


def _origin_without_current_folder(name: str) -> str | None:
    """The file ``import name`` would load in a child process of :func:`python_module`: the same
    finders in the same order (an editable install's own finder too), the path-based one searching
    sys.path without the entry Python put first for this process (the current folder, or a script's)."""
    paths = sys.path if getattr(sys.flags, "safe_path", False) else sys.path[1:]
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            spec = importlib.machinery.PathFinder.find_spec(name, paths)
        else:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, None) if find_spec is not None else None
        if spec is not None:
            return spec.origin
    return None


def _cores() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class _Job:
    """One run of ``--mode run``: the commands it has left, and the process running the current one."""

    progress: str
    run: SweepRun
    commands: list[list[str]]
    process: subprocess.Popen | None = None
    log: IO[str] | None = None


def run_all(sweep: Sweep, extra: list[str], force: bool = False, jobs: int = 1) -> int:
    """Train (and test) every run with this Python, ``jobs`` at a time, in the grid's order; skip runs
    finished already (``--force`` reruns them). With a study CSV, add each run's lines to it as it
    finishes, and skip the runs it holds.

    Returns the number of failed runs; a failure does not stop the sweep. Everything that can be
    checked (configs, ``jobs``, the CSV, each run's config) is checked before the first run starts.
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be 1 or more (runs at once); got {jobs}")
    configs = {config for run in sweep.runs for config in run.configs}
    missing = sorted(config for config in configs if not Path(config).is_file() and shipped_config(config) is None)
    if missing:
        raise ValueError(
            f"config files of the sweep {sweep.name!r} do not exist: {missing} (paths are relative to "
            f"{Path.cwd()}, or name a config pat-seg ships)"
        )
    # A terminated sweep must not leave its `pat-seg` children running: SIGTERM becomes SystemExit, on
    # which every child is killed (as Ctrl-C's KeyboardInterrupt does). The caller's handler comes back after.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        study = None
        if sweep.csv is not None:
            from pat_seg.experiments.study_csv import StudyCsv  # the report's code: torch, only when needed

            study = StudyCsv.open(sweep.csv)
        todo = _plan(sweep, extra, force, study)
        if not todo:
            return 0
        recorder = None if study is None else _Recorder(sweep, study, _grid_configs(sweep, extra))
        return _execute(sweep, todo, jobs, recorder)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _plan(sweep: Sweep, extra: list[str], force: bool, study: StudyCsv | None) -> list[_Job]:
    """The runs to train, each with its commands; the others are reported as skipped."""
    todo = []
    for index, run in enumerate(sweep.runs, 1):
        progress, run_dir = f"[{index}/{len(sweep.runs)}]", sweep.run_dir(run)
        finished = (run_dir / DONE_MARKER).is_file() and not force
        if study is not None and not force and study.has(sweep.run_name(run), sweep.splits):
            print(f"{progress} {run.version}: in {sweep.csv} already, skipped", flush=True)
            continue
        if study is None and finished:
            print(f"{progress} {run.version}: done already, skipped", flush=True)
            continue
        commands = sweep.commands(run, extra)
        if finished or (run_dir.exists() and not force and fit_completed(run_dir)):
            # Trained before (another sweep, a SLURM task; or its test or its line failed) but not in
            # the CSV: add it, tested.
            tested = any((run_dir / SUBFOLDERS["test"]).glob("events.out.tfevents.*"))
            commands = commands[1:] if sweep.test is not None and not tested else []
        elif run_dir.exists() and not force and resumable(run_dir):
            # Interrupted (Ctrl-C, SIGTERM, a kill): continued from its newest readable checkpoint, so
            # no step it finished is trained again.
            commands[0] = [*commands[0], "--ckpt_path=last"]
            print(f"{progress} {run.version}: an unfinished run, continued from its last checkpoint", flush=True)
        elif run_dir.exists():  # a fit never writes into a run's folder: an unfinished run, or --force
            kind = (
                "a finished run's folder (--force)"
                if (run_dir / DONE_MARKER).is_file()
                else "an unfinished run's folder"
            )
            print(f"{progress} {run.version}: {kind}, set aside: {set_aside(sweep, run)}", flush=True)
        todo.append(_Job(progress, run, commands))
    return todo


def resumable(run_dir: Path) -> bool:
    """Whether the run folder holds a checkpoint that ``pat-seg fit --ckpt_path last`` can continue."""
    return any((run_dir / CHECKPOINTS).glob("*.ckpt"))


def set_aside(sweep: Sweep, run: SweepRun) -> Path:
    """Move the folder of a run that did not finish and left no checkpoint to continue from (killed before
    its first one; or any run, with ``--force``) out of the sweep's folder, to
    ``<save_dir>/.sweep-incomplete/<name>/<version>-<time>/``, and return where it went.

    ``pat-seg fit`` refuses to start a run in a folder that holds one: it would write its checkpoints
    beside the old ones (``last-v1.ckpt`` next to the killed run's ``last.ckpt``, which ``--ckpt_path
    last`` would then test) and its events beside the old events (one curve from two runs). Moved, not
    deleted: nothing a run wrote is lost, and a report of ``<name>/*`` never reads it.
    """
    target = Path(sweep.save_dir) / ".sweep-incomplete" / sweep.name / f"{run.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep.run_dir(run).rename(target)
    return target


def _grid_configs(sweep: Sweep, extra: list[str]) -> list[dict[str, Any]]:
    """The config each run of the whole grid will save, from one ``python -m pat_seg.cli.saved_config``
    process (the command line resolves configs; this module does not import it). A ``ValueError``
    naming the first run that cannot be configured."""
    with tempfile.TemporaryDirectory(prefix="pat-seg-sweep-") as folder:
        commands, output = Path(folder) / "commands.json", Path(folder) / "configs.yaml"
        commands.write_text(json.dumps([run.command(sweep.name, sweep.save_dir, extra)[1:] for run in sweep.grid]))
        print(
            f"reading the configs of the {len(sweep.grid)} runs of {sweep.name!r} (the labels of {sweep.csv})",
            flush=True,
        )
        result = subprocess.run(
            python_module("pat_seg.cli.saved_config", [str(commands), str(output)]),
            env=child_environment(os.environ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"reading the configs of the sweep's runs failed:\n{result.stderr[-3000:]}")
        results = yaml.safe_load(output.read_text())
    for run, entry in zip(sweep.grid, results, strict=True):
        if "error" in entry:
            raise ValueError(f"run {run.version} of the sweep {sweep.name!r} cannot be configured: {entry['error']}")
    return [entry["config"] for entry in results]


class _Recorder:
    """Adds each finished run's lines to the study CSV, labelled as the whole grid labels them."""

    def __init__(self, sweep: Sweep, study: StudyCsv, configs: list[dict[str, Any]]) -> None:
        from pat_seg.experiments.report import run_fields
        from pat_seg.experiments.study_csv import grid_labels

        self.sweep, self.study, self.root = sweep, study, Path(sweep.save_dir)
        self.labels = grid_labels([sweep.run_dir(run) for run in sweep.grid], configs, self.root)
        self.order = [sweep.run_name(run) for run in sweep.grid]
        changed = study.relabel({run: run_fields(entry, self.root) for run, entry in self.labels.items()})
        if changed:  # the grid changed since those lines were written (e.g. a regime was added)
            example = changed[0]
            print(
                f"{study.path}: relabelled the lines of {len(changed)} runs, e.g. {example[0]}: {example[1]} -> {example[2]}",
                flush=True,
            )
            study.save(self.order)

    def record(self, run: SweepRun) -> str:
        """Write the lines of the finished ``run``; returns what was written. :class:`IncompleteRun`
        (a ValueError) when the run logged no value of a recorded split, OSError when it left no config."""
        from pat_seg.experiments.study_csv import read_run, run_lines

        name = self.sweep.run_name(run)
        columns, lines = run_lines(read_run(self.sweep.run_dir(run)), self.labels[name], self.sweep.splits, self.root)
        self.study.put(name, columns, lines)
        self.study.save(self.order)
        return f"{len(lines)} lines in {self.study.path}"


def _execute(sweep: Sweep, todo: list[_Job], jobs: int, recorder: _Recorder | None) -> int:
    """Run the jobs, ``jobs`` at once in their order, each command a ``python -m pat_seg`` process."""
    environment, logs = None, None
    if jobs > 1:
        # N runs share the machine: each gets its share of the cores (torch's intra-op threads follow
        # OMP_NUM_THREADS), and its output goes to a file instead of interleaving on the terminal.
        threads = str(max(1, _cores() // jobs))
        environment = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        logs = Path(sweep.save_dir) / sweep.name
        logs.mkdir(parents=True, exist_ok=True)
        print(
            f"{len(todo)} runs, {jobs} at a time with {threads} threads each; output in {logs}/sweep-<version>.log",
            flush=True,
        )
    pending, active, failed = deque(todo), list[_Job](), 0
    try:
        while pending or active:
            while pending and len(active) < jobs:
                job = pending.popleft()
                if job.commands:
                    if logs is not None:
                        job.log = open(logs / f"sweep-{job.run.version}.log", "a")
                    with interrupts_deferred():  # started and tracked, or neither
                        _start(job, environment)
                        active.append(job)
                else:
                    failed += not _finish(sweep, job, 0, recorder)
            time.sleep(POLL_SECONDS)
            for job in list(active):
                code = job.process.poll() if job.process is not None else 0
                if code is None:
                    continue
                if code == 0 and job.commands:  # fit done: its test next
                    with interrupts_deferred():
                        _start(job, environment)
                    continue
                active.remove(job)
                failed += not _finish(sweep, job, code, recorder)
        return failed
    finally:
        _stop(active)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first that came to the handler it
    would have reached. Starting a run must be one step for :func:`_stop`: a signal handled while
    ``Popen`` waits for the child's ``exec`` (long on a loaded machine) would raise before the process
    is tracked, and leave it training after the sweep ended. Children start with default handlers
    (``exec`` resets caught signals), so they are not affected."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    # Signal handlers are the main thread's; one installed outside Python (None) could not be put back.
    if threading.current_thread() is not threading.main_thread() or None in handlers.values():
        yield
        return
    arrived: list[int] = []
    for signum in handlers:
        signal.signal(signum, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])


def _stop(jobs: list[_Job]) -> None:
    """End the runs still going when the sweep stops (Ctrl-C, SIGTERM, an error): each is asked with
    SIGTERM to stop where it can be continued and save its ``last.ckpt`` (a run that got the terminal's
    Ctrl-C already is stopping: the second signal changes nothing), and waited for. Interrupted again
    while waiting, the sweep kills them at once."""
    running = [job for job in jobs if job.process is not None and job.process.poll() is None]
    try:
        if running:
            print(
                f"stopping {len(running)} run{'s' if len(running) > 1 else ''}: each saves its last.ckpt after "
                f"its current step (interrupt again to kill at once); the same command continues them",
                flush=True,
            )
        for job in running:
            assert job.process is not None
            job.process.send_signal(signal.SIGTERM)
        for job in running:
            assert job.process is not None
            job.process.wait()
    finally:
        for job in jobs:
            if job.process is not None and job.process.poll() is None:
                job.process.kill()
                job.process.wait()
            if job.log is not None:
                job.log.close()


def _start(job: _Job, environment: dict[str, str] | None) -> None:
    command = job.commands.pop(0)
    where = f" > {job.log.name}" if job.log is not None else ""
    print(f"{job.progress} {shlex.join(command)}{where}", flush=True)
    # `python -m pat_seg` is the `pat-seg` script, bound to this interpreter's environment (and pat_seg).
    job.process = subprocess.Popen(
        python_module("pat_seg", command[1:]),
        env=child_environment(environment or os.environ),
        stdout=job.log,
        stderr=subprocess.STDOUT if job.log is not None else None,
    )


def _finish(sweep: Sweep, job: _Job, code: int, recorder: _Recorder | None) -> bool:
    """Record a job that ended with ``code``: its lines and its marker when it succeeded. Whether it did."""
    if job.log is not None:
        job.log.close()
    version, log = job.run.version, f" (output: {job.log.name})" if job.log is not None else ""
    if code != 0:
        print(f"{job.progress} {version}: failed with exit code {code}{log}", flush=True)
        return False
    written = ""
    if recorder is not None:
        try:
            written = f", {recorder.record(job.run)}"
        except (ValueError, OSError) as error:  # ran, but logged nothing to report: no line, tried again next time
            print(f"{job.progress} {version}: failed: {error}{log}", flush=True)
            return False
    run_dir = sweep.run_dir(job.run)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / DONE_MARKER).touch()
    print(f"{job.progress} {version}: finished{written}", flush=True)
    return True


def main(argv: list[str] | None = None) -> None:
    """``pat-seg sweep FILE [--mode run|print|slurm] [--save-dir DIR] [--force] [--only GLOB] [--jobs N]
    [-- extra fit flags]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    argv, extra = argv[:end], argv[end + 1 :]
    parser = argparse.ArgumentParser(
        prog="pat-seg sweep",
        description=__doc__.split("\n\n")[0],
        epilog="Flags after `--` are appended to every `pat-seg fit` command.",
    )
    parser.add_argument(
        "file", help="a sweep file, e.g. configs/sweeps/synthetic_table3.yaml (a shipped one by name from any folder)"
    )
    parser.add_argument("--mode", choices=MODES, default="print")
    parser.add_argument("--save-dir", help="override the sweep's save_dir")
    parser.add_argument("--force", action="store_true", help="--mode run: rerun runs that finished already")
    parser.add_argument(
        "--only",
        action="append",
        metavar="GLOB",
        help="keep the runs whose version matches this glob (repeatable), e.g. --only 'pat-*'",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="--mode run: N runs at once, in the grid's order, each with cores/N threads and its output "
        "in <save_dir>/<name>/sweep-<version>.log (default 1: one after the other, output here)",
    )
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.file)
        if args.only:
            sweep.runs = [run for run in sweep.runs if any(fnmatch(run.version, glob) for glob in args.only)]
            if not sweep.runs:
                raise ValueError(f"no run of {args.file} has a version matching {args.only}")
        if args.save_dir:
            sweep.save_dir = args.save_dir
        if args.mode == "print":
            sys.stdout.write(print_commands(sweep, extra))
        elif args.mode == "slurm":
            sys.stdout.write(slurm_script(sweep, extra))
        else:
            failed = run_all(sweep, extra, args.force, args.jobs)
            if failed:
                parser.exit(1, f"pat-seg sweep: {failed} of {len(sweep.runs)} runs failed\n")
    except ValueError as error:
        parser.exit(2, f"pat-seg sweep: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(128 + signal.SIGINT, "pat-seg sweep: interrupted; run the same command to go on\n")


if __name__ == "__main__":
    main()
