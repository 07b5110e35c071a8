"""A user's own classes on the same terms as pat-seg's: identity from the class, reload, the CLI's edges.

- docs/extending.md's example loss (docs/examples/my_loss.py), in a module outside the package and
  named like one of ours (``FocalLoss``), is its float64 formula, trains by class path through the
  console script with the class counts its hook asks for, is reported under its own label with its
  own argument in the HParams row, and reloads with ``SegmentationModule.load_from_checkpoint``.
- The module hands a loss's hooks (pat_seg.losses.hooks) the training split's statistics and each
  epoch's number; a loss that asks for a statistic without the hook to take it is one short message.
- Labels and shown arguments come from the class a config names: a user's class is never taken for
  pat-seg's, whatever it is called, whether it describes itself or not, or imports at all.
- Reloading imports no module a checkpoint names; a configured scheduler steps per epoch and a
  configured TensorBoardLogger keeps its options; a class path that names no class is one short message.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_hparams_table import hparams_table
from test_run_safety import REPO, TINY_DATA, pat_seg, short_error
from torch import nn

from pat_seg.cli import cli_main
from pat_seg.exceptions import ConfigurationError
from pat_seg.experiments.class_identity import label
from pat_seg.experiments.run_folder import identity_differences
from pat_seg.experiments.run_summary import shown_arguments
from pat_seg.experiments.runs import display_labels
from pat_seg.losses.description import LossDescription
from pat_seg.losses.hooks import TakesClassCounts, TakesClassPresence, TakesEpoch
from pat_seg.models import UNet
from pat_seg.module import SegmentationModule

HERE = __name__  # the module path of the classes below, as a config would name them
TINY = [f"--data.{key}={value}" for key, value in TINY_DATA.items()] + [
    "--model.model.init_args.base_channels=4",
    "--model.model.init_args.depth=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
]
# A loss in a file of the user's own: pat-seg's class name, its own argument, description and counts
# hook. It is docs/extending.md's example, run here as a user runs it: copied into a folder of its own.
EXAMPLE_LOSS = REPO / "docs" / "examples" / "my_loss.py"


# --- classes of "the user's own", named as a config names them: f"{HERE}.FocalLoss" -----------------
class FocalLoss(nn.Module):
    """Named like pat-seg's FocalLoss, and describing itself with pat-seg's label "Focal" too."""

    description = LossDescription("Focal", symbols={"power": "p"})

    def __init__(self, power: float = 2.0, ignore_index: int = 255) -> None:
        super().__init__()
        self.power, self.ignore_index = power, ignore_index


class CrossEntropyLoss(nn.Module):
    """Named like pat-seg's CrossEntropyLoss, no description."""


class DiceLoss(nn.Module):
    """A name pat-seg does not use, no description."""


class WiderUNet(UNet):
    """A user's subclass of pat-seg's UNet: not the paper's U-Net."""


class HookedLoss(nn.Module):
    """Cross-entropy with all three hooks, recording what the module hands each."""

    needs_class_counts = True
    needs_class_presence = True

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.class_counts: list[float] | None = None
        self.class_presence: list[float] | None = None
        self.epochs: list[int] = []

    def set_class_counts(self, counts: list[float]) -> None:
        self.class_counts = list(counts)

    def set_class_presence(self, class_presence: list[float]) -> None:
        self.class_presence = list(class_presence)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)


class HalfHookedLoss(nn.Module):
    """Asks for class counts, but names its method to take them wrongly."""

    needs_class_counts = True

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.class_counts: list[float] | None = None

    def set_counts(self, counts: list[float]) -> None:
        self.class_counts = list(counts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)


