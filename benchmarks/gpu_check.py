"""GPU truth in one command: verify and time every GPU path of pat-seg, or smoke-test this script on a CPU.

    python benchmarks/gpu_check.py --out gpu-check/              # one H100/H200: at most 8 minutes
    python benchmarks/gpu_check.py --smoke --out /tmp/smoke      # any CPU: tiny sizes, about a minute

Parts, in this order, each in its own process with its own time limit, so that a crash, a CUDA error
that poisons the context or a hang loses that part only (expected seconds on one H100/H200, not
yet measured, and the limit):

1. ``tests``   ``pytest -m gpu``: the Triton kernel compiled for the card, 16-mixed and bf16-mixed
               training with every loss, ``torch.compile`` + channels-last through the CLI, the
               one-host-sync check (about 150 s; limit 200 s).
2. ``diff``    PATLoss through Triton against its PyTorch code on the GPU: largest absolute
               difference of the loss and of the gradient, 8x19x512x1024 and 8x150x512x512, float32
               and bfloat16 logits (15 s; 60 s).
3. ``losses``  every loss's forward+backward (PyTorch code, PAT also through Triton, and
               ``F.cross_entropy``) at the same shapes and dtypes: median of 20 timed rounds (CUDA
               events, 3 warm-up rounds) and peak memory above the inputs, as ratios to
               ``F.cross_entropy`` in the same process (60 s; 120 s).
4. ``step``    DeepLabV3+ (ResNet-50, random init) training steps through ``Trainer.fit``, bf16-mixed,
               batch 8 of 512x1024, channels-last, with CE, PAT (PyTorch) and PAT (Triton): ms per
               step, images/s, peak memory (45 s; 100 s).
5. ``ddp``     two-process DDP (NCCL, SyncBatchNorm, bf16-mixed) with PAT: training steps, weights
               equal on both ranks, a validation; skipped, and said so, with fewer than 2 GPUs (30 s; 60 s).
6. ``data``    ``benchmarks/data.py`` on this machine's CPU cores at the publishers' file sizes: images/s
               per loader worker of every disk data module, from the sources and from the prepared
               split (``pat-seg prepare``, whose build time it also reports), workers that feed
               part 4's fastest step (60 s; 120 s).

Plus ``env`` first (versions, devices; 10 s; 60 s). The whole run is also capped by ``--budget``
(480 s): a part that would start with less than 10 s left is recorded as not run.

``--smoke`` runs the same parts at tiny sizes on the CPU (Triton under ``TRITON_INTERPRET=1``, wall
clock instead of CUDA events, ``pytest -m gpu`` collecting and skipping, DDP on two CPU processes),
so that ``tests/test_gpu_check.py`` keeps this script working where no GPU is.

Output folder: ``summary.md`` (every table; GPU, versions, date, commit), ``results.json`` (every
number and each check's verdict), ``pytest.log``, ``logs/<part>.log``, ``parts/<part>.json``. The
exit status is 1 when a check fails -- a part failed or timed out, a table row is missing, or a
Triton/PyTorch difference is over its tolerance -- and everything measured is written regardless.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PARTS_SCRIPT = Path(__file__).resolve().with_name("gpu_parts.py")

# Rows every run must produce (the loss table of docs/benchmarks.md, "GPU check"; gpu_parts.py measures them).
LOSS_ROWS = (
    "F.cross_entropy",
    "CrossEntropyLoss",
    "FocalLoss (g=2)",
    "ClassBalancedLoss",
    "ClassBalancedFocalLoss",
    "BalancedSoftmaxLoss",
    "LDAMLoss (+DRW)",
    "BLVLoss (s=0.5)",
    "PATLoss (T=20)",
    "PATLoss (T=20), Triton",
)
LOSS_CLASSES = (19, 150)
DTYPES = ("float32", "bfloat16")
STEP_ROWS = ("CE", "PAT (PyTorch)", "PAT (Triton)")
DATA_ROWS = 14  # the 7 protocols of benchmarks/data.py, each from the sources and prepared
# Triton vs the PyTorch code (both float32 math on the same logits). The loss: two float32 sums of
# up to 4M terms in different orders, each within about log2(n) * 2^-24 relative. The gradient is
# written in the logits' dtype: float32 keeps ~1e-6 of the largest entry, a bfloat16 result may
# differ by one unit in its last place (2^-7 of a value near the largest).
LOSS_RTOL = 1e-5
GRAD_TOL_OVER_MAX = {"float32": 1e-5, "bfloat16": 2**-7}


@dataclass(frozen=True)
class Part:
    """One part: name, title, expected and maximum seconds on the GPU run, maximum in the smoke run."""

    name: str
    title: str
    expected_s: int
    limit_s: int
    smoke_limit_s: int


PARTS = (
    Part("env", "environment", 10, 60, 60),
    Part("tests", "1. pytest -m gpu", 150, 200, 120),
    Part("diff", "2. Triton vs PyTorch code", 15, 60, 60),
    Part("losses", "3. loss forward+backward", 60, 120, 90),
    Part("step", "4. DeepLabV3+ training step", 45, 100, 120),
    Part("ddp", "5. two-process DDP", 30, 60, 120),
    Part("data", "6. data loaders", 60, 120, 120),
)


# --- running parts -----------------------------------------------------------------------------------
def child_env(smoke: bool, interpret: bool) -> dict[str, str]:
    """The environment of a part: the repository on PYTHONPATH; Triton interprets only in smoke parts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("TRITON_INTERPRET", None)
    if smoke and interpret:
        # Must be set before anything imports triton (Lightning and timm do so early): a new process.
        env["TRITON_INTERPRET"] = "1"
    return env


