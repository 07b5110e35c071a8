"""Mixed precision: every loss of the paper (``pat_seg.losses.PAPER_LOSSES``) trains under bf16-mixed (CPU) / 16-mixed (GPU)
with finite losses. That each loss computes in float32 under autocast is tested against its float64
formula in test_baseline_losses.py."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import pat_seg.losses
from pat_seg.data.synthetic import SyntheticLongTailDataModule
from pat_seg.models import UNet
from pat_seg.module import SegmentationModule

LOSSES = pat_seg.losses.PAPER_LOSSES
COUNTS = [5000, 3000, 2000, 800, 300, 120, 40, 9, 1]  # a long tail over the 9 synthetic classes


def make_loss(cls: type) -> torch.nn.Module:
    loss = cls()
    if getattr(loss, "needs_class_counts", False):
        loss.set_class_counts(COUNTS)
    return loss


class RecordLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().float())


def fit_two_steps(loss_cls: type, accelerator: str, precision: str) -> list[torch.Tensor]:
    data = SyntheticLongTailDataModule(num_train=4, num_val=2, num_test=2, image_size=32, batch_size=2)
    module = SegmentationModule(UNet(9, base_channels=4, depth=2), make_loss(loss_cls), num_classes=9)
    record = RecordLosses()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[record],
    )
    trainer.fit(module, datamodule=data)
    return record.losses


@pytest.mark.parametrize("loss_cls", LOSSES, ids=lambda cls: cls.__name__)
def test_bf16_mixed_training_on_cpu_gives_finite_losses(loss_cls: type) -> None:
    losses = fit_two_steps(loss_cls, "cpu", "bf16-mixed")
    assert len(losses) == 2 and all(torch.isfinite(value) for value in losses)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("loss_cls", LOSSES, ids=lambda cls: cls.__name__)
def test_mixed_precision_training_on_gpu_gives_finite_losses(loss_cls: type, precision: str) -> None:
    losses = fit_two_steps(loss_cls, "gpu", precision)
    assert len(losses) == 2 and all(torch.isfinite(value) for value in losses)