# --- the extension contract: docs/extending.md's example loss and the hooks ------------------------
@pytest.fixture
def example_loss(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """docs/examples/my_loss.py, imported as a user's module ``my_loss``."""
    monkeypatch.syspath_prepend(str(EXAMPLE_LOSS.parent))
    try:
        yield importlib.import_module("my_loss")
    finally:
        sys.modules.pop("my_loss", None)


def test_the_example_loss_is_its_float64_formula(example_loss: ModuleType) -> None:
    # Counts 1, 4, 16: n^-1/2 = 1, 1/2, 1/4, whose mean is 7/12, so w = 12/7, 6/7, 3/7.
    weights = torch.tensor([12 / 7, 6 / 7, 3 / 7], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=generator)
    target = torch.randint(0, 3, (2, 4, 5), generator=generator)
    target[0, 0] = 255
    valid = target != 255
    true_class = target.clamp(max=2)
    p_t = logits.softmax(dim=1).gather(1, true_class.unsqueeze(1)).squeeze(1)
    terms = weights[true_class] * (1 - p_t) ** 3 * -p_t.log()
    expected = terms[valid].mean()

    loss = example_loss.FocalLoss(power=3, class_counts=[1, 4, 16])
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-12)
    assert loss(logits.float(), target).item() == pytest.approx(expected.item(), rel=1e-5)
    per_pixel = example_loss.FocalLoss(power=3, class_counts=[1, 4, 16], reduction="none")(logits, target)
    assert torch.allclose(per_pixel, torch.where(valid, terms, 0.0), rtol=1e-12, atol=0)
    assert loss(logits, torch.full_like(target, 255)).item() == 0.0  # every pixel ignored: 0, not NaN
    with pytest.raises(ValueError, match="needs class_counts"):
        example_loss.FocalLoss(power=3)(logits, target)


def test_the_module_hands_each_hook_the_training_statistics_and_the_epoch(tmp_path: Path) -> None:
    cli = fit(tmp_path, f"--model.loss={HERE}.HookedLoss")
    loss = cli.model.loss
    assert all(isinstance(loss, hook) for hook in (TakesClassCounts, TakesClassPresence, TakesEpoch))
    # The training split counted here, with numpy: pixels per class and images that hold each class.
    targets = [np.asarray(sample["target"]) for sample in cli.datamodule.dataset("train")]
    classes = cli.datamodule.num_classes
    pixels = sum(np.bincount(target[target != 255].ravel(), minlength=classes) for target in targets)
    holding = sum(np.bincount(np.unique(target[target != 255]), minlength=classes) for target in targets)
    assert loss.class_counts == pixels.tolist()
    assert loss.class_presence == pytest.approx((holding / len(targets)).tolist(), abs=0)
    assert loss.epochs == [0, 1]  # at the start of each of the 2 epochs


def test_a_loss_that_asks_for_counts_without_the_hook_to_take_them_is_one_short_message(tmp_path: Path) -> None:
    result = pat_seg("fit", *TINY, f"--model.loss={HERE}.HalfHookedLoss", cwd=tmp_path)
    short_error(result, "HalfHookedLoss sets needs_class_counts but has no set_class_counts", "TakesClassCounts")
    assert result.returncode == 2 and not (tmp_path / "lightning_logs").exists()