def run_process(command: list[str], log: Path, timeout: float, env: dict[str, str]) -> tuple[int | None, float]:
    """Run ``command`` in its own process group, output to ``log``; ``(exit status or None on timeout, seconds)``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status: int | None = process.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            # The whole group: DDP ranks and DataLoader workers started by the part go too.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = None
    return status, time.perf_counter() - start


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_tests(out: Path, timeout: float, smoke: bool) -> dict[str, Any]:
    """``pytest -m gpu`` (on a CPU every test skips: the smoke run checks that they collect)."""
    log = out / "pytest.log"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider"]
    status, seconds = run_process(command, log, timeout, child_env(smoke, interpret=False))
    summary = next(
        (
            line.strip("= ")
            for line in reversed(log.read_text(errors="replace").splitlines())
            if re.search(r"\d+ (passed|failed|skipped|error|deselected)", line)
        ),
        "",
    )
    counts = {
        word.rstrip("s"): int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)
    }
    return {"status": status, "seconds": seconds, "summary": summary, "counts": counts, "timed_out": status is None}


def run_part(part: Part, out: Path, timeout: float, smoke: bool) -> dict[str, Any]:
    """Run one measuring part of gpu_parts.py; its JSON, or the reason there is none."""
    if part.name == "tests":
        return run_tests(out, timeout, smoke)
    result_file = out / "parts" / f"{part.name}.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(PARTS_SCRIPT), part.name, "--out", str(out)] + (["--smoke"] if smoke else [])
    log = out / "logs" / f"{part.name}.log"
    status, seconds = run_process(command, log, timeout, child_env(smoke, interpret=True))
    record: dict[str, Any] = {"status": status, "seconds": seconds, "timed_out": status is None}
    if status == 0 and result_file.is_file():
        record["data"] = json.loads(result_file.read_text())
    else:
        why = f"timed out after {timeout:.0f} s" if status is None else f"exit status {status}"
        record["error"] = f"{why}; last lines of {log.relative_to(out)}:\n{tail(log)}"
    return record


# --- checks ------------------------------------------------------------------------------------------
def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_tests(record: dict[str, Any], smoke: bool) -> list[str]:
    """pytest must exit 0 with no failure; on the GPU some test must pass, in the smoke run some be collected."""
    counts = record.get("counts", {})
    summary = record.get("summary") or "no summary"
    problems = []
    if record.get("status") != 0 or counts.get("failed") or counts.get("error"):
        problems.append(f"pytest -m gpu: {summary} (exit status {record.get('status')})")
    if not smoke and not counts.get("passed"):
        problems.append(f"pytest -m gpu passed no test ({summary}): is CUDA visible to pytest?")
    if smoke and not (counts.get("passed") or counts.get("skipped")):
        problems.append(f"pytest -m gpu collected no test ({summary})")
    return problems


def rows_by_classes(rows: list[dict[str, Any]]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    grouped: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["shape"][1], row["dtype"]), []).append(row)
    return grouped


def check_losses(data: dict[str, Any]) -> list[str]:
    problems = []
    grouped = rows_by_classes(data.get("rows", []))
    for key in [(c, d) for c in LOSS_CLASSES for d in DTYPES]:
        names = {row["loss"]: row for row in grouped.get(key, [])}
        for name in LOSS_ROWS:
            row = names.get(name)
            if row is None:
                problems.append(f"loss table: no row for {name} at {key[0]} classes, {key[1]}")
            elif not (number(row.get("median_ms")) and row["median_ms"] > 0 and number(row.get("peak_mib"))):
                problems.append(f"loss table: {name} at {key[0]} classes, {key[1]} has no valid time or memory: {row}")
    return problems


def check_diff(data: dict[str, Any]) -> list[str]:
    problems = []
    grouped = rows_by_classes(data.get("rows", []))
    for classes in LOSS_CLASSES:
        for dtype in DTYPES:
            rows = grouped.get((classes, dtype))
            if not rows:
                problems.append(f"Triton vs PyTorch: no row at {classes} classes, {dtype}")
                continue
            row = rows[0]
            loss_ok = number(row.get("loss_rel_diff")) and row["loss_rel_diff"] <= LOSS_RTOL
            grad_ok = number(row.get("grad_diff_over_max")) and row["grad_diff_over_max"] <= GRAD_TOL_OVER_MAX[dtype]
            if not loss_ok:
                problems.append(
                    f"Triton vs PyTorch at {classes} classes, {dtype}: loss differs by "
                    f"{row.get('loss_rel_diff')} relative (tolerance {LOSS_RTOL})"
                )
            if not grad_ok:
                problems.append(
                    f"Triton vs PyTorch at {classes} classes, {dtype}: gradient differs by "
                    f"{row.get('grad_diff_over_max')} of its largest entry (tolerance {GRAD_TOL_OVER_MAX[dtype]})"
                )
    return problems


def check_step(data: dict[str, Any]) -> list[str]:
    rows = {row["loss"]: row for row in data.get("rows", [])}
    return [
        f"training step: no valid row for {name}"
        for name in STEP_ROWS
        if name not in rows or not (number(rows[name].get("ms_per_step")) and rows[name]["ms_per_step"] > 0)
    ]


def check_ddp(data: dict[str, Any], smoke: bool) -> list[str]:
    if "skipped" in data:
        return []
    ranks = data.get("ranks", [])
    problems = []
    if len(ranks) != 2:
        problems.append(f"DDP: {len(ranks)} ranks reported, expected 2")
    if not smoke:
        if any(r.get("backend") != "nccl" for r in ranks):
            problems.append(f"DDP: backend {[r.get('backend') for r in ranks]}, expected nccl")
        if any(not r.get("sync_batchnorm_layers") for r in ranks):
            problems.append("DDP: no SyncBatchNorm layer in the trained module")
    checksums = {(r.get("weight_checksum"), r.get("weight_sq_checksum")) for r in ranks}
    if len(checksums) != 1:
        problems.append(f"DDP: the ranks' weights differ after training: {sorted(checksums)}")
    if not number(data.get("val_miou")):
        problems.append(f"DDP: validation mIoU is {data.get('val_miou')}")
    return problems


def check_data(data: dict[str, Any]) -> list[str]:
    rows = data.get("results", [])
    problems = [] if len(rows) == DATA_ROWS else [f"data loaders: {len(rows)} protocols measured, expected {DATA_ROWS}"]
    for row in rows:
        rates = [*row.get("wall_images_per_s", {}).values(), row.get("images_per_s_per_worker")]
        if not all(number(rate) and rate > 0 for rate in rates):
            problems.append(
                f"data loaders: {row.get('dataset')} / {row.get('protocol')} ({row.get('path')}) has no valid rate"
            )
    return problems


def check(name: str, record: dict[str, Any], smoke: bool) -> list[str]:
    """Problems of one part's record (empty: the part passed)."""
    if name == "tests":
        return check_tests(record, smoke)
    if "data" not in record:
        return [f"{name}: {record.get('error', 'no result')}"]
    data = record["data"]
    checks = {
        "losses": check_losses,
        "diff": check_diff,
        "step": check_step,
        "data": check_data,
        "ddp": lambda d: check_ddp(d, smoke),
        "env": lambda d: [],
    }
    return checks[name](data)


