"""Time and peak memory of every pat-seg loss's forward+backward against ``F.cross_entropy``.

    python benchmarks/losses.py                          # 2x20x256x512 float32 on CPU
    python benchmarks/losses.py --shape 8 19 512 1024 --dtype bfloat16 --device cuda --rounds 20

Runs are interleaved (one of each loss per round, in a rotating order) so that load from other processes on a shared
machine spreads over all losses alike; the table gives the median over rounds. One run is timed by
CUDA events on CUDA (the GPU's own clock) and by the wall clock on the CPU. Peak memory is what
the forward+backward allocates beyond its inputs: ``torch.cuda.max_memory_allocated`` on CUDA, and on
CPU the peak of live tensor storage seen by :class:`LiveTensorMemory`. On CUDA, and under Triton's
CPU interpreter (``TRITON_INTERPRET=1``), PATLoss's opt-in Triton kernel gets a row too.
``benchmarks/gpu_check.py`` runs :func:`measure_losses` at the GPU sizes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage created by ATen ops (and still alive) while the mode is active.

    Every op output's storage is counted from its creation until it is freed (a storage's Python
    object lives as long as the storage itself, so tensors kept only by autograd are still counted);
    inputs made before the mode are not counted. ``allocations`` lists ``(op, dtype, numel)`` of every
    new storage (views are not allocations), so a test can look for a ``[B, L, H, W]`` integer tensor.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, int] = {}  # storage pointer -> bytes
        self.current = 0
        self.peak = 0
        self.allocations: list[tuple[str, torch.dtype, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                self._track(str(func), tensor)
        return out

    def _track(self, op: str, tensor: Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._live:  # empty, or a view of a storage already counted
            return
        self.allocations.append((op, tensor.dtype, size // tensor.element_size()))
        self._live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)


def long_tailed_target(
    shape: tuple[int, int, int, int], device: torch.device, ignore_fraction: float = 0.05, seed: int = 0
) -> Tensor:
    """Labels with class ``c`` about twice as frequent as ``c + 1``, and ``ignore_fraction`` set to 255."""
    batch, num_classes, height, width = shape
    g = torch.Generator().manual_seed(seed)
    prior = 0.5 ** torch.arange(num_classes, dtype=torch.float64)
    target = torch.multinomial(prior, batch * height * width, replacement=True, generator=g).view(batch, height, width)
    target[torch.rand(target.shape, generator=g) < ignore_fraction] = 255
    return target.to(device)


TRITON_ROW = "PATLoss (T=20), Triton"


def build_losses(class_counts: list[float], triton: bool) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Every loss of the paper's Table 3 in its PyTorch code, ``F.cross_entropy`` first, and with
    ``triton`` the opt-in Triton PATLoss; the last row is context for LDAM (not a pat-seg loss)."""
    from pat_seg import losses

    modules: dict[str, torch.nn.Module] = {
        "CrossEntropyLoss": losses.CrossEntropyLoss(),
        "PATLoss (T=20)": losses.PATLoss(temperature=20.0),
        "FocalLoss (g=2)": losses.FocalLoss(gamma=2.0),
        "ClassBalancedLoss": losses.ClassBalancedLoss(class_counts),
        "ClassBalancedFocalLoss": losses.ClassBalancedFocalLoss(class_counts),
        "BalancedSoftmaxLoss": losses.BalancedSoftmaxLoss(class_counts),
        "LDAMLoss (+DRW)": losses.LDAMLoss(class_counts, drw_epoch=0),
        "BLVLoss (s=0.5)": losses.BLVLoss(class_counts, sigma=0.5),
    }
    if triton:
        modules[TRITON_ROW] = losses.PATLoss(temperature=20.0, implementation="triton")
    table: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "F.cross_entropy": lambda logits, target: F.cross_entropy(logits, target, ignore_index=255)
    }
    for name, module in modules.items():
        table[name] = module.train()
    # Context for LDAM, not a pat-seg loss: the softmax of 20 * logits alone costs more than that of the
    # logits, as more exp() results fall in the slow subnormal range.
    table["(F.cross_entropy of 20 * logits)"] = lambda logits, target: F.cross_entropy(
        logits * 20.0, target, ignore_index=255
    )
    return table


