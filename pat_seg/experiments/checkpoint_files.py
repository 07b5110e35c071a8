"""Reading and writing checkpoint files: safely (no pickled code runs) and atomically (no torn files).

Reading: every checkpoint pat-seg or the Lightning trainer it drives opens is read with
``torch.load(weights_only=True)``, which builds tensors, numbers, strings and containers only; a
pickle that would call a function (``os.system``, ...) is refused before anything runs. Types beyond
those are allowed by name in :data:`CHECKPOINT_TYPES`: exactly the ones pat-seg's own checkpoints
hold (none today; tests/test_checkpoint_files.py fails when a run's checkpoint needs one more).

Writing: a checkpoint goes through :func:`pat_seg.atomic_files.write_atomically` (a temporary file
beside it, fsync, ``os.replace``), so a SIGKILL at any moment leaves either the old file or the new
one, never a truncated one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from pat_seg.atomic_files import write_atomically
from pat_seg.exceptions import ConfigurationError

# Globals a pat-seg checkpoint may hold beyond torch's weights-only defaults (tensors, numbers,
# strings, lists, tuples, dicts, OrderedDict). Add a type here only when pat-seg itself writes it.
CHECKPOINT_TYPES: tuple[Any, ...] = ()
CHECKPOINT_SUFFIX = ".ckpt"


class UnreadableCheckpointError(ConfigurationError):
    """A checkpoint file is missing, truncated, not a checkpoint, or would run code when unpickled."""


def checkpoint_globals() -> AbstractContextManager[Any]:
    """The allow-list of :data:`CHECKPOINT_TYPES` for a ``torch.load(weights_only=True)`` inside it
    (ours, or one Lightning makes), so every reader admits the same types and no others."""
    return torch.serialization.safe_globals(list(CHECKPOINT_TYPES))


def read_checkpoint(source: str | Path | IO[bytes]) -> dict[str, Any]:
    """The checkpoint at ``source``, read without running code (on the CPU; a file's tensors
    memory-mapped; a file object is read from its current position and left where it was).

    Raises :class:`UnreadableCheckpointError` naming the file and why, listing the other checkpoints
    in its folder.
    """
    if not isinstance(source, (str, Path)):
        start = source.tell()
        try:
            with checkpoint_globals():
                state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as error:  # as below; a stream has no folder to list
            raise UnreadableCheckpointError(f"cannot read checkpoint {source!r}: {error}".splitlines()[0]) from error
        finally:
            source.seek(start)
        return _a_checkpoint(state, repr(source))
    path = Path(source)
    if not path.is_file():
        raise UnreadableCheckpointError(f"checkpoint {path} does not exist{_others(path)}")
    try:
        with checkpoint_globals():
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors for a damaged file
        raise UnreadableCheckpointError(
            f"cannot read checkpoint {path}: {_why_unreadable(path, error)}{_others(path)}"
        ) from error
    return _a_checkpoint(state, str(path))


def _a_checkpoint(state: Any, where: str) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise UnreadableCheckpointError(f"{where} is not a Lightning checkpoint (a {type(state).__name__}, not a dict)")
    return state


def _why_unreadable(path: Path, error: Exception) -> str:
    """The globals a refused pickle names (read without running them), else the loader's first line."""
    try:
        unsafe = [
            name
            for name in torch.serialization.get_unsafe_globals_in_checkpoint(path)
            if name not in {f"{kind.__module__}.{kind.__qualname__}" for kind in CHECKPOINT_TYPES}
        ]
    except Exception:  # not even a readable archive: the loader's own words say what is wrong
        unsafe = []
    if unsafe:
        return (
            f"it would call or build {', '.join(unsafe[:4])} when loaded, which can run any code; pat-seg "
            f"loads only weights and plain values (torch.load(weights_only=True))"
        )
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def checkpoints_beside(path: Path) -> list[Path]:
    """The other ``*.ckpt`` files in ``path``'s folder, newest first."""
    folder = path.parent
    if not folder.is_dir():
        return []
    others = [other for other in folder.glob(f"*{CHECKPOINT_SUFFIX}") if other.name != path.name and other.is_file()]
    return sorted(others, key=lambda other: other.stat().st_mtime, reverse=True)


def _others(path: Path) -> str:
    others = checkpoints_beside(path)
    if not others:
        return ""
    listed = "\n".join(f"  {other}" for other in others[:8])
    return f"\nother checkpoints of this run (resume from one with --ckpt_path FILE):\n{listed}"


def write_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically (:func:`~pat_seg.atomic_files.write_atomically`); the
    temporary files of saves that a kill interrupted go too (only the trainer's rank 0 saves)."""
    write_atomically(Path(path), lambda file: torch.save(checkpoint, file), remove_leftovers=True)


class SafeCheckpointIO(TorchCheckpointIO):
    """The trainer's checkpoint reader and writer: :func:`read_checkpoint` and :func:`write_checkpoint`.

    ``opened``: a checkpoint the command has read already (path, contents); the trainer's load of
    that path is answered from memory, so a command opens each checkpoint file once.
    """

    def __init__(self, opened: tuple[Path, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self._opened = opened

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"storage_options are not supported by {type(self).__name__}; got {storage_options!r}")
        write_checkpoint(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Callable[..., Any] | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            raise ConfigurationError("pat-seg never loads a checkpoint with weights_only=False (it could run code)")
        if self._opened is not None and Path(path).resolve() == self._opened[0].resolve():
            state, self._opened = self._opened[1], None
            return state
        return read_checkpoint(path)
