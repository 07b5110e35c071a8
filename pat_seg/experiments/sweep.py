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

Config paths and argument values may name the value chosen on any axis in braces, e.g.
``configs/{dataset}_{loss}.yaml``. A run's version is its axis values joined by ``-`` (``pat-s0``),
so a run directory says which grid point it is, and its saved ``config.yaml`` says exactly what ran
(``pat-seg report`` reads the latter). No scheduler is invented: ``run`` trains one run after the
other in this process's environment, ``print`` lists the commands, ``slurm`` writes a job-array script.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from pat_seg.experiments.run_folder import yaml_value

MODES = ("run", "print", "slurm")
DONE_MARKER = ".sweep-done"  # written into a run directory when its `pat-seg fit` exited 0
LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"


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
    name: str
    save_dir: str
    runs: list[SweepRun]
    slurm: dict[str, Any]

    def run_dir(self, run: SweepRun) -> Path:
        return Path(self.save_dir) / self.name / run.version


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


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; errors name the file and the offending entry."""
    path = Path(path)
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
    unknown = set(spec) - {"name", "save_dir", "configs", "args", "axes", "slurm"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected name, save_dir, configs, args, axes, slurm")
    name = spec.get("name") or path.stem
    axes = spec.get("axes")
    if not isinstance(axes, dict) or not axes or not all(isinstance(v, dict) and v for v in axes.values()):
        raise ValueError(
            f"{path}: 'axes' must map each axis name to a non-empty mapping of value name -> "
            f"{{configs, args}}; got {axes!r}"
        )
    base_configs, base_args = _configs_and_args(spec, f"{path}: ")
    runs = []
    for combination in itertools.product(*[list(values.items()) for values in axes.values()]):
        choice = {axis: str(value_name) for axis, (value_name, _) in zip(axes, combination)}
        configs, args = list(base_configs), dict(base_args)
        for axis, (value_name, entry) in zip(axes, combination):
            entry = entry or {}
            where = f"{path}: axes.{axis}.{value_name}"
            if not isinstance(entry, dict) or set(entry) - {"configs", "args"}:
                raise ValueError(f"{where} must be a mapping with 'configs' and/or 'args'; got {entry!r}")
            more_configs, more_args = _configs_and_args(entry, f"{where}.")
            configs += more_configs
            args.update(more_args)
        configs = [_fill(config, choice, path) for config in configs]
        args = {key: _fill(value, choice, path) for key, value in args.items()}
        runs.append(SweepRun("-".join(choice.values()), configs, args))
    return Sweep(name, str(spec.get("save_dir") or "lightning_logs"), runs, dict(spec.get("slurm") or {}))


def print_commands(sweep: Sweep, extra: list[str]) -> str:
    return "".join(shlex.join(run.command(sweep.name, sweep.save_dir, extra)) + "\n" for run in sweep.runs)


def slurm_script(sweep: Sweep, extra: list[str]) -> str:
    """A job-array script: task ``i`` runs the ``i``-th command (``sbatch`` it from the repository root)."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={sweep.name}",
        f"#SBATCH --array=0-{len(sweep.runs) - 1}",
        f"#SBATCH --output={sweep.save_dir}/{sweep.name}/slurm-%A_%a.out",
    ]
    lines += [f"#SBATCH --{key}={value}" for key, value in sweep.slurm.items()]
    lines += ["set -euo pipefail", "", "COMMANDS=("]
    lines += [f"  {shlex.quote(shlex.join(run.command(sweep.name, sweep.save_dir, extra)))}" for run in sweep.runs]
    lines += [")", f"mkdir -p {shlex.quote(sweep.save_dir)}", 'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"', ""]
    return "\n".join(lines)


def run_all(sweep: Sweep, extra: list[str], force: bool = False) -> int:
    """Train every run in turn with this Python; skip runs already finished (``--force`` reruns them).

    Returns the number of failed runs; a failure does not stop the sweep.
    """
    missing = sorted({config for run in sweep.runs for config in run.configs if not Path(config).is_file()})
    if missing:
        raise ValueError(
            f"config files of the sweep {sweep.name!r} do not exist: {missing} (paths are relative to {Path.cwd()})"
        )
    # A terminated sweep must not leave its current `pat-seg fit` running: SIGTERM becomes SystemExit,
    # on which subprocess.run kills the child before re-raising. The caller's handler comes back after.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    failed = 0
    try:
        for index, run in enumerate(sweep.runs, 1):
            progress, run_dir = f"[{index}/{len(sweep.runs)}]", sweep.run_dir(run)
            if (run_dir / DONE_MARKER).is_file() and not force:
                print(f"{progress} {run.version}: done already, skipped", flush=True)
                continue
            command = run.command(sweep.name, sweep.save_dir, extra)
            print(f"{progress} {shlex.join(command)}", flush=True)
            # `python -m pat_seg` is the `pat-seg` script, bound to this interpreter's environment.
            result = subprocess.run([sys.executable, "-m", "pat_seg"] + command[1:])
            if result.returncode == 0:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / DONE_MARKER).touch()
            else:
                failed += 1
                print(f"{progress} {run.version}: failed with exit code {result.returncode}", flush=True)
        return failed
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """``pat-seg sweep FILE [--mode run|print|slurm] [--save-dir DIR] [--force] [-- extra fit flags]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    argv, extra = argv[:end], argv[end + 1 :]
    parser = argparse.ArgumentParser(
        prog="pat-seg sweep",
        description=__doc__.split("\n\n")[0],
        epilog="Flags after `--` are appended to every `pat-seg fit` command.",
    )
    parser.add_argument("file", help="a sweep file, e.g. configs/sweeps/synthetic_table3.yaml")
    parser.add_argument("--mode", choices=MODES, default="print")
    parser.add_argument("--save-dir", help="override the sweep's save_dir")
    parser.add_argument("--force", action="store_true", help="--mode run: rerun runs that finished already")
    parser.add_argument(
        "--only",
        action="append",
        metavar="GLOB",
        help="keep the runs whose version matches this glob (repeatable), e.g. --only 'pat-*'",
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
            failed = run_all(sweep, extra, args.force)
            if failed:
                parser.exit(1, f"pat-seg sweep: {failed} of {len(sweep.runs)} runs failed\n")
    except ValueError as error:
        parser.exit(2, f"pat-seg sweep: error: {error}\n")


if __name__ == "__main__":
    main()
