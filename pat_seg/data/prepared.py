"""Prepared splits: a split decoded, label-mapped and resized once, stored as memory-mapped arrays.

The paper's protocols resize deterministically and do not augment, so the arrays a loader worker
would compute on every epoch can be computed once (``pat-seg prepare``, :mod:`pat_seg.cli.prepare`) and
read back without decoding. A prepared split lives in
``<prepared_dir>/<DataModule>-<protocol hash>/<split>/``:

- ``chunk-NNNNN.images.npy``: ``[n, 3, H, W]`` images as the data module's stored resize
  (:meth:`DiskDataModule.stored_transform <pat_seg.data.disk.DiskDataModule.stored_transform>`)
  returns them (uint8; float32 for data sets whose files hold float images, NYUv2's npy tree): the
  same function a loader worker applies to the source files, so a loader yields the same bits either way;
- ``chunk-NNNNN.labels.npy``: ``[n, H, W]`` label maps in the data set's classes (uint8);
- ``manifest.json``: the protocol options that change the arrays, the source files (names relative
  to the data set's root, sizes, modification times), the SHA-256 of every chunk file and the split's
  class statistics (pixels per class and images containing each class) at the protocol size.

Plain ``.npy`` files were chosen over LitData by measurement (docs/datasets.md, "Prepared splits"):
they are random-access, so the package's samplers keep exact mid-epoch resume and DDP sharding.

A build writes into a hidden temporary folder that is renamed into place only when complete, so a
killed build is never read. Reading checks everything that could make a prepared split differ from
its sources: a mismatch is a :class:`PreparedSplitError` naming what differs.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pat_seg.atomic_files import write_text_atomically
from pat_seg.class_statistics import class_statistics
from pat_seg.data.io import DatasetLayoutError
from pat_seg.data.transforms import SegmentationTransform
from pat_seg.exceptions import ConfigurationError, RunFailure

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VERIFIED = "verified.json"  # sizes and mtimes of the chunk files whose checksums passed
CHUNK_BYTES = 256 * 2**20  # about 256 MiB per chunk file: few files, each small enough to hash quickly
TEMPORARY_PREFIX = ".building-"


class PreparedSplitError(DatasetLayoutError):
    """A prepared split that cannot be used: missing, built for another protocol or other source files,
    or corrupted (a chunk whose checksum fails)."""


# --- what identifies a prepared split -----------------------------------------------------------------
def protocol_hash(protocol: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``protocol`` as sorted JSON: the folder name's suffix."""
    return hashlib.sha256(json.dumps(protocol, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Keys of a split's protocol that differ between the splits of one protocol folder.
PER_SPLIT_KEYS = ("split", "stored_size", "augmented")


def split_folder(prepared_dir: Path, data_module: str, protocol: dict[str, Any], split: str) -> Path:
    """Where ``split`` of ``data_module`` under ``protocol`` is prepared: one folder per protocol
    (the options every split shares), one sub-folder per split."""
    shared = {key: value for key, value in protocol.items() if key not in PER_SPLIT_KEYS}
    return Path(prepared_dir) / f"{data_module}-{protocol_hash(shared)}" / split


def source_records(files: Sequence[Path], root: Path) -> list[list[Any]]:
    """``[name, size in bytes, mtime in ns]`` of every file; names relative to ``root`` when inside it."""
    records = []
    root = Path(root).resolve()
    for path in files:
        status = path.stat()
        resolved = path.resolve()
        name = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)
        records.append([name, status.st_size, status.st_mtime_ns])
    return records


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(16 * 2**20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SplitRequest:
    """What a data module asks of a prepared split: the protocol and the current source files."""

    data_module: str
    split: str
    protocol: dict[str, Any]
    sources: list[list[Any]]
    prepared_dir: Path

    @property
    def folder(self) -> Path:
        return split_folder(self.prepared_dir, self.data_module, self.protocol, self.split)


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [
        f"{key} {found.get(key)!r} (this run: {wanted.get(key)!r})"
        for key in sorted(set(found) | set(wanted))
        if found.get(key) != wanted.get(key)
    ]


def _source_difference(found: list[list[Any]], wanted: list[list[Any]]) -> str | None:
    if found == wanted:
        return None
    if len(found) != len(wanted):
        return f"it was built from {len(found)} source files, the data set has {len(wanted)} now"
    for old, new in zip(found, wanted):
        if old != new:
            what = "another file" if old[0] != new[0] else "a changed size or modification time"
            return f"source file {new[0]} is {what} than when it was prepared ({old[0]}, {old[1]} bytes)"
    return None  # pragma: no cover - unequal lists differ somewhere


def _nearest_mismatch(request: SplitRequest) -> str:
    """Why no prepared split matches: the options that differ from the closest one of the same data module."""
    others = sorted(request.prepared_dir.glob(f"{request.data_module}-*/{request.split}/{MANIFEST}"))
    best: list[str] | None = None
    for path in others:
        try:
            differences = _differences(json.loads(path.read_text())["protocol"], request.protocol)
        except (OSError, ValueError, KeyError):
            continue
        if best is None or len(differences) < len(best):
            best = differences
    if best:
        return (
            f"no prepared {request.split!r} split matches this protocol; the closest "
            f"(under {request.prepared_dir}) differs in " + ", ".join(best)
        )
    return f"no prepared {request.split!r} split of {request.data_module} under {request.prepared_dir}"


# --- checks when reading ---------------------------------------------------------------------------------
def _verified_chunks(folder: Path) -> dict[str, list[int]]:
    try:
        return json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}


def verify_chunks(folder: Path, manifest: dict[str, Any]) -> None:
    """SHA-256 of every chunk file against the manifest; :class:`PreparedSplitError` naming a failing one.

    A file whose size and modification time were recorded after a passing check (``verified.json``,
    written when the folder is writable) is not hashed again, so a multi-gigabyte split is hashed
    once, not on every run; rewriting a chunk changes its modification time and brings the check back.
    """
    verified = _verified_chunks(folder)
    passed = dict(verified)
    for chunk in manifest["chunks"]:
        for kind in ("images", "labels"):
            path = folder / chunk[kind]
            try:
                status = path.stat()
            except OSError as error:
                raise PreparedSplitError(
                    f"prepared chunk {path} is missing ({error}); run `pat-seg prepare` again"
                ) from error
            stamp = [status.st_size, status.st_mtime_ns]
            if verified.get(chunk[kind]) == stamp:
                continue
            if file_sha256(path) != chunk["sha256"][kind]:
                raise PreparedSplitError(
                    f"prepared chunk {path} fails its SHA-256 checksum (corrupted or changed since it was "
                    f"written); delete {folder} and run `pat-seg prepare` again"
                )
            passed[chunk[kind]] = stamp
    if passed != verified:
        try:  # atomic, as DDP processes may check the same split at once
            write_text_atomically(folder / VERIFIED, json.dumps(passed))
        except OSError:  # a read-only prepared folder is hashed on every run instead
            pass


def open_manifest(request: SplitRequest) -> dict[str, Any]:
    """The manifest of the prepared split ``request`` asks for, after every check; else :class:`PreparedSplitError`."""
    folder = request.folder
    path = folder / MANIFEST
    if not path.is_file():
        raise PreparedSplitError(_nearest_mismatch(request))
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PreparedSplitError(f"cannot read {path}: {error}; run `pat-seg prepare` again") from error
    if manifest.get("format") != FORMAT_VERSION:
        raise PreparedSplitError(
            f"{folder} has format {manifest.get('format')!r}; this pat-seg reads format "
            f"{FORMAT_VERSION}; run `pat-seg prepare` again"
        )
    differences = _differences(manifest["protocol"], request.protocol)
    if differences:  # a hash collision or a hand-copied folder
        raise PreparedSplitError(f"{folder} was prepared for another protocol: " + ", ".join(differences))
    changed = _source_difference(manifest["sources"], request.sources)
    if changed:
        raise PreparedSplitError(f"the prepared {request.split!r} split in {folder} is stale: {changed}")
    verify_chunks(folder, manifest)
    return manifest


# --- reading -----------------------------------------------------------------------------------------------
class PreparedArrays:
    """Sample ``i`` of a prepared split as ``(image [3, H, W], label [H, W])`` tensors over the
    memory-mapped rows. Chunk files are mapped lazily in each process: maps do not survive pickling
    into loader workers, and a worker maps only the chunks its samples are in."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.chunks = [(c["images"], c["labels"]) for c in manifest["chunks"]]
        self.starts = [c["first"] for c in manifest["chunks"]]
        self.count = int(manifest["count"])
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        chunk = bisect.bisect_right(self.starts, index) - 1
        if chunk not in self._maps:
            images, labels = self.chunks[chunk]
            # Copy-on-write maps: tensors can share their pages without a copy (the batch collation
            # copies them once, into the loader's shared memory), and a write never reaches the file.
            self._maps[chunk] = (
                np.load(self.folder / images, mmap_mode="c"),
                np.load(self.folder / labels, mmap_mode="c"),
            )
        images, labels = self._maps[chunk]
        row = index - self.starts[chunk]
        return torch.from_numpy(images[row]), torch.from_numpy(labels[row])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}


# --- writing ------------------------------------------------------------------------------------------------
@dataclass
class BuildPlan:
    """One split to build: how to read sample ``i`` and where its arrays go."""

    load: Callable[[int], tuple[Any, Any]]  # sample i as the data set's files hold it: (image, label)
    count: int
    stored: SegmentationTransform  # deterministic resize to the stored size
    statistics_size: tuple[int, int]  # class statistics at the protocol size
    num_classes: int
    ignore_index: int


def _resized(plan: BuildPlan, index: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(stored image, stored label, label at the statistics size)`` of sample ``index``."""
    image, label = plan.load(index)
    pixels, mask = plan.stored.resized(image, label)
    if tuple(mask.shape[-2:]) == plan.statistics_size:
        at_protocol = mask
    else:  # an augmented split is stored larger than the protocol size; statistics are at the protocol size
        at_protocol = plan.stored.resized_label(label, plan.statistics_size)
    return pixels, mask, at_protocol


_PLAN: BuildPlan | None = None
_TARGETS: list[tuple[Path, Path, int, int]] = []


def _start_worker(plan: BuildPlan, targets: list[tuple[Path, Path, int, int]]) -> None:
    global _PLAN, _TARGETS
    torch.set_num_threads(1)  # one process per core
    _PLAN, _TARGETS = plan, targets


def _write_range(bounds: tuple[int, int]) -> tuple[int, np.ndarray, np.ndarray]:
    """Resize samples ``[first, end)`` into their chunk files; ``(count, pixels, presence)`` of them."""
    assert _PLAN is not None
    first, end = bounds
    pixels_total = np.zeros(_PLAN.num_classes, dtype=np.int64)
    presence_total = np.zeros(_PLAN.num_classes, dtype=np.int64)
    opened: dict[int, tuple[np.memmap, np.memmap]] = {}
    for index in range(first, end):
        chunk = next(k for k, (_, _, start, count) in enumerate(_TARGETS) if start <= index < start + count)
        if chunk not in opened:
            images_path, labels_path, _, _ = _TARGETS[chunk]
            opened[chunk] = (np.load(images_path, mmap_mode="r+"), np.load(labels_path, mmap_mode="r+"))
        image, label, at_protocol = _resized(_PLAN, index)
        row = index - _TARGETS[chunk][2]
        opened[chunk][0][row] = image.numpy()
        opened[chunk][1][row] = label.numpy()
        try:
            counted = class_statistics([at_protocol], _PLAN.num_classes, _PLAN.ignore_index)
        except ValueError as error:  # "label 37 found in label map 0; ..." of this one sample
            raise ConfigurationError(f"training sample {index}: {error}") from None
        pixels_total += np.asarray(counted.pixels)
        presence_total += np.asarray(counted.images)
    for images, labels in opened.values():
        images.flush()
        labels.flush()
    return end - first, pixels_total, presence_total


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "localhost"


def _remove_stale_builds(parent: Path, split: str) -> None:
    """Temporary folders of builds of ``split`` whose process is gone (killed midway), or that were
    being replaced. A build of another host (a shared filesystem) is left alone: its process cannot be checked."""
    for folder in parent.glob(f"{TEMPORARY_PREFIX}{split}-*"):
        parts = folder.name[len(f"{TEMPORARY_PREFIX}{split}-") :].split("-")
        if parts[0] == "replaced":
            shutil.rmtree(folder, ignore_errors=True)
            continue
        if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit() or int(parts[1]) == os.getpid():
            continue
        try:
            os.kill(int(parts[1]), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # it exists (another user's): not ours to remove
            pass


def build_split(
    request: SplitRequest,
    plan: BuildPlan,
    class_names: list[str],
    workers: int,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write the prepared split ``request`` with ``workers`` processes; its folder once complete.

    The arrays go to ``<folder>/../.building-<split>-<host>-<pid>-<id>/`` first; the manifest is written
    last and the folder renamed into place, so a reader never sees a partial split. ``progress`` is
    called with the number of samples finished since its last call.
    """
    if plan.count < 1:
        raise DatasetLayoutError(f"the {request.split!r} split of {request.data_module} is empty")
    final = request.folder
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(parent, request.split)
    temporary = parent / f"{TEMPORARY_PREFIX}{request.split}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    start_time = time.perf_counter()
    try:
        image, label, _ = _resized(plan, 0)  # shapes and dtypes of every sample
        per_sample = image.numel() * image.element_size() + label.numel() * label.element_size()
        chunk_size = max(1, CHUNK_BYTES // per_sample)
        targets = []
        for number, start in enumerate(range(0, plan.count, chunk_size)):
            count = min(chunk_size, plan.count - start)
            images_path = temporary / f"chunk-{number:05d}.images.npy"
            labels_path = temporary / f"chunk-{number:05d}.labels.npy"
            np.lib.format.open_memmap(images_path, "w+", image.numpy().dtype, (count, *image.shape))
            np.lib.format.open_memmap(labels_path, "w+", label.numpy().dtype, (count, *label.shape))
            targets.append((images_path, labels_path, start, count))
        what = f"the {request.split!r} split of {request.data_module}"
        pixels, presence = _run(plan, targets, workers, progress, what)
        checksums = [{kind: file_sha256(path) for kind, path in (("images", t[0]), ("labels", t[1]))} for t in targets]
        manifest = {
            "format": FORMAT_VERSION,
            "data_module": request.data_module,
            "split": request.split,
            "protocol": request.protocol,
            "count": plan.count,
            "image": {"shape": list(image.shape), "dtype": str(image.numpy().dtype)},
            "label": {"shape": list(label.shape), "dtype": str(label.numpy().dtype)},
            "chunks": [
                {"images": t[0].name, "labels": t[1].name, "first": t[2], "count": t[3], "sha256": c}
                for t, c in zip(targets, checksums)
            ],
            "sources": request.sources,
            "class_statistics": {
                "size": list(plan.statistics_size),
                "class_names": list(class_names),
                "pixels": pixels.tolist(),
                "images_containing": presence.tolist(),
            },
            "built": {
                "seconds": round(time.perf_counter() - start_time, 3),
                "workers": workers,
                "cpu_count": os.cpu_count(),
            },
        }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if final.exists():  # an older or stale build of the same protocol: replaced whole
            old = parent / f"{TEMPORARY_PREFIX}{request.split}-replaced-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        temporary.rename(final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def _run(
    plan: BuildPlan,
    targets: list[tuple[Path, Path, int, int]],
    workers: int,
    progress: Callable[[int], None] | None,
    what: str = "the split",
) -> tuple[np.ndarray, np.ndarray]:
    """Fill every target with ``workers`` processes (this one when 1); summed class statistics.

    A worker's error (an unreadable file) is raised here as it is. A worker that dies (killed by the
    system, or crashed in native code) is a :class:`RunFailure` naming ``what`` was being prepared:
    the pool notices the death, where a ``multiprocessing.Pool`` would wait for its results forever.
    """
    step = max(1, min(16, plan.count // max(1, 4 * workers)))  # small tasks: an even load and a live progress bar
    ranges = [(i, min(i + step, plan.count)) for i in range(0, plan.count, step)]
    pixels = np.zeros(plan.num_classes, dtype=np.int64)
    presence = np.zeros(plan.num_classes, dtype=np.int64)

    def add(count: int, chunk_pixels: np.ndarray, chunk_presence: np.ndarray) -> None:
        pixels[:] += chunk_pixels
        presence[:] += chunk_presence
        if progress is not None:
            progress(count)

    if workers <= 1:
        _start_worker(plan, targets)
        for result in map(_write_range, ranges):
            add(*result)
        return pixels, presence
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=_start_worker, initargs=(plan, targets)
    )
    done = 0
    try:
        for future in as_completed([pool.submit(_write_range, bounds) for bounds in ranges]):
            result = future.result()
            done += result[0]
            add(*result)
    except BrokenProcessPool as error:
        raise RunFailure(
            f"a worker process died while preparing {what}, after {done} of {plan.count} samples (killed by "
            "the system, e.g. out of memory, or crashed in native code); nothing was written"
        ) from error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error: the samples in progress end, no new ones start
    return pixels, presence
