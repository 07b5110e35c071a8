"""Whole `pat-seg fit` runs on the CPU: float32 against bf16 autocast, channels-last, torch.compile,
threads per process, and two one-thread runs side by side against one two-thread run.

Each variant is the same `pat-seg fit` command with other flags (and thread environment), run as a
whole process, the variants alternated round by round so that a drift of the machine's speed hits
them alike. Per variant the table gives the median wall time over the rounds, the peak resident
memory of the largest process, and the final validation mIoU (from the run's ``hparams.yaml``), so a
speed-up is only read together with the result it gives. A "pair" variant starts two copies of its
command at once (each with the given threads) and counts the wall time until both ended: its time per
run is that wall time divided by two.

    # the default run (pat_seg/configs/default.yaml, 12 epochs of the synthetic data)
    python benchmarks/cpu_training.py --rounds 3 --markdown docs/benchmarks.md default
    # 2 epochs of the CamVid study's protocol (configs/sweeps/camvid_table3.yaml), prepared at 180x240
    python benchmarks/cpu_training.py --rounds 2 camvid --root data/CamVid

Run it on an idle machine: every variant uses all cores, and other load inflates wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parent.parent
CPU_FAST = str(REPOSITORY / "configs" / "trainer" / "cpu_fast.yaml")


@dataclass
class Variant:
    """One way of running the command: extra flags, threads per process, copies at once."""

    name: str
    flags: list[str]
    threads: int
    copies: int = 1
    walls: list[float] = field(default_factory=list)
    peaks_mib: list[float] = field(default_factory=list)
    mious: list[float] = field(default_factory=list)


def variants(cores: int) -> list[Variant]:
    """The variants compared: float32 first (the reference), then each lever alone and together."""
    return [
        Variant("float32", [], cores),
        Variant("bf16 autocast", ["--trainer.precision=bf16-mixed"], cores),
        Variant("bf16 + channels-last", ["--config", CPU_FAST], cores),
        Variant("bf16 + channels-last + torch.compile", ["--config", CPU_FAST, "--model.compile_model=true"], cores),
        Variant("bf16 + channels-last, 1 thread", ["--config", CPU_FAST], 1),
        Variant(f"bf16 + channels-last, {cores} runs of 1 thread side by side", ["--config", CPU_FAST], 1, cores),
    ]


def base_command(task: str, root: str | None) -> list[str]:
    """The `pat-seg fit` command every variant extends."""
    command = [sys.executable, "-m", "pat_seg", "fit", "--trainer.enable_progress_bar=false"]
    if task == "default":
        return command
    if root is None:
        raise SystemExit("camvid: give --root, the CamVid folder prepared at 180x240 (see the module docstring)")
    # The CamVid study's protocol (configs/sweeps/camvid_table3.yaml) for 2 epochs.
    return command + [
        "--config",
        str(REPOSITORY / "configs" / "camvid_pat.yaml"),
        f"--data.root={Path(root).resolve()}",
        "--data.size=[180,240]",
        "--data.prepared=require",
        "--data.num_workers=1",
        "--model.model.init_args.base_channels=16",
        "--model.model.init_args.depth=4",
        "--trainer.max_epochs=2",
    ]


def final_miou(run_root: Path) -> float:
    """``hp/miou`` of the single run written under ``run_root``."""
    (hparams,) = run_root.glob("lightning_logs/*/version_*/hparams.yaml")
    summary = yaml.safe_load(hparams.read_text())["summary"]
    return float(summary["metrics"]["hp/miou"])


def run_variant(variant: Variant, command: list[str]) -> None:
    """One round of ``variant``: its copies started at once, timed until the last ended."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(variant.threads), "MKL_NUM_THREADS": str(variant.threads)}
    with tempfile.TemporaryDirectory() as folder:
        roots = [Path(folder) / f"copy{k}" for k in range(variant.copies)]
        start = time.perf_counter()
        processes = []
        for root in roots:
            root.mkdir()
            processes.append(
                subprocess.Popen(
                    command + variant.flags,
                    cwd=root,
                    env=environment,
                    stdout=subprocess.DEVNULL,
                    stderr=open(root / "stderr.txt", "w"),  # noqa: SIM115 - closed with the process
                )
            )
        peaks = []
        for process, root in zip(processes, roots):
            # wait4: this child's own resource usage; ru_maxrss is its peak RSS (kilobytes on Linux).
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise SystemExit(f"{variant.name} failed:\n{(root / 'stderr.txt').read_text()[-3000:]}")
            peaks.append(usage.ru_maxrss / 1024)
        variant.walls.append(time.perf_counter() - start)
        variant.peaks_mib.append(max(peaks))
        variant.mious.extend(final_miou(root) for root in roots)


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux; ``platform`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "an unknown CPU"


def table(found: list[Variant], task: str, rounds: int, command: list[str]) -> str:
    reference = statistics.median(found[0].walls)
    shown = shlex.join(["pat-seg", *command[3:]])
    lines = [
        f"Whole `{shown}` runs on the CPU ({task}), {os.cpu_count()} cores of {cpu_name()}, "
        f"torch threads as given, {rounds} alternated rounds; wall: median per run (a pair's wall over 2); "
        "peak RSS: the largest process; mIoU: final validation, every run of the variant.",
        "",
        "| variant | threads | wall s per run | vs float32 | peak RSS MiB | final val mIoU |",
        "|---|---|---|---|---|---|",
    ]
    for variant in found:
        wall = statistics.median(variant.walls) / variant.copies
        mious = ", ".join(f"{100 * m:.2f}" for m in variant.mious)
        lines.append(
            f"| {variant.name} | {variant.threads} | {wall:.1f} | {reference / wall:.2f}x | "
            f"{max(variant.peaks_mib):.0f} | {mious} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["default", "camvid"])
    parser.add_argument("--root", help="camvid: the CamVid folder, prepared at 180x240")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="names of the variants to run (default: all)")
    parser.add_argument("--markdown", help="append the table to this file")
    parser.add_argument("--fit-args", default="", help="more `pat-seg fit` flags for every variant, one string")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    chosen = [v for v in variants(cores) if not args.only or v.name in args.only]
    command = base_command(args.task, args.root) + shlex.split(args.fit_args)
    for round_number in range(args.rounds):
        for variant in chosen:
            run_variant(variant, command)
            print(f"round {round_number + 1}: {variant.name}: {variant.walls[-1]:.1f} s", flush=True)
    text = table(chosen, args.task, args.rounds, command)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