# --- a user's loss through the console script ------------------------------------------------------
@pytest.fixture(scope="module")
def user_loss_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``pat-seg fit --model.loss my_loss.FocalLoss --model.loss.init_args.power=3`` for 2 steps, with
    docs/examples/my_loss.py in a folder of its own on PYTHONPATH: (that folder, the run). The loss
    refuses to run without class counts, so the run finishing shows that its hook received them."""
    modules, root = tmp_path_factory.mktemp("user_modules"), tmp_path_factory.mktemp("user_loss_run")
    shutil.copy(EXAMPLE_LOSS, modules / "my_loss.py")
    result = pat_seg(
        "fit", *TINY, "--model.loss=my_loss.FocalLoss", "--model.loss.init_args.power=3",
        "--trainer.max_steps=2", "--name=own_loss", cwd=root, python_path=[modules],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return modules, root / "lightning_logs"


@pytest.mark.slow
def test_a_users_loss_is_reported_under_its_own_label_with_its_own_argument(user_loss_run: tuple[Path, Path]) -> None:
    modules, logdir = user_loss_run
    result = pat_seg("report", "--logdir", str(logdir), python_path=[modules])
    assert result.returncode == 0, result.stderr[-3000:]
    methods = {line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")}
    assert "PowerFocal (p=3)" in methods and not {"Focal", "Focal (gamma=2)"} & methods, result.stdout
    _, rows = hparams_table(logdir)
    row = rows["own_loss/version_0"]
    assert row["loss/power"] == 3.0 and "loss/gamma" not in row
    assert row["loss"] == "my_loss.FocalLoss"  # pat-seg has a FocalLoss: the user's is named with its module
    recorded = yaml.safe_load((logdir / "own_loss" / "version_0" / "hparams.yaml").read_text())
    assert recorded["summary"]["parameters"]["loss/power"] == 3.0


@pytest.mark.slow
def test_a_users_loss_reloads_with_its_argument_once_its_module_is_imported(
    user_loss_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    modules, logdir = user_loss_run
    last = logdir / "own_loss" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last) == []  # plain values only: weights_only
    monkeypatch.syspath_prepend(str(modules))
    try:
        with pytest.raises(ConfigurationError, match="my_loss.FocalLoss.*import my_loss first"):
            SegmentationModule.load_from_checkpoint(last)  # nothing a file names is imported by loading it
        assert "my_loss" not in sys.modules
        importlib.import_module("my_loss")
        module = SegmentationModule.load_from_checkpoint(last)
    finally:
        sys.modules.pop("my_loss", None)
    assert type(module.loss).__module__ == "my_loss" and module.loss.power == 3.0
    assert isinstance(module.model, UNet)  # its width: every weight below loaded strictly, shapes and all
    saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    reloaded = module.state_dict()
    assert reloaded.keys() == saved.keys()
    assert all(torch.equal(reloaded[name], saved[name]) for name in saved)


# --- identity from the class ----------------------------------------------------------------------
def test_a_users_class_is_never_taken_for_one_of_ours() -> None:
    labels = display_labels(
        [("pat_seg.losses.FocalLoss", {"gamma": 2.0}), (f"{HERE}.FocalLoss", {"power": 3.0, "ignore_index": 255})],
        "loss",
    )
    # Same class name, same declared label "Focal": the user's is named by its class path, with its own symbol.
    assert sorted(labels.values()) == sorted(["Focal (gamma=2)", f"{HERE}.FocalLoss (p=3)"])
    assert label(f"{HERE}.CrossEntropyLoss", "loss") == f"{HERE}.CrossEntropyLoss"  # no description, our name
    assert label(f"{HERE}.DiceLoss", "loss") == "DiceLoss"  # no description, a name of its own
    assert label("pat_seg.models.UNet", "model") == "UNet" and label("pat_seg.models.UNetPlusPlus", "model") == "UNet++"
    assert label(f"{HERE}.WiderUNet", "model") == "WiderUNet"  # a subclass does not inherit our label
    # A module that no longer imports: named by its path, never by the label of our class of that name.
    assert label("gone_module.PATLoss", "loss") == "gone_module.PATLoss"
    assert label("gone_module.Net", "model") == "Net"


def test_the_hparams_row_shows_the_arguments_the_users_description_names() -> None:
    name, shown = shown_arguments({"class_path": f"{HERE}.FocalLoss", "init_args": {"power": 3.0, "ignore_index": 7}})
    assert (name, shown) == (f"{HERE}.FocalLoss", {"power": 3.0})  # ignore_index comes from the data
    name, shown = shown_arguments({"class_path": "pat_seg.losses.FocalLoss", "init_args": {"gamma": 1.0}})
    assert (name, shown) == ("FocalLoss", {"gamma": 1.0})


# --- reloading runs no code a file names ----------------------------------------------------------
def test_a_checkpoint_naming_a_module_not_imported_is_refused_before_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "IMPORTED"
    (tmp_path / "marker_loss.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\nfrom torch import nn\nclass Loss(nn.Module): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # importable: only loading's own rule keeps it out
    checkpoint = tmp_path / "crafted.ckpt"
    hyper_parameters = {
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "model": {"class_path": "pat_seg.models.UNet", "init_args": {"num_classes": 3}},
        "loss": {"class_path": "marker_loss.Loss", "init_args": {}},
        "num_classes": 3,
    }
    torch.save(
        {"state_dict": {}, "hyper_parameters": hyper_parameters, "pytorch-lightning_version": "2.6.0"}, checkpoint
    )
    with pytest.raises(ConfigurationError, match="marker_loss.Loss"):
        SegmentationModule.load_from_checkpoint(checkpoint)
    with pytest.raises(ConfigurationError, match="weights_only=False"):
        SegmentationModule.load_from_checkpoint(checkpoint, weights_only=False)
    assert not marker.exists() and "marker_loss" not in sys.modules


def test_a_module_built_in_python_keeps_no_objects_in_its_hyperparameters() -> None:
    """Objects would need unpickling code to load: such a module's checkpoints name no network or loss."""
    from pat_seg.losses import CrossEntropyLoss as OurCrossEntropyLoss

    module = SegmentationModule(UNet(3, base_channels=4, depth=1), OurCrossEntropyLoss(), num_classes=3)
    assert not {"model", "loss", "optimizer", "lr_scheduler"} & set(module.hparams)
    assert all(isinstance(value, (bool, int, float, str, type(None))) for value in module.hparams.values())


