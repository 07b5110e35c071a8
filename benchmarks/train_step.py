"""Cost of a training step: Lightning ``fit`` vs a plain PyTorch loop, PAT vs CE; and the loss alone.

Two subcommands, each printing a markdown table (and appending it to ``--markdown FILE``):

``step``  the same U-Net, pre-generated synthetic batches, loss, Adam and per-step cosine schedule,
          trained by (a) a plain PyTorch loop, (b) ``Trainer.fit`` of :class:`SegmentationModule`
          with logging and checkpointing off, (c) the same with pat-seg's default TensorBoard logger
          and :class:`UtilisationMonitor`. Time is wall time from the end of the last warm-up step
          to the end of the last step (CUDA synchronised at both ends), over several interleaved
          repeats; the table gives medians, and the spread of the plain loop as the noise floor.

          python benchmarks/train_step.py step                      # CPU, small U-Net, 64x64
          python benchmarks/train_step.py step --device cuda --image-size 256 --base-channels 32 --depth 4

``loss``  forward+backward of one loss on random logits ``[B, L, H, W]``: F.cross_entropy, PATLoss's
          PyTorch code and the opt-in Triton PATLoss; median time over CUDA events
          and peak extra memory (``max_memory_allocated`` above the logits, target already allocated).

          python benchmarks/train_step.py loss --device cuda --shape 8 20 512 1024 --shape 8 150 512 512 \\
              --dtype float32 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pat_seg.callbacks import UtilisationMonitor
from pat_seg.data import SyntheticLongTailDataModule
from pat_seg.losses import CrossEntropyLoss, PATLoss
from pat_seg.models import UNet
from pat_seg.module import SegmentationModule

Batch = dict[str, Tensor]
Stamps = list[tuple[float, float]]  # (wall, process CPU) seconds after each timed step
MIB = 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- step: Lightning vs plain loop ------------------------------------------------------------------
def make_batches(count: int, batch_size: int, image_size: int) -> list[Batch]:
    """``count`` synthetic long-tailed batches, generated once so that data cost is the same (zero) for all."""
    data = SyntheticLongTailDataModule(num_train=count * batch_size, num_val=1, num_test=1, image_size=image_size, batch_size=batch_size)
    data.setup("fit")
    batches = list(data.train_dataloader())
    return batches[:count]


def make_model(num_classes: int, base_channels: int, depth: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return UNet(num_classes=num_classes, base_channels=base_channels, depth=depth).to(device)


def plain_loop_stamps(model: nn.Module, loss_fn: nn.Module, batches: list[Batch], warmup: int, device: torch.device) -> Stamps:
    """What SegmentationModule + Trainer do per step, written as a bare PyTorch loop; see step_stamps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(batches))
    model.train()
    clock = StepClock(warmup, len(batches))
    for step, batch in enumerate(batches, start=1):
        image, target = batch["image"].to(device), batch["target"].to(device)
        loss = loss_fn(model(image), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        clock.stamp(step, device)
    return clock.stamps


class Replay:
    """The batches as one iterable (Lightning reads a list as several dataloaders)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __iter__(self):  # noqa: ANN204 - an iterator of batches
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StepClock(L.Callback):
    """(wall, process CPU) time stamps at the end of the last warm-up step and of every later step.

    CUDA is synchronised only at the first and the last stamp, so that the GPU queue runs as in
    training: on CUDA only the wall time between them is meaningful, on the CPU every step is. The
    process CPU time is what a shared machine cannot inflate much: other processes' load shows in
    wall time, not in ours (with one torch thread).
    """

    def __init__(self, warmup: int, total_steps: int) -> None:
        self.warmup = warmup
        self.total_steps = total_steps
        self.stamps: list[tuple[float, float]] = []

    def stamp(self, step: int, device: torch.device) -> None:
        if step < self.warmup:
            return
        if step in (self.warmup, self.total_steps):
            synchronize(device)
        self.stamps.append((time.perf_counter(), time.process_time()))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.stamp(trainer.global_step, pl_module.device)  # optimizer steps done, this one included


def lightning_stamps(
    model: nn.Module, loss_fn: nn.Module, batches: list[Batch], warmup: int, device: torch.device, logged: bool, num_classes: int
) -> Stamps:
    clock = StepClock(warmup, len(batches))
    callbacks: list[L.Callback] = [clock, UtilisationMonitor()] if logged else [clock]
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator=device.type,
            devices=1,
            max_steps=len(batches),
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=logged,  # True: pat-seg's default TensorBoardLogger
            log_every_n_steps=10,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
            default_root_dir=root,
        )
        trainer.fit(SegmentationModule(model, loss_fn, num_classes=num_classes), train_dataloaders=Replay(batches))
    return clock.stamps


def step_milliseconds(runs: list[Stamps], clock: int, per_step: bool) -> float:
    """Median step time of one clock (0 wall, 1 CPU): over every single step, or over the runs' mean step."""
    if per_step:
        return statistics.median(1000 * (b[clock] - a[clock]) for run in runs for a, b in zip(run, run[1:]))
    return statistics.median(1000 * (run[-1][clock] - run[0][clock]) / (len(run) - 1) for run in runs)


def run_step(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    per_step = device.type == "cpu"  # single CUDA steps are not timed: the GPU queue runs asynchronously
    num_classes = 9  # the synthetic data set's classes
    batches = make_batches(args.warmup + args.steps, args.batch_size, args.image_size)
    batches = [{key: value.to(device) for key, value in batch.items()} for batch in batches]
    losses: dict[str, Callable[[], nn.Module]] = {"CE": CrossEntropyLoss, "PAT": PATLoss}
    runners = ("plain PyTorch loop", "Lightning fit", "Lightning fit + TensorBoard + UtilisationMonitor")
    stamps: dict[tuple[str, str], list[Stamps]] = {(loss, runner): [] for loss in losses for runner in runners}
    for _ in range(args.repeats):  # interleaved, so that drifts of a shared machine hit every variant alike
        for loss_name, loss_cls in losses.items():
            for runner in runners:
                model = make_model(num_classes, args.base_channels, args.depth, device)
                if runner == runners[0]:
                    run = plain_loop_stamps(model, loss_cls(), batches, args.warmup, device)
                else:
                    run = lightning_stamps(model, loss_cls(), batches, args.warmup, device, runner == runners[2], num_classes)
                stamps[(loss_name, runner)].append(run)
    statistic = "median of all single steps" if per_step else "median over repeats of the mean step"
    lines = [
        f"Training step on {device_name(device)}: U-Net base {args.base_channels} depth {args.depth}, batch "
        f"{args.batch_size}x3x{args.image_size}x{args.image_size}, {num_classes} classes, {args.steps} timed steps after "
        f"{args.warmup} warm-up steps, {args.repeats} interleaved repeats. Wall ms/step: {statistic}; CPU ms/step: "
        "process CPU time, median of all single steps.",
        "",
        "| loss | runner | wall ms/step | steps/s | wall overhead | CPU ms/step | CPU overhead |",
        "|---|---|---|---|---|---|---|",
    ]
    for loss_name in losses:
        plain = [step_milliseconds(stamps[(loss_name, runners[0])], clock, per_step or clock == 1) for clock in (0, 1)]
        for runner in runners:
            row = [loss_name, runner]
            for clock in (0, 1):
                ms = step_milliseconds(stamps[(loss_name, runner)], clock, per_step or clock == 1)
                overhead = "--" if runner == runners[0] else f"{100 * (ms - plain[clock]) / plain[clock]:+.1f}%"
                row += [f"{ms:.1f}", f"{1000 / ms:.2f}", overhead] if clock == 0 else [f"{ms:.1f}", overhead]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for loss_name in losses:
        means = [step_milliseconds([run], 0, per_step=False) for run in stamps[(loss_name, runners[0])]]
        spread = 100 * (max(means) - min(means)) / statistics.median(means)
        lines.append(f"Noise ({loss_name}, plain loop): the repeats' mean wall step times span {spread:.1f}% of their median.  ")
    pat, ce = (step_milliseconds(stamps[(name, runners[0])], 0, per_step) for name in ("PAT", "CE"))
    lines.append(f"PAT step / CE step (plain loop, wall): {pat / ce:.3f}.")
    return "\n".join(lines)


# --- loss: fused PAT vs F.cross_entropy -------------------------------------------------------------
def loss_variants(device: torch.device) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    variants: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "F.cross_entropy": lambda logits, target: F.cross_entropy(logits, target, ignore_index=255),
        "PATLoss eager": PATLoss(implementation="eager"),
    }
    if device.type == "cuda":
        variants["PATLoss fused (Triton)"] = PATLoss(implementation="triton")
    return variants


def time_forward_backward(fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, target: Tensor, repeats: int) -> tuple[float, float | None]:
    """Median milliseconds of ``fn(logits, target).backward()`` and its peak extra MiB (CUDA only)."""
    device = logits.device

    def once() -> None:
        logits.grad = None
        fn(logits, target).backward()

    for _ in range(3):  # warm-up: Triton compilation, allocator caching
        once()
    samples = []
    for _ in range(repeats):
        logits.grad = None
        synchronize(device)
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn(logits, target).backward()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn(logits, target).backward()
            samples.append(1000 * (time.perf_counter() - start))
    peak = None
    if device.type == "cuda":
        logits.grad = None
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        once()
        synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / MIB
    return statistics.median(samples), peak


def run_loss(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    variants = loss_variants(device)
    lines = [
        f"Loss forward+backward on {device_name(device)}: median of {args.repeats} runs after 3 warm-up runs; peak "
        "extra memory = max_memory_allocated above the logits and target (the logits' gradient included).",
        "",
        "| logits | dtype | loss | median ms | x F.cross_entropy | peak extra MiB | x logits size |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in args.shape:
        for dtype_name in args.dtype:
            dtype = getattr(torch, dtype_name)
            generator = torch.Generator(device=device).manual_seed(0)
            logits = torch.randn(shape, device=device, dtype=dtype, generator=generator)
            if args.channels_last:  # what SegmentationModule(channels_last=True) networks return
                logits = logits.contiguous(memory_format=torch.channels_last)
            logits.requires_grad_(True)
            target = torch.randint(0, shape[1], (shape[0], *shape[2:]), device=device, generator=generator)
            target[:, : shape[2] // 16] = 255  # a band of ignored pixels, as in real label maps
            logits_mib = logits.numel() * logits.element_size() / MIB
            reference = None
            for name, fn in variants.items():
                ms, peak = time_forward_backward(fn, logits, target, args.repeats)
                reference = ms if reference is None else reference
                memory = ("--", "--") if peak is None else (f"{peak:.0f}", f"{peak / logits_mib:.2f}")
                layout = " channels-last" if args.channels_last else ""
                lines.append(f"| {'x'.join(map(str, shape))}{layout} | {dtype_name} | {name} | {ms:.3f} | {ms / reference:.2f} | {memory[0]} | {memory[1]} |")
            del logits, target
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("step", help="Lightning fit vs plain loop, PAT vs CE")
    step.add_argument("--steps", type=int, default=20)
    step.add_argument("--warmup", type=int, default=5)
    step.add_argument("--repeats", type=int, default=5)
    step.add_argument("--batch-size", type=int, default=8)
    step.add_argument("--image-size", type=int, default=64)
    step.add_argument("--base-channels", type=int, default=16)
    step.add_argument("--depth", type=int, default=3)
    loss = commands.add_parser("loss", help="one loss's forward+backward vs F.cross_entropy")
    loss.add_argument("--shape", type=int, nargs=4, action="append", metavar=("B", "L", "H", "W"))
    loss.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "float16"])
    loss.add_argument("--repeats", type=int, default=20)
    loss.add_argument("--channels-last", action="store_true", help="logits in channels-last memory format")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "step":
        if args.warmup < 1 or args.steps < 1:
            parser.error(f"--warmup and --steps must be >= 1; got {args.warmup} and {args.steps}")
        table = run_step(args)
    else:
        args.shape = args.shape or [[8, 20, 512, 1024], [8, 150, 512, 512]]
        args.dtype = args.dtype or ["float32", "bfloat16"]
        table = run_loss(args)
    print(table)
    if args.markdown is not None:
        with args.markdown.open("a") as handle:
            handle.write(table + "\n\n")


if __name__ == "__main__":
    main()
