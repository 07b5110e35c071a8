"""Every bad input raises ValueError naming the offending value, before the model runs; labels are checked once per step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

import pat_seg.losses.checks
import pat_seg.validation
from pat_seg.callbacks import NonFiniteLossError, NonFiniteLossGuard
from pat_seg.data.synthetic import SyntheticLongTailDataModule
from pat_seg.losses import ClassBalancedLoss, CrossEntropyLoss, PATLoss
from pat_seg.module import SegmentationModule
from pat_seg.validation import check_batch

NUM_CLASSES, IGNORE = 4, 255


def good_batch() -> dict[str, torch.Tensor]:
    target = torch.tensor([[[0, 1], [2, IGNORE]], [[3, 3], [0, 1]]])
    return {"image": torch.rand(2, 3, 2, 2), "target": target, "index": torch.tensor([7, 8])}


def test_a_good_batch_passes_unchanged() -> None:
    batch = good_batch()
    image, target = check_batch(batch, NUM_CLASSES, IGNORE, batch_idx=0)
    assert image is batch["image"] and target is batch["target"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b.update(target=torch.tensor([[[0, 1], [2, 4]], [[3, 3], [0, 1]]])),
            r"label 4 found .* \[0, 3\] or ignore_index 255",
        ),
        (lambda b: b.update(target=torch.tensor([[[0, -1], [2, 0]], [[3, 3], [0, 1]]])), r"label -1 found"),
        (lambda b: b.update(image=(b["image"] * 255).to(torch.uint8)), r"floating-point .* got dtype torch.uint8"),
        (lambda b: b.update(target=b["target"].float()), r"integer tensor .* got dtype torch.float32"),
        (lambda b: b.update(image=b["image"][0]), r"image must have shape \[B, C, H, W\]; got \[3, 2, 2\]"),
        (lambda b: b.update(target=b["target"].unsqueeze(1)), r"got \[2, 1, 2, 2\] \(squeeze"),
        (
            lambda b: b.update(target=b["target"][:, :1]),
            r"= \[2, 2, 2\] to match image \[2, 3, 2, 2\]; got \[2, 1, 2\]",
        ),
        (lambda b: b["image"].__setitem__((1, 0, 0, 0), float("nan")), r"NaN or Inf"),
        (lambda b: b.pop("target"), r"keys 'image' and 'target'; got \['image', 'index'\]"),
    ],
    ids=[
        "label-too-large",
        "negative-label",
        "uint8-image",
        "float-target",
        "3d-image",
        "target-channel",
        "size-mismatch",
        "nan-pixel",
        "missing-key",
    ],
)
def test_bad_batch_is_named(change, message: str) -> None:
    batch = good_batch()
    change(batch)
    with pytest.raises(ValueError, match=message) as error:
        check_batch(batch, NUM_CLASSES, IGNORE, batch_idx=5)
    if "target" in batch and "image" in batch:
        assert "batch 5 (samples [7, 8])" in str(error.value)


class Constant(nn.Module):
    """A 'network' whose output shape is set by the test."""

    def __init__(self, shape_of_output) -> None:
        super().__init__()
        self.shape_of_output = shape_of_output
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.weight + torch.zeros(self.shape_of_output(image))


def test_training_step_rejects_a_bad_label_before_the_model_runs() -> None:
    calls = []
    model = Constant(lambda image: calls.append(1) or (image.shape[0], NUM_CLASSES, *image.shape[2:]))
    module = SegmentationModule(model, CrossEntropyLoss(), num_classes=NUM_CLASSES)
    batch = good_batch()
    batch["target"][0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"batch 3 \(samples \[7, 8\]\): label 9"):
        module.training_step(batch, 3)
    assert not calls


def test_logits_of_the_wrong_size_are_named() -> None:
    model = Constant(lambda image: (image.shape[0], NUM_CLASSES, image.shape[2] + 1, image.shape[3]))
    module = SegmentationModule(model, CrossEntropyLoss(), num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"model output has shape \[2, 4, 3, 2\]; expected \[B, 4, 2, 2\]"):
        module.training_step(good_batch(), 0)


def test_num_classes_mismatch_between_data_and_model() -> None:
    data = SyntheticLongTailDataModule(num_train=2, num_val=2, num_test=2, image_size=16)
    module = SegmentationModule(Constant(lambda image: (1,)), CrossEntropyLoss(), num_classes=5)
    trainer = quiet_trainer()
    with pytest.raises(ValueError, match=r"the data module has 9 classes but the module was built with num_classes=5"):
        trainer.validate(module, datamodule=data)


def test_empty_split_is_named() -> None:
    data = SyntheticLongTailDataModule(num_train=2, num_val=2, num_test=2, image_size=16)
    data.build_dataset = lambda split: []  # a data root whose split folder is empty
    with pytest.raises(ValueError, match=r"the 'val' split of SyntheticLongTailDataModule is empty"):
        data.setup("validate")


def quiet_trainer(**options: object) -> L.Trainer:
    """A CPU trainer that logs, saves and prints nothing, and runs no sanity validation."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        **options,
    )


