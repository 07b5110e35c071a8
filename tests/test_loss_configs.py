"""Every ``configs/synthetic_<loss>.yaml`` trains through ``pat-seg fit`` (the Table 3 row set)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pat_seg.cli import cli_main
from pat_seg.data import SyntheticLongTailDataModule

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("synthetic_*.yaml"))
TINY = [
    "--data.num_train=8", "--data.num_val=4", "--data.num_test=4", "--data.image_size=32", "--data.batch_size=4",
    "--model.model.init_args.base_channels=4", "--model.model.init_args.depth=2",
    "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.logger=false",
    "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def test_every_table3_loss_has_a_config():
    names = {path.stem.removeprefix("synthetic_") for path in CONFIGS}
    assert {"ce", "pat", "focal", "cb", "cbfocal", "bms", "ldam", "blv"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_fits_two_steps_with_counts_from_the_data(config, tmp_path):
    cli = cli_main(["fit", f"--config={config}", f"--trainer.default_root_dir={tmp_path}", *TINY])
    assert cli.trainer.global_step == 2
    loss = cli.model.loss
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    if getattr(loss, "needs_class_counts", False):
        # Counted over the 8 training images by the data module, not typed into the config.
        expected = SyntheticLongTailDataModule(num_train=8, image_size=32).class_counts
        assert loss.class_counts == [float(c) for c in expected]
        assert cli.model.hparams_initial["class_counts"] == expected  # what the loggers record
