"""Cost of a training step: Lightning ``fit`` vs a plain PyTorch loop, PAT vs CE.

One subcommand, printing a markdown table (and appending it to ``--markdown FILE``):

``step``  the same U-Net, pre-generated synthetic batches, loss, Adam and per-step cosine schedule,
          trained by (a) a plain PyTorch loop, (b) ``Trainer.fit`` of :class:`SegmentationModule`
          with logging and checkpointing off, (c) the same with pat-seg's default TensorBoard logger
          and :class:`UtilisationMonitor`. Time is wall time from the end of the last warm-up step
          to the end of the last step (CUDA synchronised at both ends), over several interleaved
          repeats; the table gives medians, and the spread of the plain loop as the noise floor.

          python benchmarks/train_step.py step                      # CPU, small U-Net, 64x64
          python benchmarks/train_step.py step --device cuda --image-size 256 --base-channels 32 --depth 4

:func:`fit_step_cost` times ``Trainer.fit`` steps of any network and loss with a precision and memory
format; ``benchmarks/gpu_check.py`` uses it for the DeepLabV3+ step on the GPU. The loss alone:
``benchmarks/losses.py``.
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
    data = SyntheticLongTailDataModule(
        num_train=count * batch_size, num_val=1, num_test=1, image_size=image_size, batch_size=batch_size
    )
    data.setup("fit")
    batches = list(data.train_dataloader())
    return batches[:count]


def make_model(num_classes: int, base_channels: int, depth: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return UNet(num_classes=num_classes, base_channels=base_channels, depth=depth).to(device)


def plain_loop_stamps(
    model: nn.Module, loss_fn: nn.Module, batches: list[Batch], warmup: int, device: torch.device
) -> Stamps:
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
    model: nn.Module,
    loss_fn: nn.Module,
    batches: list[Batch],
    warmup: int,
    device: torch.device,
    logged: bool,
    num_classes: int,
    precision: str = "32-true",
    channels_last: bool = False,
) -> Stamps:
    """Stamps of ``Trainer.fit`` of :class:`SegmentationModule` over ``batches`` (see :class:`StepClock`)."""
    clock = StepClock(warmup, len(batches))
    callbacks: list[L.Callback] = [clock, UtilisationMonitor()] if logged else [clock]
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator=device.type,
            devices=1,
            precision=precision,
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
        module = SegmentationModule(model, loss_fn, num_classes=num_classes, channels_last=channels_last)
        trainer.fit(module, train_dataloaders=Replay(batches))
    return clock.stamps


def fit_step_cost(
    model: nn.Module,
    loss_fn: nn.Module,
    batches: list[Batch],
    warmup: int,
    device: torch.device,
    num_classes: int,
    precision: str,
    channels_last: bool,
) -> dict[str, float | None]:
    """One ``Trainer.fit`` run: ``ms_per_step`` (mean of the steps after ``warmup``, CUDA synchronised at
    both ends), ``images_per_s`` and, on CUDA, ``peak_mib``: the most memory allocated during the run
    above what was allocated before it (the batches), so network, optimiser state and activations."""
    peak_mib = None
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    stamps = lightning_stamps(model, loss_fn, batches, warmup, device, False, num_classes, precision, channels_last)
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated(device) - before) / MIB
    ms = step_milliseconds([stamps], 0, per_step=False)
    return {"ms_per_step": ms, "images_per_s": 1000 * batches[0]["image"].shape[0] / ms, "peak_mib": peak_mib}


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
                    run = lightning_stamps(
                        model, loss_cls(), batches, args.warmup, device, runner == runners[2], num_classes
                    )
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
        lines.append(
            f"Noise ({loss_name}, plain loop): the repeats' mean wall step times span {spread:.1f}% of their median.  "
        )
    pat, ce = (step_milliseconds(stamps[(name, runners[0])], 0, per_step) for name in ("PAT", "CE"))
    lines.append(f"PAT step / CE step (plain loop, wall): {pat / ce:.3f}.")
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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warmup < 1 or args.steps < 1:
        parser.error(f"--warmup and --steps must be >= 1; got {args.warmup} and {args.steps}")
    table = run_step(args)
    print(table)
    if args.markdown is not None:
        with args.markdown.open("a") as handle:
            handle.write(table + "\n\n")


if __name__ == "__main__":
    main()
