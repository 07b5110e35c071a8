"""`pat-seg` end to end on tiny synthetic runs: TensorBoard tags, saved config, every subcommand."""

import pytest
import torch
import yaml
from tensorboard_utils import read_scalars

from pat_seg.cli import cli_main
from pat_seg.data import SyntheticLongTailDataModule

TINY = [
    "--data.num_train=16",
    "--data.num_val=8",
    "--data.num_test=8",
    "--data.image_size=32",
    "--data.batch_size=4",
    "--model.model.init_args.base_channels=4",
    "--model.model.init_args.depth=2",
    "--trainer.max_epochs=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cli_main(["fit", f"--trainer.default_root_dir={root}", *TINY])
    (version,) = (root / "lightning_logs" / "default").iterdir()  # no --config: experiment "default"
    return root, version


def test_fit_logs_loss_miou_and_per_class_iou(tiny_run):
    _, version = tiny_run
    scalars = read_scalars(version)
    for tag in (
        "train/loss_epoch",
        "train/loss_step",
        "val/miou",
        "val/pixel_accuracy",
        "val/dice_error",
        "val/miou_head",
        "val/miou_tail",
        "val/loss",
    ):
        assert tag in scalars, tag
    for name in SyntheticLongTailDataModule.class_names:
        assert f"val/iou/{name}" in scalars
    assert len(scalars["val/miou"]) == 2  # one value per epoch
    assert all(0.0 <= value <= 1.0 for value in scalars["val/miou"])


def test_config_saved_next_to_logs_and_counts_in_hparams(tiny_run):
    _, version = tiny_run
    config = yaml.safe_load((version / "config.yaml").read_text())
    assert config["model"]["loss"]["class_path"] == "pat_seg.losses.PATLoss"
    assert config["seed_everything"] == 0
    hparams = yaml.safe_load((version / "hparams.yaml").read_text())
    assert hparams["num_classes"] == 9  # linked from the data module at instantiation
    # Counted here pixel by pixel, not with the count_classes the module itself uses.
    data = SyntheticLongTailDataModule(num_train=16, image_size=32)
    train = data.dataset("train")
    expected = torch.zeros(data.num_classes, dtype=torch.long)
    for index in range(len(train)):
        target = train[index]["target"]
        expected += torch.bincount(target[target != data.ignore_index], minlength=data.num_classes)
    assert hparams["class_counts"] == expected.tolist()


def test_validate_test_predict_from_checkpoint(tiny_run, capsys):
    root, version = tiny_run
    checkpoint = version / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    common = [f"--config={version / 'config.yaml'}", f"--ckpt_path={checkpoint}", "--trainer.logger=false"]
    validated = cli_main(["validate", *common])
    assert 0.0 <= validated.trainer.callback_metrics["val/miou"].item() <= 1.0
    tested = cli_main(["test", *common])
    assert "test/iou/sky" in tested.trainer.callback_metrics
    predicted = cli_main(["predict", *common, "--return_predictions=true"])
    predictions = predicted.trainer.predict_loop.predictions
    assert torch.cat(predictions).shape == (8, 32, 32)
    assert torch.cat(predictions).max() < 9
