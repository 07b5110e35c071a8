"""The measuring parts of ``benchmarks/gpu_check.py``, one per process: ``gpu_parts.py PART --out DIR [--smoke]``.

Each part writes ``DIR/parts/PART.json`` (its numbers, no verdicts: gpu_check.py judges them) and
prints its progress. A part runs on CUDA when a device is present, otherwise on the CPU; with
``--smoke`` it runs at the tiny sizes of :data:`SMOKE` (the caller sets ``TRITON_INTERPRET=1`` so
that the Triton kernel runs under Triton's CPU interpreter). Parts:

- ``env``: versions, devices, and whether Triton interprets.
- ``diff``: PATLoss through Triton against its PyTorch code, loss and gradient.
- ``losses``: every loss's forward+backward time and peak memory against ``F.cross_entropy``
  (item 2), by :func:`losses.measure_losses`.
- ``step``: DeepLabV3+ training steps with CE, PAT (PyTorch) and PAT (Triton), bf16-mixed,
  channels-last (item 4), by :func:`train_step.fit_step_cost`.
- ``ddp``: a two-process DDP run (NCCL and SyncBatchNorm on CUDA; gloo on the CPU in the smoke run),
  skipped with the reason when fewer than two GPUs are present (item 5).
- ``data``: images/s per loader worker of every disk data module and the workers that feed the
  measured step (item 7), by :func:`data.run`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

# The sibling benchmark scripts (this folder is sys.path[0] when run as a script); train_step, which
# imports Lightning, only where it is needed.
import data as data_bench
import losses as loss_bench


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run: the GPU run's (:data:`FULL`) or the CPU smoke run's (:data:`SMOKE`)."""

    smoke: bool
    loss_shapes: tuple[tuple[int, int, int, int], ...]
    dtypes: tuple[str, ...]
    loss_rounds: int
    loss_warmup: int
    step_batch: int
    step_size: tuple[int, int]
    step_backbone: str
    step_classes: int
    step_warmup: int
    step_steps: int
    ddp_image_size: int
    ddp_steps: int
    data_images: int
    data_scale: float
    data_workers: tuple[int, ...]
    data_repeats: int
    data_profile_images: int
    data_min_pass_s: float  # loader passes repeat a fast (prepared) split to hold this much loading


# The sizes of docs/benchmarks.md, "GPU check": Cityscapes-like 19 classes at 512x1024 and ADE20K-like 150 at 512x512, batch 8.
FULL = Sizes(
    smoke=False,
    loss_shapes=((8, 19, 512, 1024), (8, 150, 512, 512)),
    dtypes=("float32", "bfloat16"),
    loss_rounds=20,
    loss_warmup=3,
    step_batch=8,
    step_size=(512, 1024),
    step_backbone="resnet50",
    step_classes=19,
    step_warmup=5,
    step_steps=15,
    ddp_image_size=128,
    ddp_steps=6,
    data_images=24,
    data_scale=1.0,
    data_workers=(0, 1),
    data_repeats=2,
    data_profile_images=8,
    data_min_pass_s=2.0,
)
# The same classes, dtypes and data images at tiny sizes; ResNet-18 instead of 50 keeps the CPU step short.
SMOKE = replace(
    FULL,
    smoke=True,
    loss_shapes=((2, 19, 16, 32), (2, 150, 8, 16)),
    loss_rounds=3,
    loss_warmup=1,
    step_batch=2,
    step_size=(64, 128),
    step_backbone="resnet18",
    step_warmup=1,
    step_steps=2,
    ddp_image_size=32,
    ddp_steps=2,
    data_scale=0.1,
    data_repeats=1,
    data_profile_images=4,
    data_min_pass_s=0.1,
)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def triton_interpreted() -> bool | None:
    """Whether Triton runs kernels through its CPU interpreter (decided when triton was first imported)."""
    try:
        import triton.language
    except ImportError:
        return None
    return type(triton.language.standard.zeros).__name__ == "InterpretedFunction"


