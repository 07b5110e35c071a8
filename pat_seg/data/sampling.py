"""Samplers and a loader that make multi-process training reproducible, resumable and exact.

- :class:`EvaluationSampler`: each process gets every ``world_size``-th sample, no padding, so
  under DDP every validation/test sample is counted exactly once in the (summed) confusion matrix.
  Lightning's ``DistributedSampler`` would pad the split with repeated samples instead.
- :class:`ResumableShuffleSampler`: the training order is a function of ``(seed, epoch)`` only, split
  across processes like ``DistributedSampler``, and can start part-way into an epoch.
- :class:`ResumableDataLoader`: saves how many batches of the current epoch were consumed (Lightning
  stores it in the checkpoint via the ``state_dict``/``load_state_dict`` protocol), so a run resumed
  mid-epoch sees exactly the batches the uninterrupted run would have seen.

All three are ``DistributedSampler`` subclasses, so Lightning keeps them instead of injecting its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pat_seg.exceptions import ConfigurationError


class EvaluationSampler(DistributedSampler):
    """Strided, unpadded split of an evaluation set over ``num_replicas`` processes (no shuffling).

    Process ``r`` gets samples ``r, r + N, r + 2N, ...``; the union over processes is the split, with no
    sample repeated. Per-process batch counts may differ by one, which DDP tolerates in evaluation
    (no gradient synchronisation), but every process needs at least one sample.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        if len(dataset) < num_replicas:  # type: ignore[arg-type]
            raise ConfigurationError(
                f"an evaluation split of {len(dataset)} samples cannot feed {num_replicas} processes; "  # type: ignore[arg-type]
                "every process needs at least one sample (use fewer devices or a larger split)"
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.total_size = len(dataset)  # type: ignore[arg-type]
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class ResumableShuffleSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by ``seed + epoch``, padded to equal shares) that can skip the
    first samples of one epoch, which :meth:`resume` schedules when a checkpoint is restored."""

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, drop_last: bool = False
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self._resume_epoch: int | None = None
        self._resume_skip = 0
        self.skipped = 0  # samples the current (last started) iteration skipped

    def resume(self, epoch: int, num_samples: int) -> None:
        """Start ``epoch`` after its first ``num_samples`` samples (of this process); other epochs are whole."""
        if not 0 <= num_samples <= self.num_samples:
            raise ConfigurationError(f"cannot skip {num_samples} samples of an epoch of {self.num_samples}")
        self.set_epoch(epoch)
        self._resume_epoch, self._resume_skip = epoch, num_samples

    def pending_skip(self) -> int:
        """Samples the next iteration will skip (0 unless it is the resumed epoch)."""
        return self._resume_skip if self._resume_epoch == self.epoch else 0

    def __iter__(self) -> Iterator[int]:
        skip = self.skipped = self.pending_skip()
        self._resume_epoch, self._resume_skip = None, 0
        indices = list(super().__iter__())
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader):
    """A training ``DataLoader`` over a :class:`ResumableShuffleSampler` whose position inside the
    epoch is checkpointed (Lightning's stateful-loader protocol).

    ``__len__`` stays the full epoch length on purpose: Lightning counts the batches already done
    into the epoch progress and expects only the rest from the iterator.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableShuffleSampler) or self.batch_size is None:
            raise ConfigurationError("ResumableDataLoader needs a ResumableShuffleSampler and an integer batch_size")
        self._batches_done = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self._batches_done = self.sampler.pending_skip() // self.batch_size  # type: ignore[attr-defined]  # DataLoader types its sampler as Sampler; __init__ checked it is ours
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        started = False
        for batch in batches:
            if not started:
                # The sampler's own iteration starts with the first batch, possibly after the trainer
                # moved it to the next epoch (a resume from the end of an epoch): count what it skipped.
                self._batches_done = self.sampler.skipped // self.batch_size  # type: ignore[attr-defined]  # DataLoader types its sampler as Sampler; __init__ checked it is ours
                started = True
            self._batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": self._batches_done}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches"] * self.batch_size)  # type: ignore[attr-defined,operator]


def process_group(trainer: Any) -> tuple[int, int]:
    """``(num_replicas, rank)`` of the data-parallel group of ``trainer`` (``(1, 0)`` when single-process)."""
    kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
    if not kwargs:
        return 1, 0
    return int(kwargs["num_replicas"]), int(kwargs["rank"])
