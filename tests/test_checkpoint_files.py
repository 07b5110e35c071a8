"""Checkpoint files: written atomically beside their target, read without running code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from pat_seg.experiments.checkpoint_files import (
    CHECKPOINT_TYPES,
    SafeCheckpointIO,
    UnreadableCheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from pat_seg.module import SegmentationModule


class RunsCode:
    """A pickle that creates ``marker`` when loaded by an unrestricted unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A file that looks like a Lightning checkpoint and carries :class:`RunsCode`."""
    torch.save({"state_dict": {}, "global_step": 0, "payload": RunsCode(marker)}, path)
    return path


def test_the_temporary_file_lies_beside_the_target_whatever_tmpdir_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm here")
    monkeypatch.setenv("TMPDIR", "/dev/shm")
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert tempfile.gettempdir() == "/dev/shm"
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace
    monkeypatch.setattr(
        os,
        "replace",
        lambda source, target: (renames.append((Path(source), Path(target))), real_replace(source, target))[1],
    )
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.arange(4.0)}, target)
    assert [(source.parent, destination) for source, destination in renames] == [(target.parent, target)]
    assert os.stat(renames[0][0].parent).st_dev == os.stat(target.parent).st_dev
    assert torch.equal(read_checkpoint(target)["w"], torch.arange(4.0))
    assert sorted(path.name for path in target.parent.iterdir()) == ["last.ckpt"]  # no temporary left


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    write_checkpoint({"global_step": 1}, target)

    def interrupted(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint({"global_step": 2}, target)
    monkeypatch.undo()
    assert read_checkpoint(target)["global_step"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    crafted = crafted_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(UnreadableCheckpointError, match=r"system") as refused:
        read_checkpoint(crafted)
    assert str(crafted) in str(refused.value)
    with pytest.raises(UnreadableCheckpointError):
        SafeCheckpointIO().load_checkpoint(crafted)  # the trainer's own loads go through the same reader
    # Reloading a module from Python goes through it too, from a path or from an open file.
    with pytest.raises(UnreadableCheckpointError, match=r"system"):
        SegmentationModule.load_from_checkpoint(crafted)
    with crafted.open("rb") as stream, pytest.raises(UnreadableCheckpointError, match="cannot read checkpoint"):
        SegmentationModule.load_from_checkpoint(stream)
    assert not marker.exists()


def test_read_checkpoint_leaves_a_file_object_where_it_was(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    write_checkpoint({"global_step": 7, "w": torch.arange(3.0)}, target)
    with target.open("rb") as stream:
        assert read_checkpoint(stream)["global_step"] == 7
        assert stream.tell() == 0  # the next reader (Lightning's) starts from the beginning
        assert torch.equal(torch.load(stream, weights_only=True)["w"], torch.arange(3.0))


def test_truncated_and_missing_checkpoints_are_named(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    write_checkpoint({"global_step": 1, "w": torch.ones(1000)}, target)
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(UnreadableCheckpointError, match="cannot read checkpoint .*last.ckpt"):
        read_checkpoint(target)
    with pytest.raises(UnreadableCheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_a_loaded_checkpoint_is_answered_from_memory_once(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    write_checkpoint({"global_step": 1}, target)
    opened = {"global_step": 7}  # differs from the file: tells which one was returned
    io = SafeCheckpointIO((target, opened))
    assert io.load_checkpoint(target) is opened
    assert io.load_checkpoint(target)["global_step"] == 1


def test_the_allow_list_is_what_a_default_run_writes(tmp_path: Path) -> None:
    """Every global in a checkpoint of the default config (all its callbacks) is either torch's
    weights-only default or on the allow-list, and every allowed type occurs in it."""
    from pat_seg.cli import cli_main

    cli_main(
        [
            "fit",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--data.num_train=8",
            "--data.num_val=2",
            "--data.num_test=2",
            "--data.image_size=16",
            "--data.batch_size=4",
            "--model.model.init_args.base_channels=4",
            "--model.model.init_args.depth=1",
        ]
    )
    (last,) = tmp_path.glob("lightning_logs/default/version_0/checkpoints/last.ckpt")
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(last))
    assert needed == {f"{kind.__module__}.{kind.__qualname__}" for kind in CHECKPOINT_TYPES}
    assert read_checkpoint(last)["global_step"] == 2