# --- parts ---------------------------------------------------------------------------------------------
def part_env(sizes: Sizes, out: Path) -> dict[str, Any]:
    """Versions, devices, whether Triton interprets, and the sizes this run uses."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "triton_interpreted": triton_interpreted(),
        "cuda_runtime": torch.version.cuda,
        "cuda_available": cuda,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
        "cpu": data_bench.machine(),
        "sizes": asdict(sizes),
    }


def pat_value_and_grad(implementation: str, logits: torch.Tensor, target: torch.Tensor) -> tuple[float, torch.Tensor]:
    from pat_seg.losses import PATLoss

    leaf = logits.detach().clone().requires_grad_(True)
    value = PATLoss(temperature=20.0, implementation=implementation)(leaf, target)
    value.backward()
    return float(value.detach()), leaf.grad


def part_diff(sizes: Sizes, out: Path) -> dict[str, Any]:
    """Largest absolute difference of PAT's loss and gradient, Triton against the PyTorch code, same input."""
    dev = device()
    rows = []
    for shape in sizes.loss_shapes:
        for dtype_name in sizes.dtypes:
            generator = torch.Generator(device=dev).manual_seed(1)
            # Spread logits: confident and unconfident pixels, so the confidence weight varies.
            logits = (3 * torch.randn(shape, device=dev, generator=generator)).to(getattr(torch, dtype_name))
            target = loss_bench.long_tailed_target(shape, dev, seed=1)
            eager_value, eager_grad = pat_value_and_grad("eager", logits, target)
            triton_value, triton_grad = pat_value_and_grad("triton", logits, target)
            grad_diff = float((triton_grad.double() - eager_grad.double()).abs().max())
            grad_max = float(eager_grad.double().abs().max())
            rows.append(
                {
                    "shape": list(shape),
                    "dtype": dtype_name,
                    "loss_pytorch": eager_value,
                    "loss_triton": triton_value,
                    "loss_abs_diff": abs(triton_value - eager_value),
                    "loss_rel_diff": abs(triton_value - eager_value) / max(abs(eager_value), 1e-30),
                    "grad_abs_diff": grad_diff,
                    "grad_abs_max": grad_max,
                    "grad_diff_over_max": grad_diff / max(grad_max, 1e-30),
                    "grad_dtype": str(triton_grad.dtype).replace("torch.", ""),
                }
            )
            print(
                f"diff {shape} {dtype_name}: loss {rows[-1]['loss_abs_diff']:.3g}, grad {grad_diff:.3g} (max {grad_max:.3g})"
            )
            del logits, target, eager_grad, triton_grad
            free_memory()
    return {"rows": rows}


def part_losses(sizes: Sizes, out: Path) -> dict[str, Any]:
    """Every loss's forward+backward time and peak memory, as ratios to ``F.cross_entropy``, per shape and dtype."""
    dev = device()
    rows = []
    for shape in sizes.loss_shapes:
        for dtype_name in sizes.dtypes:
            table = loss_bench.measure_losses(
                shape, getattr(torch, dtype_name), dev, sizes.loss_rounds, sizes.loss_warmup
            )
            for name, numbers in table.items():
                rows.append({"shape": list(shape), "dtype": dtype_name, "loss": name, **numbers})
            print(f"losses {shape} {dtype_name}: {len(table)} rows")
            free_memory()
    timing = "CUDA events" if dev.type == "cuda" else "wall clock"
    return {"rows": rows, "timing": timing, "rounds": sizes.loss_rounds, "warmup": sizes.loss_warmup}


def step_losses() -> dict[str, Callable[[], torch.nn.Module]]:
    """The three losses of the training step: CE, and PAT through its PyTorch code and through Triton."""
    from pat_seg.losses import CrossEntropyLoss, PATLoss

    return {
        "CE": CrossEntropyLoss,
        "PAT (PyTorch)": lambda: PATLoss(temperature=20.0),
        "PAT (Triton)": lambda: PATLoss(temperature=20.0, implementation="triton"),
    }


def part_step(sizes: Sizes, out: Path) -> dict[str, Any]:
    """DeepLabV3+ (random init) training steps through ``Trainer.fit``, bf16-mixed, channels-last."""
    from pat_seg.models import DeepLabV3Plus

    import train_step as step_bench

    dev = device()
    height, width = sizes.step_size
    shape = (sizes.step_batch, sizes.step_classes, height, width)
    generator = torch.Generator(device=dev).manual_seed(0)
    distinct = [
        {
            "image": torch.randn(sizes.step_batch, 3, height, width, device=dev, generator=generator),
            "target": loss_bench.long_tailed_target(shape, dev, seed=i),
        }
        for i in range(4)
    ]
    batches = [distinct[i % len(distinct)] for i in range(sizes.step_warmup + sizes.step_steps)]
    rows = []
    for name, make_loss in step_losses().items():
        torch.manual_seed(0)
        model = DeepLabV3Plus(num_classes=sizes.step_classes, backbone=sizes.step_backbone)
        cost = step_bench.fit_step_cost(
            model,
            make_loss(),
            batches,
            sizes.step_warmup,
            dev,
            sizes.step_classes,
            precision="bf16-mixed",
            channels_last=True,
        )
        rows.append({"loss": name, **cost})
        print(f"step {name}: {cost}")
        del model
        free_memory()
    return {
        "rows": rows,
        "model": f"DeepLabV3Plus({sizes.step_backbone}, random init)",
        "batch": sizes.step_batch,
        "size": list(sizes.step_size),
        "precision": "bf16-mixed",
        "channels_last": True,
        "warmup_steps": sizes.step_warmup,
        "timed_steps": sizes.step_steps,
    }


