"""Whether a command can write where it is going to, checked before it trains or evaluates anything.

A run writes its events, ``config.yaml`` and ``hparams.yaml`` at the start, but its first checkpoint
only when the first epoch (or ``every_n_train_steps``) ends: a read-only ``checkpoints/`` would
otherwise be found after the training it was meant to keep. :func:`check_writable` looks at each
folder, or the nearest part of its path that exists, and refuses with the folder's name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pat_seg.exceptions import ConfigurationError


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its closest existing parent (the folder a ``mkdir -p`` would write into)."""
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def check_writable(folders: Iterable[tuple[Path, str]]) -> None:
    """Refuse the first ``(folder, what it is for)`` the command could not create or write into.

    A folder is writable when it, or the nearest existing part of its path, is a folder this process
    may create files in (``os.access`` with write and search permission). A path whose nearest existing
    part is a file can never be created.
    """
    for folder, purpose in folders:
        folder = folder.expanduser().absolute()
        existing = nearest_existing(folder)
        if not existing.is_dir():
            raise ConfigurationError(f"cannot write {purpose} to {folder}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "" if existing == folder else f" ({existing} is where it would be created)"
            raise ConfigurationError(f"cannot write {purpose} to {folder}: it is read-only{where}")
