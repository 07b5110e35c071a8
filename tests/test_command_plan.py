"""The command plan on run folders in a temp dir, without LightningCLI: which run, which checkpoint.

Each fixture writes the files a run holds (``config.yaml``, ``checkpoints/*.ckpt``) by hand, so the
right answer is known from how the folders were made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from pat_seg.experiments.checkpoint_files import UnreadableCheckpointError, write_checkpoint
from pat_seg.experiments.command_plan import CommandRequest, plan_command
from pat_seg.experiments.run_folder import ResumeError, RunFolder

UNET = {"seed_everything": 0, "trainer": {"max_epochs": 4}, "model": {"model": {"class_path": "pat_seg.models.UNet"}}}
SEGNET = {**UNET, "model": {"model": {"class_path": "pat_seg.models.SegNet"}}}


def checkpoint_state(epochs: int, step: int, best: Path | None = None) -> dict[str, Any]:
    """What a Lightning checkpoint holds that the plan reads: progress counters and the best path."""
    callbacks = {} if best is None else {"ModelCheckpoint{'monitor': 'val/miou'}": {"best_model_path": str(best)}}
    return {
        "epoch": epochs,
        "global_step": step,
        "state_dict": {"w": torch.zeros(2)},
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": epochs}}}},
        "callbacks": callbacks,
    }


def make_run(
    root: Path, version: str, config: dict[str, Any], step: int = 6, epochs: int = 2, mtime: float | None = None
) -> Path:
    run = root / "lightning_logs" / "tiny" / version
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    best = run / "checkpoints" / "epoch001.ckpt"
    write_checkpoint(checkpoint_state(epochs, step), best)
    write_checkpoint(checkpoint_state(epochs, step, best), run / "checkpoints" / "last.ckpt")
    if mtime is not None:
        os.utime(run / "checkpoints" / "last.ckpt", (mtime, mtime))
    return run


def fit(
    root: Path, config: dict[str, Any], ckpt_path: str | None = "last", max_epochs: int = 4, version: str | None = None
) -> CommandRequest:
    return CommandRequest(
        "fit",
        ckpt_path,
        RunFolder(root / "lightning_logs", "tiny", version),
        ["tiny.yaml"],
        config,
        max_epochs=max_epochs,
    )


def digest(root: Path) -> dict[str, str]:
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in root.rglob("*") if path.is_file()}


def test_last_continues_the_newest_run_made_with_the_same_config(tmp_path: Path) -> None:
    older = make_run(tmp_path, "version_0", UNET, step=6, mtime=1_000)
    make_run(tmp_path, "version_1", SEGNET, step=9, mtime=2_000)  # newer, but another network
    plan = plan_command(fit(tmp_path, {**UNET, "trainer": {"max_epochs": 8}}))  # a larger budget is allowed
    assert plan.run is not None and plan.run.path == older
    assert plan.checkpoint == older / "checkpoints" / "last.ckpt"
    assert plan.purge_step == 6 and plan.state is not None and plan.state["global_step"] == 6


def test_last_refuses_runs_of_another_config_and_writes_nothing(tmp_path: Path) -> None:
    make_run(tmp_path, "version_0", UNET)
    before = digest(tmp_path)
    for other in (SEGNET, {**UNET, "seed_everything": 1}):
        with pytest.raises(ResumeError, match="version_0") as refused:
            plan_command(fit(tmp_path, other))
    assert "seed_everything: 0 -> 1" in str(refused.value)
    assert digest(tmp_path) == before


def test_a_checkpoint_of_a_run_with_another_config_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path, "version_0", UNET)
    with pytest.raises(ResumeError, match="SegNet"):
        plan_command(fit(tmp_path, SEGNET, ckpt_path=str(run / "checkpoints" / "last.ckpt")))


def test_last_without_a_checkpoint_is_refused_never_a_silent_new_run(tmp_path: Path) -> None:
    # No run of the experiment at all.
    with pytest.raises(ResumeError, match=r"no run of 'tiny' .* has a checkpoint yet.*without --ckpt_path"):
        plan_command(fit(tmp_path, UNET))
    # A fixed version (a sweep's run) that does not exist, and one stopped before its first checkpoint:
    # its folder holds a config and events but checkpoints/ is empty.
    with pytest.raises(ResumeError, match=r"run .*version_9 does not exist.*without --ckpt_path"):
        plan_command(fit(tmp_path, UNET, version="version_9"))
    run = tmp_path / "lightning_logs" / "tiny" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(UNET))
    before = digest(tmp_path)
    with pytest.raises(ResumeError, match=r"has no checkpoint yet .*move its folder away") as refused:
        plan_command(fit(tmp_path, UNET, version="version_0"))
    assert str(run) in str(refused.value) and digest(tmp_path) == before


def test_a_finished_run_says_how_to_continue_it(tmp_path: Path) -> None:
    make_run(tmp_path, "version_0", UNET, epochs=4, step=16)
    with pytest.raises(ResumeError, match=r"already finished .*completed 4 epochs.*raise --trainer.max_epochs"):
        plan_command(fit(tmp_path, UNET, max_epochs=4))
    with pytest.raises(ResumeError, match=r"cannot resume .*max_epochs=3"):
        plan_command(fit(tmp_path, UNET, max_epochs=3))
    # The step budget is checked the same way: 16 steps taken, so max_steps=16 is done and 20 is not.
    request = fit(tmp_path, UNET, max_epochs=-1)
    with pytest.raises(
        ResumeError, match=r"already finished .*taken 16 optimizer steps.*raise --trainer.max_steps above 16"
    ):
        plan_command(dataclasses.replace(request, max_steps=16))
    assert plan_command(dataclasses.replace(request, max_steps=20)).purge_step == 16


def test_a_truncated_last_checkpoint_is_named_with_the_others(tmp_path: Path) -> None:
    run = make_run(tmp_path, "version_0", UNET)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:200])  # what a kill during a non-atomic copy leaves
    with pytest.raises(UnreadableCheckpointError) as unreadable:
        plan_command(fit(tmp_path, UNET, ckpt_path=str(last)))
    message = str(unreadable.value)
    assert str(last) in message and str(run / "checkpoints" / "epoch001.ckpt") in message and "--ckpt_path" in message
    # --ckpt_path last may fall back to the newest readable checkpoint, saying which two.
    plan = plan_command(fit(tmp_path, UNET))
    assert plan.checkpoint == run / "checkpoints" / "epoch001.ckpt"
    assert str(last) in plan.warnings[0] and str(plan.checkpoint) in plan.warnings[0]


def test_a_fixed_version_is_the_only_candidate(tmp_path: Path) -> None:
    make_run(tmp_path, "version_0", UNET, mtime=2_000)
    grid_point = make_run(tmp_path, "pat-s0", UNET, step=3, mtime=1_000)
    plan = plan_command(fit(tmp_path, UNET, version="pat-s0"))
    assert plan.run is not None and plan.run.path == grid_point and plan.purge_step == 3


@pytest.mark.parametrize(
    ("subcommand", "folder"), [("test", "test"), ("validate", "validate"), ("predict", "predictions")]
)
def test_evaluations_go_into_the_run_of_their_checkpoint(tmp_path: Path, subcommand: str, folder: str) -> None:
    run = make_run(tmp_path, "version_0", UNET)
    request = CommandRequest(
        subcommand, "best", RunFolder(tmp_path / "lightning_logs", "config"), [str(run / "config.yaml")], UNET
    )
    plan = plan_command(request)
    assert plan.checkpoint == run / "checkpoints" / "epoch001.ckpt"  # recorded as best in last.ckpt
    assert plan.run is not None and plan.run.path == run and plan.subfolder == folder


def test_own_images_and_the_test_split_are_predicted_into_separate_folders(tmp_path: Path) -> None:
    run = make_run(tmp_path, "version_0", UNET)
    default = RunFolder(tmp_path / "lightning_logs", "config")
    split = CommandRequest("predict", "last", default, [str(run / "config.yaml")], UNET)
    photos = CommandRequest(
        "predict", "last", default, [str(run / "config.yaml")], UNET, image_folder=tmp_path / "holiday"
    )
    assert (plan_command(split).subfolder, plan_command(photos).subfolder) == ("predictions", "predictions_holiday")

    # Once predictions_holiday holds a/holiday's outputs, b/holiday gets a folder of its own, and
    # a/holiday again replaces its own.
    def saved(subfolder: str, root: Path) -> None:
        (run / subfolder).mkdir()
        (run / subfolder / "config.yaml").write_text(yaml.safe_dump({"data": {"init_args": {"root": str(root)}}}))

    def predict(root: Path) -> str:
        return plan_command(dataclasses.replace(photos, image_folder=root)).subfolder

    saved("predictions_holiday", tmp_path / "a" / "holiday")
    assert predict(tmp_path / "a" / "holiday") == "predictions_holiday"
    assert predict(tmp_path / "b" / "holiday") == "predictions_holiday_2"
    saved("predictions_holiday_2", tmp_path / "b" / "holiday")
    assert predict(tmp_path / "b" / "holiday") == "predictions_holiday_2"
    assert predict(tmp_path / "c" / "holiday") == "predictions_holiday_3"


def test_best_without_the_runs_config_names_it(tmp_path: Path) -> None:
    run = make_run(tmp_path, "version_0", UNET)
    request = CommandRequest("test", "best", RunFolder(tmp_path / "lightning_logs", "default"), [], UNET)
    with pytest.raises(ResumeError, match="give that run's config") as refused:
        plan_command(request)
    assert str(run / "config.yaml") in str(refused.value)


def test_an_evaluation_without_a_checkpoint_warns_of_random_weights(tmp_path: Path) -> None:
    plan = plan_command(CommandRequest("test", None, RunFolder(tmp_path, "default"), [], UNET))
    assert plan.checkpoint is None and "random weights" in plan.warnings[0]