def part_ddp(sizes: Sizes, out: Path) -> dict[str, Any] | None:
    """Two processes: a few training steps and a validation of a U-Net with BatchNorm.

    Lightning starts the second process by running this script again with the same arguments, so
    every rank comes through here; only rank 0 returns the result.
    """
    import lightning as L

    from pat_seg.data import SyntheticLongTailDataModule
    from pat_seg.losses import PATLoss
    from pat_seg.models import UNet
    from pat_seg.module import SegmentationModule

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= 2:
        accelerator, sync_batchnorm, precision = "gpu", True, "bf16-mixed"
    elif sizes.smoke:  # the same code on two CPU processes (gloo; SyncBatchNorm needs CUDA)
        accelerator, sync_batchnorm, precision = "cpu", False, "32-true"
    else:
        return {"skipped": f"{gpus} CUDA device(s) present; the DDP check needs 2"}

    class Probe(L.Callback):
        """Every rank's backend, world size, SyncBatchNorm count and a checksum of its weights."""

        def __init__(self) -> None:
            self.ranks: list[dict[str, Any]] = []

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            import torch.distributed as dist

            weights = torch.cat([p.detach().double().flatten() for p in pl_module.parameters()])
            mine = {
                "backend": dist.get_backend(),
                "world_size": dist.get_world_size(),
                "rank": dist.get_rank(),
                "sync_batchnorm_layers": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()),
                "weight_checksum": float(weights.sum()),
                "weight_sq_checksum": float((weights**2).sum()),
            }
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, mine)
            self.ranks = gathered

    probe = Probe()
    datamodule = SyntheticLongTailDataModule(
        num_train=sizes.ddp_steps * 2 * 4, num_val=7, num_test=2, image_size=sizes.ddp_image_size, batch_size=4
    )
    module = SegmentationModule(
        UNet(num_classes=datamodule.num_classes, base_channels=8, depth=2),
        PATLoss(),
        num_classes=datamodule.num_classes,
    )
    with tempfile.TemporaryDirectory(prefix="pat-seg-ddp-") as root:
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=2,
            strategy="ddp",
            sync_batchnorm=sync_batchnorm,
            precision=precision,
            max_steps=sizes.ddp_steps,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[probe],
            default_root_dir=root,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        metrics = trainer.validate(module, datamodule=datamodule, verbose=False)
        seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None
    miou = metrics[0].get("val/miou") if metrics else None
    return {
        "accelerator": accelerator,
        "precision": precision,
        "sync_batchnorm": sync_batchnorm,
        "steps": trainer.global_step,
        "ranks": probe.ranks,
        "val_miou": None if miou is None else float(miou),
        "seconds": seconds,
    }


def part_data(sizes: Sizes, out: Path) -> dict[str, Any]:
    """Loader images/s per worker on this machine's cores; feeds the fastest measured step if there is one."""
    step_ms = data_bench.DEFAULT_STEP_MS
    source = "assumed (no step measured)"
    step_file = out / "parts" / "step.json"
    if step_file.is_file() and torch.cuda.is_available():
        rows = json.loads(step_file.read_text()).get("rows", [])
        measured = [r["ms_per_step"] for r in rows if isinstance(r.get("ms_per_step"), (int, float))]
        if measured:
            step_ms, source = min(measured), "measured in part 4 (fastest of its rows)"
    args = data_bench.parser().parse_args(
        [
            "--images",
            str(sizes.data_images),
            "--scale",
            str(sizes.data_scale),
            "--repeats",
            str(sizes.data_repeats),
            "--profile-images",
            str(sizes.data_profile_images),
            "--step-ms",
            str(step_ms),
            "--workers",
            *map(str, sizes.data_workers),
            "--min-pass-s",
            str(sizes.data_min_pass_s),
            # The paper's data sets (gpu_check.DATA_ROWS): CamVid's folder protocol would add about a
            # sixth to a part that must stay within its time limit.
            "--only",
            "Cityscapes",
            "NYUv2",
            "Oxford Pet",
        ]
    )
    result = data_bench.run(args)
    result["step_ms_source"] = source
    return result


PARTS: dict[str, Callable[[Sizes, Path], dict[str, Any] | None]] = {
    "env": part_env,
    "diff": part_diff,
    "losses": part_losses,
    "step": part_step,
    "ddp": part_ddp,
    "data": part_data,
}


def jsonable(value: Any) -> Any:
    """NaN and infinities as strings (JSON has none), so a broken number still reaches the report."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU smoke run)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if not torch.cuda.is_available():
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    result = PARTS[args.part](sizes, args.out)
    if result is None:  # a DDP rank other than 0
        return
    target = args.out / "parts" / f"{args.part}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(jsonable(result), indent=1))
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
