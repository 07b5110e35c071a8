"""Writing a file whole or not at all: the one writer of checkpoints, ``hparams.yaml``, the study CSV
and the data caches (class counts, a prepared split's verified checksums).

The content goes to a temporary file in the target's own folder, is flushed to disk (``fsync``) and
renamed over the target with :func:`os.replace`. A rename within one folder is atomic on every POSIX
filesystem, whatever the system temp folder is, so a reader (another process, a resumed run) sees
the old file or the new one, never half of one, and a SIGKILL at any moment leaves no torn target.
A write that fails removes its temporary file before the error goes on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".partial"  # what a write interrupted by a kill leaves behind


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def write_atomically(path: Path, write: Callable[[BinaryIO], object], remove_leftovers: bool = False) -> None:
    """Write ``path`` whole or not at all: ``write`` fills a temporary file in the same folder, which is
    flushed to disk and renamed over ``path``.

    ``remove_leftovers``: afterwards, delete the temporary files of earlier writes of ``path`` that a kill
    interrupted. Only for a file one process writes: where processes write the same file at once, one
    would delete another's temporary file before its rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name of its own, so that processes writing the same target never share a temporary file.
    temporary = path.parent / f"{_temporary_prefix(path)}{secrets.token_hex(8)}{TEMPORARY_SUFFIX}"
    # Not mkstemp: its files are private (0600); this one gets the umask's mode, as a plain open would.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    if remove_leftovers:
        for stale in path.parent.glob(f"{_temporary_prefix(path)}*{TEMPORARY_SUFFIX}"):
            stale.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str, remove_leftovers: bool = False) -> None:
    """:func:`write_atomically` of ``text`` in UTF-8 (line endings as given)."""
    data = text.encode("utf-8")
    write_atomically(path, lambda file: file.write(data), remove_leftovers)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder's entry), where the platform allows opening folders."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