# --- report ------------------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if number(value) else "--"


def loss_table(data: dict[str, Any]) -> list[str]:
    lines = [
        f"Forward+backward, median of {data.get('rounds')} rounds after {data.get('warmup')} warm-up "
        f"rounds ({data.get('timing')}); peak memory above the logits and target, the logits' gradient included.",
        "",
        "| logits | dtype | loss | median ms | x F.cross_entropy | per-round ratio | peak MiB | x F.cross_entropy |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in data.get("rows", []):
        lines.append(
            f"| {'x'.join(map(str, row['shape']))} | {row['dtype']} | {row['loss']} | {fmt(row.get('median_ms'), 3)} | "
            f"{fmt(row.get('time_ratio'), 2)} | {fmt(row.get('round_ratio'), 2)} | {fmt(row.get('peak_mib'), 0)} | "
            f"{fmt(row.get('memory_ratio'), 2)} |"
        )
    return lines


def diff_table(data: dict[str, Any]) -> list[str]:
    gradient = ", ".join(f"{tol:.3g} ({dtype})" for dtype, tol in GRAD_TOL_OVER_MAX.items())
    lines = [
        f'Same logits through `PATLoss(implementation="eager")` and `("triton")`. Tolerances: loss '
        f"{LOSS_RTOL:g} relative; gradient {gradient} of its largest entry.",
        "",
        "| logits | dtype | loss (PyTorch) | loss abs diff | loss rel diff | grad max abs | grad abs diff | diff / max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data.get("rows", []):
        lines.append(
            f"| {'x'.join(map(str, row['shape']))} | {row['dtype']} | {row['loss_pytorch']:.6g} | "
            f"{row['loss_abs_diff']:.3g} | {row['loss_rel_diff']:.3g} | {row['grad_abs_max']:.3g} | "
            f"{row['grad_abs_diff']:.3g} | {row['grad_diff_over_max']:.3g} |"
        )
    return lines


def step_table(data: dict[str, Any]) -> list[str]:
    lines = [
        f"{data.get('model')}, batch {data.get('batch')} of {'x'.join(map(str, data.get('size', [])))}, "
        f"{data.get('precision')}, channels-last, `Trainer.fit` with logging and checkpointing off; "
        f"{data.get('timed_steps')} timed steps after {data.get('warmup_steps')} warm-up steps. Peak memory: above the "
        "pre-loaded batches.",
        "",
        "| loss | ms/step | images/s | peak MiB | step / CE step |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = data.get("rows", [])
    ce = next((r["ms_per_step"] for r in rows if r["loss"] == "CE" and number(r.get("ms_per_step"))), None)
    for row in rows:
        ratio = row["ms_per_step"] / ce if ce and number(row.get("ms_per_step")) else None
        lines.append(
            f"| {row['loss']} | {fmt(row.get('ms_per_step'))} | {fmt(row.get('images_per_s'))} | "
            f"{fmt(row.get('peak_mib'), 0)} | {fmt(ratio, 3)} |"
        )
    return lines


def ddp_lines(data: dict[str, Any]) -> list[str]:
    if "skipped" in data:
        return [f"Skipped: {data['skipped']}."]
    ranks = data.get("ranks", [])
    return [
        f"{data.get('accelerator')}, {data.get('precision')}, sync_batchnorm={data.get('sync_batchnorm')}: "
        f"{data.get('steps')} steps in {fmt(data.get('seconds'))} s, backends {[r.get('backend') for r in ranks]}, "
        f"SyncBatchNorm layers {[r.get('sync_batchnorm_layers') for r in ranks]}, weight checksums "
        f"{[r.get('weight_checksum') for r in ranks]}, val/miou {fmt(data.get('val_miou'), 3)}."
    ]


def summary_markdown(meta: dict[str, Any], records: dict[str, dict[str, Any]], problems: dict[str, list[str]]) -> str:
    env = records.get("env", {}).get("data", {})
    gpus = ", ".join(env.get("gpus", [])) or "no GPU"
    lines = [
        f"# pat-seg GPU check{' (smoke run)' if meta['smoke'] else ''}: {gpus}",
        "",
        f"{meta['date']}, commit {meta['commit']}; torch {env.get('torch')}, triton {env.get('triton')} "
        f"({'interpreted' if env.get('triton_interpreted') else 'compiled'}), CUDA {env.get('cuda_runtime')}; "
        f"host {env.get('cpu')}. Total {meta['seconds']:.0f} s. Verdict: **{'PASSED' if meta['passed'] else 'FAILED'}**.",
        "",
        "| part | status | seconds | expected s (GPU) |",
        "|---|---|---:|---:|",
    ]
    for part in PARTS:
        record = records.get(part.name, {})
        status = "not run" if not record else ("ok" if not problems.get(part.name) else "FAILED")
        if record.get("data", {}).get("skipped"):
            status = "skipped"
        lines.append(f"| {part.title} | {status} | {fmt(record.get('seconds'), 0)} | {part.expected_s} |")
    if problems:
        lines += ["", "Failed checks:", ""]
        lines += [f"- **{name}**: {problem}" for name, found in problems.items() for problem in found]
    sections = [
        ("tests", "1. `pytest -m gpu`", lambda r: [f"`{r.get('summary') or 'no summary'}` (log: pytest.log)"]),
        ("diff", "2. Triton vs PyTorch code", lambda r: diff_table(r["data"])),
        ("losses", "3. Loss forward+backward", lambda r: loss_table(r["data"])),
        ("step", "4. Training step", lambda r: step_table(r["data"])),
        ("ddp", "5. Two-process DDP", lambda r: ddp_lines(r["data"])),
        ("data", "6. Data loaders (this machine's CPU)", lambda r: [r["data"].get("markdown", "")]),
    ]
    for name, title, render in sections:
        record = records.get(name)
        if record and (name == "tests" or "data" in record):
            lines += ["", f"## {title}", "", *render(record)]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (Triton interpreted)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=[p.name for p in PARTS],
        default=None,
        help="run only these parts (env always runs)",
    )
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = start + args.budget
    records: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {}
    for part in PARTS:
        if args.parts and part.name not in args.parts and part.name != "env":
            continue
        left = deadline - time.perf_counter()
        if left < 10:
            records[part.name] = {"error": f"not run: {left:.0f} s of the {args.budget:.0f} s budget left"}
            problems[part.name] = [records[part.name]["error"]]
            continue
        print(f"[{time.perf_counter() - start:5.0f} s] {part.title} ...", flush=True)
        record = run_part(part, out, min(part.smoke_limit_s if args.smoke else part.limit_s, left), args.smoke)
        records[part.name] = record
        found = check(part.name, record, args.smoke)
        if found:
            problems[part.name] = found
        print(f"[{time.perf_counter() - start:5.0f} s]   {'ok' if not found else 'FAILED: ' + found[0]}", flush=True)
        if part.name == "env" and not args.smoke and not record.get("data", {}).get("cuda_available"):
            problems["env"] = ["no CUDA device: this check needs a GPU (use --smoke on a CPU)"]
            break
    meta = {
        "smoke": args.smoke,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "seconds": time.perf_counter() - start,
        "budget_s": args.budget,
        "passed": not problems,
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "problems": problems, "parts": records}, indent=1))
    (out / "summary.md").write_text(summary_markdown(meta, records, problems))
    print(
        f"{'PASSED' if meta['passed'] else 'FAILED'} in {meta['seconds']:.0f} s; wrote {out}/summary.md and results.json"
    )
    return 0 if meta["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