# --- schedulers and loggers as configured ---------------------------------------------------------
def fit(root: Path, *flags: str) -> Any:
    """An in-process ``pat-seg fit`` of 2 epochs of 2 batches (4 optimizer steps) into ``root``."""
    return cli_main(
        ["fit", *TINY, "--trainer.max_epochs=2", f"--trainer.default_root_dir={root}", "--trainer.logger=false",
         "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", *flags]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "scheduler_steps"),
    [
        (["--model.lr_scheduler=StepLR", "--model.lr_scheduler.init_args.step_size=1"], 2),  # once per epoch
        (
            [
                "--model.lr_scheduler=StepLR",
                "--model.lr_scheduler.init_args.step_size=1",
                "--model.lr_scheduler_interval=step",
            ],
            4,
        ),  # once per optimizer step, when asked
    ],  # fmt: skip
    ids=["per-epoch", "per-step"],
)
def test_a_configured_scheduler_steps_per_epoch_unless_told_otherwise(
    tmp_path: Path, flags: list[str], scheduler_steps: int
) -> None:
    cli = fit(tmp_path, *flags, "--model.lr_scheduler.init_args.gamma=0.5")
    assert cli.trainer.global_step == 4
    # StepLR(step_size=1, gamma=0.5) halves Adam's 1e-3 at each of its steps.
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**scheduler_steps, rel=1e-9)


def test_the_built_in_cosine_schedule_still_steps_per_optimizer_step(tmp_path: Path) -> None:
    cli = fit(tmp_path)
    (config,) = cli.trainer.lr_scheduler_configs
    assert config.interval == "step"
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # annealed to 0 in 4 steps


def test_a_run_saved_before_the_interval_existed_is_the_same_experiment() -> None:
    before = {"model": {"cosine_annealing": True, "lr_scheduler": None}}
    now = {"model": {"cosine_annealing": True, "lr_scheduler": None, "lr_scheduler_interval": "epoch"}}
    assert identity_differences(before, now) == []
    per_step = {"model": {**now["model"], "lr_scheduler_interval": "step"}}
    assert identity_differences(before, per_step) == ["model.lr_scheduler_interval: 'epoch' -> 'step'"]


def test_a_configured_tensorboard_logger_keeps_its_options(tmp_path: Path) -> None:
    cli = cli_main(
        ["fit", *TINY, "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.enable_model_summary=true",
         "--trainer.logger=TensorBoardLogger", f"--trainer.logger.init_args.save_dir={tmp_path}",
         "--trainer.logger.init_args.log_graph=true", "--trainer.logger.init_args.prefix=mine"]
    )  # fmt: skip
    logger = cli.trainer.logger
    assert logger.log_dir.startswith(str(tmp_path))
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert events.Tags()["graph"], "log_graph=True was dropped: no graph in the run's event file"
    assert any(tag.startswith("mine-") for tag in events.Tags()["scalars"])  # the prefix, kept too


# --- a class path that names no class: one short message -------------------------------------------
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--model.loss=nomodule_here.MyLoss"], ["No module named 'nomodule_here'", "PYTHONPATH", "PATLoss"]),
        (["--model.loss=PATLos"], ["'PATLos' names no known class", "did you mean PATLoss?"]),
        (["--data=DiskDataModule"], ["abstract", "SegmentationFolderDataModule", "CityscapesDataModule"]),
    ],
    ids=["module-does-not-import", "mistyped-name", "abstract-base"],
)
def test_a_class_path_that_names_no_class_is_one_short_message(
    tmp_path: Path, flags: list[str], expected: list[str]
) -> None:
    result = pat_seg("fit", *flags, cwd=tmp_path)
    short_error(result, *expected)
    assert result.returncode == 2 and not (tmp_path / "lightning_logs").exists()
