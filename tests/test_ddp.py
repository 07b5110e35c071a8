"""DDP on CPU (gloo): the validation confusion matrix of a FIXED checkpoint is identical with 1 process,
2 processes (``--trainer.strategy=ddp --trainer.devices=2``) and two torchrun "nodes" on 127.0.0.1,
and so is ``val/loss``, reduced as a sum and a count over processes (not a mean of per-process means).

The validation split has an odd size (7 samples), so a padding sampler would count a sample twice
under 2 processes and the matrices would differ; the matrix must also sum to the split's valid pixels.
With 2 processes the ranks hold 4 and 3 images, so a mean of per-process means would differ from the
1-process mean: the default PAT loss is a mean over images, whose total does not depend on batching.
A 2-process ``predict`` reports the files written (and unreadable images skipped) by both processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from test_resume import REPO, run_pat_seg, tiny_config

from pat_seg.data.synthetic import SyntheticLongTailDataset

NUM_VAL, IMAGE_SIZE = 7, 32


class SaveConfusionMatrix(L.Callback):
    """Test-only: rank 0 writes the synced validation confusion matrix to ``path`` (torch.save)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs before the module's own hook resets the metric; the summed matrix is what compute() sees.
        with pl_module.val_metrics.sync_context():
            self.confmat = pl_module.val_metrics.confmat.detach().cpu().clone()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = float(trainer.callback_metrics["val/loss"])  # the epoch's value, reduced over processes
        if trainer.is_global_zero:
            torch.save({"confmat": self.confmat, "loss": loss}, self.path)


def validate_config(root: Path, name: str) -> Path:
    config = tiny_config(root)
    config["trainer"]["callbacks"] = [
        {"class_path": "test_ddp.SaveConfusionMatrix", "init_args": {"path": str(root / f"{name}.pt")}}
    ]
    config["trainer"]["logger"] = False
    config["data"]["init_args"].update(num_val=NUM_VAL, eval_batch_size=2)
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(config))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A briefly trained checkpoint and its 1-process validation confusion matrix."""
    root = tmp_path_factory.mktemp("ddp")
    config = tiny_config(root)
    config["trainer"].update(max_epochs=1, limit_train_batches=2)
    (root / "train.yaml").write_text(json.dumps(config))
    trained = run_pat_seg(["fit", "--config", str(root / "train.yaml")])
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = root / "lightning_logs" / "train" / "version_0" / "checkpoints" / "last.ckpt"
    single = run_pat_seg(["validate", "--config", str(validate_config(root, "single")), "--ckpt_path", str(ckpt)])
    assert single.returncode == 0, single.stderr[-3000:]
    saved = torch.load(root / "single.pt")
    matrix = saved["confmat"]
    valid_pixels = sum(
        int((SyntheticLongTailDataset(NUM_VAL, IMAGE_SIZE, 0, "val")[i]["target"] != 255).sum()) for i in range(NUM_VAL)
    )
    assert int(matrix.sum()) == valid_pixels  # every valid pixel of the split counted once
    return ckpt, saved


def assert_same_validation(saved: dict, single: dict) -> None:
    assert torch.equal(saved["confmat"], single["confmat"])
    assert saved["loss"] == pytest.approx(single["loss"], rel=1e-6)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(checkpoint: tuple[Path, dict]) -> None:
    ckpt, single = checkpoint
    root = ckpt.parents[4]
    args = [
        "validate",
        "--config",
        str(validate_config(root, "ddp")),
        "--ckpt_path",
        str(ckpt),
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    ddp = run_pat_seg(args, env={"MASTER_PORT": str(free_port())})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert_same_validation(torch.load(root / "ddp.pt"), single)
    assert "sync_dist" not in ddp.stderr  # every logged metric is reduced over processes


@pytest.mark.slow
def test_two_torchrun_nodes_match_one_process(checkpoint: tuple[Path, dict]) -> None:
    ckpt, single = checkpoint
    root = ckpt.parents[4]
    config = validate_config(root, "nodes")
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    port = str(free_port())
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node_rank",
                str(rank),
                "--nproc_per_node",
                "1",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                "-m",
                "pat_seg",
                "validate",
                "--config",
                str(config),
                "--ckpt_path",
                str(ckpt),
                "--trainer.accelerator=cpu",
                "--trainer.devices=1",
                "--trainer.num_nodes=2",
                "--trainer.strategy=ddp",
            ],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert_same_validation(torch.load(root / "nodes.pt"), single)


def test_a_finished_command_destroys_its_process_group(tmp_path: Path, monkeypatch) -> None:
    """A command that ran under DDP ends with no process group left for interpreter shutdown, where
    gloo's threads can abort a process whose work is done (a torchrun node then reports a failure)."""
    import pat_seg.cli.app as app

    def command_under_ddp(args: list[str] | None = None) -> None:
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        torch.distributed.barrier()

    monkeypatch.setattr(app, "cli_main", command_under_ddp)
    try:
        app.main(["validate"])
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_fit_logs_without_sync_warnings(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    config["trainer"].update(max_epochs=1, limit_train_batches=2)
    (tmp_path / "fit.yaml").write_text(json.dumps(config))
    fit = run_pat_seg(
        [
            "fit",
            "--config",
            str(tmp_path / "fit.yaml"),
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
        ],
        env={"MASTER_PORT": str(free_port())},
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "sync_dist" not in fit.stderr, fit.stderr[-3000:]


def photos_with_two_broken(folder: Path) -> tuple[list[str], list[str]]:
    """Five files, sorted ``a0`` ... ``a4``; ``a0`` (rank 0's share: 0, 2, 4) and ``a3`` (rank 1's: 1, 3)
    are not images. Returns the readable names and the broken files."""
    folder.mkdir()
    readable, broken = [], []
    for index in range(5):
        path = folder / f"a{index}.png"
        if index in (0, 3):
            path.write_bytes(b"not a PNG")
            broken.append(str(path))
        else:
            Image.fromarray(np.full((32, 48, 3), 40 * index, dtype=np.uint8)).save(path)
            readable.append(path.stem)
    return readable, broken


@pytest.mark.slow
def test_two_process_predict_reports_the_files_of_both_processes(checkpoint: tuple[Path, dict]) -> None:
    ckpt, _ = checkpoint
    run = ckpt.parents[1]
    readable, broken = photos_with_two_broken(run.parents[2] / "photos")
    args = [
        "predict",
        "--config",
        str(run / "config.yaml"),
        "--ckpt_path",
        "last",
        "--data=ImageFolderDataModule",
        f"--data.root={run.parents[2] / 'photos'}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    ddp = run_pat_seg(args, env={"MASTER_PORT": str(free_port())})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    written = sorted(path.stem for path in (run / "predictions_photos" / "labels").glob("*.png"))
    assert written == readable  # a1, a2, a4: two on rank 0, one on rank 1
    summary = f"wrote 3 label maps to {run / 'predictions_photos' / 'labels'}; skipped 2 unreadable image(s)"
    assert ddp.stderr.count(summary) == 1, ddp.stderr[-3000:]  # said once, by rank 0, for both processes
    for path in broken:  # each named by the process that met it
        assert f"cannot read image {path}" in ddp.stderr
