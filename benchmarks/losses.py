"""Time and peak memory of every pat-seg loss's forward+backward against ``F.cross_entropy``.

    python benchmarks/losses.py                          # 2x20x256x512 on CPU
    python benchmarks/losses.py --shape 8 20 512 1024 --device cuda

Runs are interleaved (one of each loss per round, in a rotating order) so that load from other processes on a shared
machine spreads over all losses alike; the table gives the median over rounds. Peak memory is what
the forward+backward allocates beyond its inputs: ``torch.cuda.max_memory_allocated`` on CUDA, and on
CPU the peak of live tensor storage seen by :class:`LiveTensorMemory`.
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref
from typing import Any, Callable

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


def long_tailed_target(shape: tuple[int, int, int, int], device: torch.device, ignore_fraction: float = 0.05,
                       seed: int = 0) -> Tensor:
    """Labels with class ``c`` about twice as frequent as ``c + 1``, and ``ignore_fraction`` set to 255."""
    batch, num_classes, height, width = shape
    g = torch.Generator().manual_seed(seed)
    prior = 0.5 ** torch.arange(num_classes, dtype=torch.float64)
    target = torch.multinomial(prior, batch * height * width, replacement=True, generator=g).view(batch, height, width)
    target[torch.rand(target.shape, generator=g) < ignore_fraction] = 255
    return target.to(device)


def build_losses(class_counts: list[float], device: torch.device) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
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
    if device.type == "cuda":
        modules["PATLoss (T=20), Triton"] = losses.PATLoss(temperature=20.0, implementation="triton")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 20, 256, 512], metavar=("B", "L", "H", "W"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=9, help="timed runs of each loss (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = tuple(args.shape)
    target = long_tailed_target(shape, device)
    counts = torch.bincount(target[target != 255].flatten(), minlength=shape[1]).tolist()
    logits = torch.randn(shape, device=device, generator=None).requires_grad_()
    table = build_losses([float(c) for c in counts], device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    times: dict[str, list[float]] = {name: [] for name in table}
    names = list(table)
    for round_ in range(args.warmup + args.rounds):
        # Each round starts at a different loss, so no loss always runs right after the same one.
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            loss = table[name]
            synchronize()
            start = time.perf_counter()
            forward_backward(loss, logits, target)
            synchronize()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
    memory = {name: peak_bytes(loss, logits, target) for name, loss in table.items()}

    reference_time = statistics.median(times["F.cross_entropy"])
    reference_memory = memory["F.cross_entropy"]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"logits {'x'.join(map(str, shape))} float32 on {device} (threads: {threads}), "
          f"forward+backward, median of {args.rounds} interleaved rounds")
    print("time: median and range over rounds; x F.cross_entropy: ratio of medians, and the median of the")
    print("per-round ratios (each loss against F.cross_entropy in the same round: steadier under load)")
    print("| loss | time ms (median) | min-max ms | x F.cross_entropy | per-round ratio | peak MiB | x F.cross_entropy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in table:
        median = statistics.median(times[name])
        ratio = statistics.median(t / r for t, r in zip(times[name], times["F.cross_entropy"]))
        print(f"| {name} | {median * 1e3:.1f} | {min(times[name]) * 1e3:.1f}-{max(times[name]) * 1e3:.1f} | "
              f"{median / reference_time:.2f} | {ratio:.2f} | {memory[name] / 2**20:.0f} | "
              f"{memory[name] / reference_memory:.2f} |")


if __name__ == "__main__":
    main()
