"""Bad input stops ``pat-seg`` before any work with a short message naming the flag, file or folder
(exit 2, at most 15 lines, nothing written); and what a finished command tells its user.

Each expected answer is worked out here from how the input was made: the line a key was written on,
the range Lightning documents for a Trainer option, the folder a path lies under.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from test_command_plan import make_run
from test_run_safety import TINY_DATA, TINY_TRAINER, pat_seg, short_error, write

from pat_seg.cli.app import fill_classes_from_run, folders_written
from pat_seg.cli.errors import unknown_config_key, where_set
from pat_seg.cli.fit_summary import fit_summary
from pat_seg.cli.trainer_checks import check_trainer_options
from pat_seg.data.synthetic import CLASS_NAMES
from pat_seg.exceptions import ConfigurationError
from pat_seg.experiments.command_plan import CommandPlan, CommandRequest, plan_command
from pat_seg.experiments.run_folder import ResumeError, RunFolder
from pat_seg.experiments.writable import check_writable

# Values outside the range Lightning's Trainer documents for each option.
OUT_OF_RANGE = [
    ("max_epochs", -3),
    ("max_steps", -5),
    ("devices", 0),
    ("val_check_interval", -1),
    ("limit_train_batches", -0.5),
    ("accumulate_grad_batches", 0),
    ("check_val_every_n_epoch", 0),
    ("precision", 17),
]
# Values inside it (each a case the rules must let through).
IN_RANGE = {
    "max_epochs": [-1, 0, 12, None],
    "max_steps": [-1, 0, 100],
    "devices": [1, -1, "auto", "2", [0, 1], "0,1"],
    "val_check_interval": [1.0, 0.25, 1, 50, "00:00:10:00", None],
    "limit_train_batches": [0, 0.0, 0.5, 1.0, 1, 10, 10.0, None],
    "accumulate_grad_batches": [1, 4],
    "check_val_every_n_epoch": [1, 3, None],
    "precision": [32, "32", "16-mixed", "bf16-mixed", "bf16", "64-true", None],
}
TINY = [f"--data.{key}={value}" for key, value in TINY_DATA.items()] + [
    "--model.model.init_args.base_channels=4",
    "--model.model.init_args.depth=1",
]


@pytest.mark.parametrize(("option", "value"), OUT_OF_RANGE)
def test_a_trainer_option_out_of_range_is_named_with_where_it_was_set(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as refused:
        check_trainer_options({option: value}, [f"--trainer.{option}={value}"])
    assert str(refused.value).startswith(f"--trainer.{option}={value} (the command line): must be ")


@pytest.mark.parametrize("option", sorted(IN_RANGE))
def test_trainer_options_in_range_pass(option: str) -> None:
    for value in IN_RANGE[option]:
        check_trainer_options({option: value}, [])


def test_where_a_value_was_set_the_flag_then_the_last_config_file_then_the_defaults(tmp_path: Path) -> None:
    first = tmp_path / "first.yaml"
    first.write_text("# budget\ntrainer:\n  max_epochs: 4\n  max_steps: 9\n")
    second = tmp_path / "second.yaml"
    second.write_text("model: {}\ntrainer:\n  accelerator: cpu\n\n  max_epochs: -3\n")
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("trainer:\n  devices: 0\n")
    files = ["--config", str(first), f"--config={second}"]
    assert where_set("trainer.max_epochs", files) == f"{second} line 5"  # the later file wins
    assert where_set("trainer.max_steps", files) == f"{first} line 4"
    assert where_set("trainer.max_epochs", [*files, "--trainer.max_epochs", "-3"]) == "the command line"
    assert where_set("trainer.devices", files, [str(defaults)]) == f"{defaults} line 2"
    assert where_set("trainer.precision", files, [str(defaults)]) == "its default"


OPTIONS = [
    "--config",
    "--seed_everything",
    "--ckpt_path",
    "--name",
    "--trainer",
    "--trainer.max_epochs",
    "--trainer.max_steps",
    "--trainer.min_epochs",
    "--trainer.callbacks",
    "--model",
    "--model.model",
    "--model.model.help",
    "--model.loss",
    "--model.lr",
    "--data",
    "--data.help",
]


def test_an_unknown_key_of_a_config_file_is_named_with_its_line_and_the_nearest_keys(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("seed_everything: 1\ntrainer:\n  min_epochs: 1\n  max_epoch: 3\n")
    message = str(unknown_config_key([str(typo)], OPTIONS))
    # The keys closest first (difflib's ratio: 0.95, 0.84, 0.67; the cut-off is 0.6).
    assert message.splitlines()[0] == (
        f"{typo} line 4: unknown key trainer.max_epoch; did you mean max_epochs or min_epochs or max_steps?"
    )
    assert message.splitlines()[1] == "under trainer: valid keys are callbacks, max_epochs, max_steps, min_epochs"
    top = tmp_path / "top.yaml"
    top.write_text("trainer:\n  max_epochs: 3\nmodle:\n  lr: 0.1\n")
    assert str(unknown_config_key([str(typo).replace("typo", "missing"), str(top)], OPTIONS)).startswith(
        f"{top} line 3: unknown key modle; did you mean model?"
    )


def test_keys_below_a_class_or_a_whole_value_are_left_to_the_class(tmp_path: Path) -> None:
    config = tmp_path / "fine.yaml"
    config.write_text(
        "model:\n  loss:\n    class_path: PATLoss\n    init_args:\n      temprature: 5\n"
        "  model:\n    init_args:\n      depth: 2\n"
        "data:\n  init_args:\n    anything: 1\ntrainer:\n  callbacks:\n    - class_path: X\n"
    )
    assert unknown_config_key([str(config)], OPTIONS) is None


def test_a_folder_under_a_file_or_a_read_only_one_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the save dir would go")
    with pytest.raises(
        ConfigurationError, match=re.escape(f"to {blocker / 'default'}: {blocker} is a file, not a folder")
    ):
        check_writable([(blocker / "default", "the new run")])
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # Running as root ignores file modes: the read-only folder is simulated at the access check.
    monkeypatch.setattr("pat_seg.experiments.writable.os.access", lambda path, mode: Path(path) != checkpoints)
    check_writable([(tmp_path / "run", "the run")])
    with pytest.raises(ConfigurationError, match=re.escape(f"the run's checkpoints to {checkpoints}: it is read-only")):
        check_writable([(tmp_path / "run", "the run"), (checkpoints, "the run's checkpoints")])


def test_a_resumed_fit_checks_its_checkpoint_folders_and_an_evaluation_its_subfolder(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "lightning_logs", "tiny", "version_0")
    assert run.path is not None
    callback = ModelCheckpoint(dirpath=str(tmp_path / "elsewhere"))
    assert [folder for folder, _ in folders_written(CommandPlan(run), "fit", [callback])] == [
        run.path,
        run.path / "checkpoints",
        tmp_path / "elsewhere",
    ]
    assert [folder for folder, _ in folders_written(CommandPlan(run, subfolder="test"), "test", [callback])] == [
        run.path / "test"
    ]
    new = RunFolder(tmp_path / "lightning_logs", "tiny")
    assert [folder for folder, _ in folders_written(CommandPlan(new), "fit", [])] == [
        tmp_path / "lightning_logs" / "tiny"
    ]


PAT_RUN = {
    "seed_everything": 0,
    "trainer": {"max_epochs": 4},
    "model": {
        "model": {"class_path": "pat_seg.models.UNet"},
        "loss": {"class_path": "pat_seg.losses.PATLoss", "init_args": {"temperature": 20.0}},
    },
}


def evaluation(root: Path, subcommand: str, config: dict) -> CommandRequest:
    run = root / "lightning_logs" / "tiny" / "version_0"
    return CommandRequest(
        subcommand, "last", RunFolder(root / "lightning_logs", "tiny"), [str(run / "config.yaml")], config
    )


def test_testing_a_run_with_another_loss_is_refused_and_its_own_loss_is_not(tmp_path: Path) -> None:
    run = make_run(tmp_path, "version_0", PAT_RUN)
    ce = {**PAT_RUN, "model": {**PAT_RUN["model"], "loss": {"class_path": "pat_seg.losses.CrossEntropyLoss"}}}
    for subcommand in ("test", "validate"):
        with pytest.raises(ResumeError) as refused:
            plan_command(evaluation(tmp_path, subcommand, ce))
        message = str(refused.value)
        assert f"run {run} was trained with the loss PATLoss, this command gives CrossEntropyLoss" in message
        assert "model.loss.class_path: 'pat_seg.losses.PATLoss' -> 'pat_seg.losses.CrossEntropyLoss'" in message
        assert "copy the checkpoint and config.yaml out of the run" in message and len(message.splitlines()) <= 12
    hotter = {
        **PAT_RUN,
        "model": {**PAT_RUN["model"], "loss": {**PAT_RUN["model"]["loss"], "init_args": {"temperature": 5.0}}},
    }
    with pytest.raises(ResumeError, match="model.loss.init_args.temperature: 20.0 -> 5.0"):
        plan_command(evaluation(tmp_path, "test", hotter))
    assert plan_command(evaluation(tmp_path, "test", PAT_RUN)).subfolder == "test"
    assert plan_command(evaluation(tmp_path, "predict", ce)).subfolder == "predictions"  # no loss in predictions
    assert not (run / "test").exists()


def test_the_last_line_of_fit_names_the_run_the_final_validation_and_the_best_checkpoint(tmp_path: Path) -> None:
    best = ModelCheckpoint(monitor="val/miou", mode="max")
    best.best_model_path = str(tmp_path / "epoch003-miou0.7100.ckpt")
    trainer = SimpleNamespace(
        logger=object(),
        log_dir=str(tmp_path / "version_0"),
        callback_metrics={
            "val/miou": torch.tensor(0.71),
            "val/miou_head": torch.tensor(0.875),
            "val/iou/road": torch.tensor(0.9),  # per-class values stay in TensorBoard
            "train/loss_epoch": torch.tensor(0.3),
            "val/loss": torch.tensor(1.25),
        },
        callbacks=[ModelCheckpoint(save_last=True), best],
    )
    assert fit_summary(trainer) == (
        f"pat-seg fit: run {tmp_path / 'version_0'}; final val miou 0.7100, miou_head 0.8750, loss 1.2500; "
        f"best checkpoint {tmp_path / 'epoch003-miou0.7100.ckpt'}"
    )
    unvalidated = SimpleNamespace(logger=None, log_dir=None, callback_metrics={}, callbacks=[])
    assert fit_summary(unvalidated) == (
        "pat-seg fit: run not logged; final val none (validation did not run); best checkpoint none written"
    )


def image_folder_config(run: Path) -> Namespace:
    init_args = Namespace(root="photos", num_classes=None, class_names=None)
    return Namespace(
        data=Namespace(class_path="pat_seg.data.ImageFolderDataModule", init_args=init_args),
        ckpt_path="last",
        config=[str(run / "config.yaml")],
    )


def test_predicting_an_image_folder_takes_the_class_names_of_the_runs_data_module(tmp_path: Path) -> None:
    synthetic = {**PAT_RUN, "data": {"class_path": "pat_seg.data.SyntheticLongTailDataModule", "init_args": {}}}
    run = make_run(tmp_path, "version_0", synthetic)
    (run / "hparams.yaml").write_text(yaml.safe_dump({"num_classes": 9, "class_names": None}))
    config = image_folder_config(run)
    fill_classes_from_run(config)
    assert config.data.init_args.num_classes == 9 and config.data.init_args.class_names == CLASS_NAMES
    # A data module that takes its classes as an argument: the names from its config, unbuilt.
    folder = {**PAT_RUN, "data": {"class_path": "my.Folder", "init_args": {"class_names": ["bg", "cat", "dog"]}}}
    other = make_run(tmp_path / "other", "version_0", folder)
    (other / "hparams.yaml").write_text(yaml.safe_dump({"num_classes": 3, "class_names": None}))
    config = image_folder_config(other)
    fill_classes_from_run(config)
    assert config.data.init_args.class_names == ["bg", "cat", "dog"]


# --- through the console script ----------------------------------------------------------------------


def refused_before_work(result: object, cwd: Path, *names: str) -> None:
    short_error(result, *names)  # type: ignore[arg-type]
    assert result.returncode == 2  # type: ignore[attr-defined]
    assert not (cwd / "lightning_logs").exists()  # nothing written


@pytest.mark.parametrize(
    ("option", "value"), [OUT_OF_RANGE[0], *(pytest.param(*case, marks=pytest.mark.slow) for case in OUT_OF_RANGE[1:])]
)
def test_the_console_refuses_a_trainer_option_out_of_range(tmp_path: Path, option: str, value: object) -> None:
    result = pat_seg("fit", f"--trainer.{option}={value}", cwd=tmp_path)
    refused_before_work(result, tmp_path, f"--trainer.{option}={value} (the command line): must be ")


def test_the_console_refuses_images_smaller_than_the_network_takes(tmp_path: Path) -> None:
    # SegNet pools 5 times (32 pixels a side at least); the synthetic scenes are 16x16.
    result = pat_seg("fit", "--model.model=SegNet", "--data.image_size=16", cwd=tmp_path)
    refused_before_work(result, tmp_path, "SegNet needs images of at least 32x32 pixels", "size is 16x16")


@pytest.mark.slow
def test_the_console_names_the_file_and_line_of_a_trainer_option_out_of_range(tmp_path: Path) -> None:
    config = tmp_path / "budget.yaml"
    config.write_text("trainer:\n  accelerator: cpu\n  max_epochs: -3\n")
    result = pat_seg("fit", "--config", str(config), cwd=tmp_path)
    refused_before_work(result, tmp_path, f"--trainer.max_epochs=-3 ({config} line 3)")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "trainer:\n  accelerator: cpu\n  max_epoch: 3\n",
            "line 3: unknown key trainer.max_epoch; did you mean max_epochs",
        ),
        pytest.param(
            "trainer:\n  max_epochs: 3\nmodle:\n  lr: 0.01\n",
            "line 3: unknown key modle; did you mean model",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_the_console_names_a_mistyped_key_in_a_config_file(tmp_path: Path, text: str, message: str) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(text)
    result = pat_seg("fit", "--config", str(typo), cwd=tmp_path)
    refused_before_work(result, tmp_path, f"{typo} {message}")


@pytest.mark.slow
def test_the_console_refuses_a_save_dir_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs would go")
    result = pat_seg("fit", *TINY, f"--trainer.default_root_dir={blocker}", cwd=tmp_path)
    refused_before_work(result, tmp_path, f"{blocker / 'lightning_logs' / 'default'}", f"{blocker} is a file")
    assert blocker.read_text() == "a file where the runs would go"


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only folders; the check is tested above with os.access"
)
def test_the_console_refuses_a_read_only_save_dir(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o555)
    try:
        result = pat_seg("fit", *TINY, f"--trainer.default_root_dir={logs}", cwd=tmp_path)
    finally:
        logs.chmod(0o755)
    refused_before_work(result, tmp_path, f"{logs / 'lightning_logs' / 'default'}: it is read-only")
    assert not list(logs.iterdir())


@pytest.mark.slow
def test_fit_ends_with_its_run_and_a_test_with_another_loss_is_refused(tmp_path: Path) -> None:
    config = write(
        tmp_path / "tiny.yaml",
        {
            "trainer": TINY_TRAINER,
            "data": {"init_args": TINY_DATA},
            "model": {"model": {"init_args": {"base_channels": 4, "depth": 1}}},
        },
    )
    fitted = pat_seg("fit", "--config", str(config), cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    last = fitted.stderr.strip().splitlines()[-1]  # Lightning's console log is on stderr
    assert last.startswith(f"pat-seg fit: run {run}; final val miou ")
    best = Path(last.split("; best checkpoint ")[1])
    assert best.parent == run / "checkpoints" and best.is_file() and best.name.startswith("epoch000-miou")
    miou = float(last.split("final val miou ")[1].split(",")[0])
    assert best.name == f"epoch000-miou{miou:.4f}.ckpt"  # the best of one epoch is that epoch's

    from_run = ["--config", str(run / "config.yaml"), "--ckpt_path", "last"]
    refused = pat_seg("test", *from_run, "--model.loss", "CrossEntropyLoss", cwd=tmp_path)
    short_error(refused, "was trained with the loss PATLoss, this command gives CrossEntropyLoss")
    assert refused.returncode == 2 and not (run / "test").exists()

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(photos / "street.png")
    predicted = pat_seg("predict", *from_run, "--data=ImageFolderDataModule", f"--data.root={photos}", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    # The run records the data module's class names (runs from before kept None: the fallback's tests above).
    assert yaml.safe_load((run / "hparams.yaml").read_text())["class_names"] == CLASS_NAMES
    saved = yaml.safe_load((run / "predictions_photos" / "config.yaml").read_text())
    assert saved["data"]["init_args"]["class_names"] == CLASS_NAMES  # what the overlays' legend shows
