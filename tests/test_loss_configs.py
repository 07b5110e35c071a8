"""The loss pieces ``configs/loss/<loss>.yaml`` and the runnable configs that reference them.

Every runnable config ``configs/<data set>_<loss>.yaml`` names its loss only as ``loss/<loss>.yaml``;
these tests check that the reference resolves, through the CLI's own parser, to the piece's class and
arguments, that the pieces are exactly the paper's losses at the paper's Table 3 settings, and that
each piece builds a working loss.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.utils.data import Dataset

from pat_seg.cli import cli_main
from pat_seg.data import SyntheticLongTailDataModule
from pat_seg.losses import BEYOND_PAPER_LOSSES, PAPER_LOSSES, ClassCountLoss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PIECES = CONFIGS / "loss"
DATA_SETS = ("camvid", "cityscapes", "nyuv2", "oxford_pet", "synthetic")
# The paper's Table 3 settings, written out here rather than read back from the pieces, so a piece
# that drifts from the paper (or gains an argument) fails.
TABLE3: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("pat_seg.losses.CrossEntropyLoss", {}),
    "focal": ("pat_seg.losses.FocalLoss", {"gamma": 2.0}),
    "cb": ("pat_seg.losses.ClassBalancedLoss", {"beta": None}),
    "cbfocal": ("pat_seg.losses.ClassBalancedFocalLoss", {"beta": None, "gamma": 2.0}),
    "bms": ("pat_seg.losses.BalancedSoftmaxLoss", {}),
    "ldam": ("pat_seg.losses.LDAMLoss", {"max_margin": 0.5, "scale": 20.0, "drw_epoch": None}),
    "blv": ("pat_seg.losses.BLVLoss", {"sigma": 0.5}),
    "pat": ("pat_seg.losses.PATLoss", {"temperature": 20.0, "epsilon": 0.0}),
}
# Losses beyond the paper, with the settings of their study (configs/sweeps/synthetic_beyond_pat.yaml).
BEYOND_PAPER: dict[str, tuple[str, dict[str, Any]]] = {
    "patcb": ("pat_seg.losses.PATCBMixtureLoss", {"mix": 0.5, "temperature": 20.0, "decay": 0.99}),
}
# Pieces that set one switch of another piece's loss, for a study of that option: the piece they vary
# and their settings.
VARIANTS: dict[str, tuple[str, tuple[str, dict[str, Any]]]] = {
    "pat_beta_minmax": (
        "pat",
        ("pat_seg.losses.PATLoss", {"temperature": 20.0, "weight_normalization": "batch_minmax"}),
    ),
}
SETTINGS = {**TABLE3, **BEYOND_PAPER, **{name: settings for name, (_, settings) in VARIANTS.items()}}
PIECE_FILES = sorted(PIECES.glob("*.yaml"))
RUNNABLE = sorted(CONFIGS.glob("*.yaml"))  # everything directly in configs/ is a runnable config


def read_yaml(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (a failure, not an error, when the file is missing)."""
    if not path.is_file():
        pytest.fail(f"{path.relative_to(CONFIGS.parent)} does not exist", pytrace=False)
    return yaml.safe_load(path.read_text())


def import_class(class_path: str, where: Path) -> type:
    """The class ``class_path`` names; a clear failure when it is gone (renamed or removed)."""
    module_name, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        pytest.fail(
            f"{where.relative_to(CONFIGS.parent)}: class_path {class_path!r} does not import ({error})", pytrace=False
        )
    assert inspect.isclass(found), f"{where.relative_to(CONFIGS.parent)}: {class_path!r} is not a class"
    return found


def split_name(path: Path) -> tuple[str, str]:
    """``configs/oxford_pet_cb.yaml`` -> ``("oxford_pet", "cb")``."""
    for data_set in DATA_SETS:
        if path.stem.startswith(data_set + "_"):
            return data_set, path.stem.removeprefix(data_set + "_")
    pytest.fail(f"{path.name} is not named <data set>_<loss>.yaml for a data set in {DATA_SETS}", pytrace=False)


def pixel_counts(dataset: Dataset, num_classes: int, ignore_index: int) -> list[int]:
    """Per-class pixel counts of every target in ``dataset``, one sample at a time.

    Written out here so that a test never checks the package's ``count_classes`` against itself.
    """
    total = torch.zeros(num_classes, dtype=torch.long)
    for index in range(len(dataset)):  # type: ignore[arg-type]
        target = dataset[index]["target"]
        total += torch.bincount(target[target != ignore_index].flatten(), minlength=num_classes)
    return total.tolist()