def forward_backward(loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor) -> None:
    logits.grad = None
    loss(logits, target).backward()


def peak_bytes(loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor) -> int:
    if logits.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        forward_backward(loss, logits, target)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    logits.grad = None
    with LiveTensorMemory() as tracker:
        forward_backward(loss, logits, target)
    return tracker.peak


def triton_runs_here(device: torch.device) -> bool:
    """Whether the Triton kernel can run on ``device``: CUDA, or the CPU under Triton's interpreter."""
    from pat_seg.kernels import triton_available

    if not triton_available():
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def timed_run(loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor) -> float:
    """Milliseconds of one forward+backward: CUDA events on CUDA (warm queue, no host gaps), else wall clock."""
    logits.grad = None
    if logits.device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        loss(logits, target).backward()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end)
    start = time.perf_counter()
    loss(logits, target).backward()
    return 1000 * (time.perf_counter() - start)


def measure_losses(
    shape: tuple[int, int, int, int],
    dtype: torch.dtype,
    device: torch.device,
    rounds: int,
    warmup: int,
    triton: bool | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Forward+backward of every loss on one ``[B, L, H, W]`` logits tensor, in interleaved rounds.

    Returns, per loss: ``median_ms``, ``min_ms``, ``max_ms``, ``time_ratio`` (median / the median of
    ``F.cross_entropy``), ``round_ratio`` (median over rounds of each round's own ratio),
    ``peak_mib`` (allocated beyond the logits and target, their gradient included) and
    ``memory_ratio`` (against ``F.cross_entropy``'s).
    """
    target = long_tailed_target(shape, device, seed=seed)
    counts = torch.bincount(target[target != 255].flatten(), minlength=shape[1]).tolist()
    generator = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(shape, device=device, generator=generator).to(dtype).requires_grad_()
    table = build_losses([float(c) for c in counts], triton_runs_here(device) if triton is None else triton)
    times: dict[str, list[float]] = {name: [] for name in table}
    names = list(table)
    for round_ in range(warmup + rounds):
        # Each round starts at a different loss, so no loss always runs right after the same one.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            elapsed = timed_run(table[name], logits, target)
            if round_ >= warmup:
                times[name].append(elapsed)
    memory = {name: peak_bytes(loss, logits, target) for name, loss in table.items()}
    reference_time = statistics.median(times["F.cross_entropy"])
    rows = {}
    for name in table:
        median = statistics.median(times[name])
        rows[name] = {
            "median_ms": median,
            "min_ms": min(times[name]),
            "max_ms": max(times[name]),
            "time_ratio": median / reference_time,
            "round_ratio": statistics.median(t / r for t, r in zip(times[name], times["F.cross_entropy"])),
            "peak_mib": memory[name] / 2**20,
            "memory_ratio": memory[name] / max(memory["F.cross_entropy"], 1),
        }
    return rows


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """The rows of :func:`measure_losses` as the markdown table of docs/benchmarks.md."""
    lines = [
        "| loss | time ms (median) | min-max ms | x F.cross_entropy | per-round ratio | peak MiB | x F.cross_entropy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['median_ms']:.1f} | {row['min_ms']:.1f}-{row['max_ms']:.1f} | "
            f"{row['time_ratio']:.2f} | {row['round_ratio']:.2f} | {row['peak_mib']:.0f} | "
            f"{row['memory_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 20, 256, 512], metavar=("B", "L", "H", "W"))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=9, help="timed runs of each loss (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = tuple(args.shape)
    rows = measure_losses(shape, getattr(torch, args.dtype), device, args.rounds, args.warmup)  # type: ignore[arg-type]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(
        f"logits {'x'.join(map(str, shape))} {args.dtype} on {device} (threads: {threads}), "
        f"forward+backward, median of {args.rounds} interleaved rounds"
    )
    print("time: median and range over rounds; x F.cross_entropy: ratio of medians, and the median of the")
    print("per-round ratios (each loss against F.cross_entropy in the same round: steadier under load)")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
