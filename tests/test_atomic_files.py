"""pat_seg/atomic_files.py: a file is written whole or not at all, its temporary file beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pat_seg.atomic_files import write_atomically, write_text_atomically


def test_text_replaces_the_file_and_leaves_only_it(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "table.csv"  # a missing folder is created
    write_text_atomically(target, "a,b\n1,2\n")
    write_text_atomically(target, "a,b\r\n3,é\r\n")  # line endings and UTF-8 as given
    assert target.read_bytes() == "a,b\r\n3,é\r\n".encode()
    assert [path.name for path in target.parent.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("fails_at", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails_at: str
) -> None:
    target = tmp_path / "counts.json"
    target.write_text("old")

    def half_then_fail(file: object) -> None:
        file.write(b"{half")  # type: ignore[attr-defined]
        if fails_at == "write":
            raise OSError("disk full")

    def broken(*args: object) -> None:
        raise OSError(f"{fails_at} failed")

    if fails_at != "write":
        monkeypatch.setattr(os, fails_at, broken)
    with pytest.raises(OSError, match="disk full|failed"):
        write_atomically(target, half_then_fail)
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["counts.json"]


def test_leftovers_of_killed_writes_go_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    killed = tmp_path / ".last.ckpt.0123456789abcdef.partial"  # what a SIGKILL mid-write leaves
    other = tmp_path / ".best.ckpt.0123456789abcdef.partial"  # another file's write: never touched
    killed.write_bytes(b"half")
    other.write_bytes(b"half")
    write_text_atomically(target, "one")  # processes may share a target: another's temporary stays
    assert killed.exists()
    write_text_atomically(target, "two", remove_leftovers=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == [other.name, "last.ckpt"]
    assert target.read_text() == "two"