def nine_class_maps() -> Constant:
    """A network that answers every image with constant logits of the synthetic data's 9 classes."""
    return Constant(lambda image: (image.shape[0], 9, *image.shape[2:]))


class NaNAtCall(CrossEntropyLoss):
    """Cross-entropy that returns NaN at its ``nan_call``-th call (counting from 1)."""

    def __init__(self, nan_call: int) -> None:
        super().__init__()
        self.nan_call, self.calls = nan_call, 0

    def compute(self, logits, target):
        self.calls += 1
        loss = super().compute(logits, target)
        return loss * float("nan") if self.calls == self.nan_call else loss


def test_an_injected_nan_batch_stops_training_before_the_weights_change() -> None:
    """A NaN loss (here from a loss that returns NaN on batch 2) stops the run naming the step and batch;
    the weights are those after the finite steps only, and no checkpoint is written with NaN."""

    data = SyntheticLongTailDataModule(num_train=8, num_val=2, num_test=2, image_size=16, batch_size=2)
    model = nine_class_maps()
    module = SegmentationModule(model, NaNAtCall(3), num_classes=9, cosine_annealing=False)
    trainer = quiet_trainer(
        max_epochs=1,
        callbacks=[NonFiniteLossGuard()],
    )
    with pytest.raises(NonFiniteLossError, match=r"global step 2, epoch 0, batch 2"):
        trainer.fit(module, datamodule=data)
    assert torch.isfinite(model.weight)
    assert trainer.global_step == 2


def test_skip_mode_leaves_the_weights_of_the_nan_batch_alone() -> None:
    data = SyntheticLongTailDataModule(num_train=2, num_val=2, num_test=2, image_size=16, batch_size=2)
    model = nine_class_maps()
    guard = NonFiniteLossGuard(action="skip")
    module = SegmentationModule(model, NaNAtCall(1), num_classes=9, cosine_annealing=False)
    trainer = quiet_trainer(
        max_epochs=1,
        limit_val_batches=0,
        callbacks=[guard],
    )
    trainer.fit(module, datamodule=data)
    # the only batch was NaN: skipped, so the weight is still its initial 0 and no Adam state exists
    assert model.weight.item() == 0.0 and guard.skipped == 1
    assert not trainer.optimizers[0].state


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path) -> None:
    model = nine_class_maps()
    module = SegmentationModule(model, CrossEntropyLoss(), num_classes=9)
    trainer = quiet_trainer(callbacks=[NonFiniteLossGuard()])
    trainer.strategy.connect(module)
    with torch.no_grad():
        model.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"refusing to write a checkpoint .* \['model.weight'\]"):
        trainer.save_checkpoint(tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


@pytest.fixture()
def label_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every label-range reduction (the batch check's and the losses')."""
    calls: list[int] = []
    original = pat_seg.losses.checks.bad_label_mask

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pat_seg.losses.checks, "bad_label_mask", counting)
    monkeypatch.setattr(pat_seg.validation, "bad_label_mask", counting)
    return calls


@pytest.mark.parametrize("loss", [PATLoss(), ClassBalancedLoss()], ids=["pat", "cb"])
def test_one_label_check_per_training_step(loss, label_checks: list[int]) -> None:
    data = SyntheticLongTailDataModule(num_train=6, num_val=2, num_test=2, image_size=16, batch_size=2)
    model = nine_class_maps()
    module = SegmentationModule(model, loss, num_classes=9)
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 3
    assert len(label_checks) == 3


def test_a_loss_on_its_own_checks_labels_and_skips_them_when_told_they_are_checked(label_checks: list[int]) -> None:
    logits, target = torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 1], [2, IGNORE]]])
    PATLoss()(logits, target)
    assert len(label_checks) == 1
    PATLoss()(logits, target, check_labels=False)
    with pytest.raises(ValueError, match="target must have shape"):  # shapes are still checked
        PATLoss()(logits, target[:, :1], check_labels=False)
    assert len(label_checks) == 1
    with pytest.raises(ValueError, match="label 7 found in target"):  # nothing global: the next call checks
        PATLoss()(logits, torch.tensor([[[0, 1], [7, IGNORE]]]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_check_and_loss_sync_with_the_host_once_on_cuda() -> None:
    import warnings

    batch = {key: value.cuda() for key, value in good_batch().items()}
    logits = torch.randn(2, NUM_CLASSES, 2, 2, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            image, target = check_batch(batch, NUM_CLASSES, IGNORE)
            PATLoss()(logits, target, check_labels=False).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