def test_the_pieces_are_exactly_the_packaged_losses() -> None:
    pieces = {path.stem: import_class(read_yaml(path)["class_path"], path) for path in PIECE_FILES}
    for variant, (base, _) in VARIANTS.items():
        assert pieces.pop(variant) is pieces[base], f"{variant}.yaml must name the class of {base}.yaml"
    classes = set(pieces.values())
    assert len(classes) == len(pieces), f"two pieces name one class: {pieces}"
    packaged = set(PAPER_LOSSES) | set(BEYOND_PAPER_LOSSES)
    missing = sorted(cls.__name__ for cls in packaged - classes)
    extra = sorted(cls.__name__ for cls in classes - packaged)
    assert not missing, f"losses of pat_seg.losses without a piece in configs/loss/: {missing}"
    assert not extra, f"pieces in configs/loss/ for classes outside PAPER_LOSSES and BEYOND_PAPER_LOSSES: {extra}"


@pytest.mark.parametrize("name", list(SETTINGS))
def test_piece_holds_the_table3_settings(name: str) -> None:
    class_path, init_args = SETTINGS[name]
    expected = {"class_path": class_path, **({"init_args": init_args} if init_args else {})}
    assert read_yaml(PIECES / f"{name}.yaml") == expected


@pytest.mark.parametrize("path", PIECE_FILES, ids=lambda path: path.stem)
def test_piece_builds_a_loss_that_trains(path: Path) -> None:
    piece = read_yaml(path)
    loss_class = import_class(piece["class_path"], path)
    init_args = piece.get("init_args") or {}
    loss = loss_class(**init_args)
    for name, value in init_args.items():  # every loss keeps its constructor arguments under their names
        assert getattr(loss, name) == value, name
    if isinstance(loss, ClassCountLoss):
        assert loss.class_counts is None  # a piece leaves the counts to the data module
        loss.set_class_counts([5000.0, 400.0, 30.0])
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8), generator=generator)
    target[:, 0] = 255  # ignored pixels take no part
    value = loss.train()(logits, target)
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert not logits.grad[:, :, 0].any(), "an ignored pixel received a gradient"


def test_runnable_configs_cover_every_data_set_and_loss() -> None:
    found = {split_name(path) for path in RUNNABLE}
    grid = {(data_set, loss) for data_set in DATA_SETS for loss in TABLE3}
    assert not grid - found, f"missing runnable configs: {sorted(grid - found)}"


@pytest.mark.parametrize("config", RUNNABLE, ids=lambda path: path.stem)
def test_runnable_config_resolves_to_its_piece(
    config: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, loss_name = split_name(config)
    assert read_yaml(config)["model"]["loss"] == f"loss/{loss_name}.yaml"
    piece_path = PIECES / f"{loss_name}.yaml"
    piece = read_yaml(piece_path)
    loss_class = import_class(piece["class_path"], piece_path)

    monkeypatch.chdir(tmp_path)  # the reference resolves next to the config, wherever pat-seg runs
    with pytest.raises(SystemExit) as done:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)["model"]["loss"]

    assert resolved["class_path"] == piece["class_path"]
    # The piece's arguments, and for every other argument the class's own default: nothing from
    # pat_seg/configs/default.yaml's PAT loss may carry over into another loss.
    defaults = {name: parameter.default for name, parameter in inspect.signature(loss_class).parameters.items()}
    piece_args = piece.get("init_args") or {}
    resolved_args = resolved.get("init_args") or {}  # none printed when the link targets are all there is
    assert resolved_args == {name: piece_args.get(name, defaults[name]) for name in resolved_args}
    assert set(piece_args) <= set(resolved_args)


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(CONFIGS.glob("synthetic_*.yaml")), ids=lambda path: path.stem)
def test_synthetic_config_trains_with_counts_from_the_data(config: Path, tmp_path: Path) -> None:
    tiny = [
        "--data.num_train=8",
        "--data.num_val=4",
        "--data.num_test=4",
        "--data.image_size=32",
        "--data.batch_size=4",
        "--model.model.init_args.base_channels=4",
        "--model.model.init_args.depth=2",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = cli_main(["fit", f"--config={config}", *tiny])
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_step"])
    assert type(cli.model.loss).__name__ == SETTINGS[split_name(config)[1]][0].rpartition(".")[2]
    if isinstance(cli.model.loss, ClassCountLoss):
        # Counted over the 8 training images by the data module, not typed into any config.
        data = SyntheticLongTailDataModule(num_train=8, image_size=32)
        expected = pixel_counts(data.dataset("train"), data.num_classes, data.ignore_index)
        assert cli.model.loss.class_counts == [float(count) for count in expected]
