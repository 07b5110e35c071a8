"""The training order survives a resume at any batch; evaluation splits are exact under DDP."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from pat_seg.data.sampling import EvaluationSampler, ResumableDataLoader, ResumableShuffleSampler

SAMPLES, BATCH, SEED = 16, 4, 3


class Indices(Dataset):
    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> int:
        return index


def epoch_order(epoch: int) -> list[int]:
    """The order of one epoch, as torch's shuffled DistributedSampler draws it: randperm seeded by seed + epoch."""
    generator = torch.Generator()
    generator.manual_seed(SEED + epoch)
    return torch.randperm(SAMPLES, generator=generator).tolist()


def loader() -> ResumableDataLoader:
    return ResumableDataLoader(Indices(), batch_size=BATCH, sampler=ResumableShuffleSampler(Indices(), seed=SEED))


def test_a_resume_mid_epoch_sees_the_rest_of_that_epoch() -> None:
    resumed = loader()
    resumed.load_state_dict({"epoch": 1, "batches": 2})
    resumed.sampler.set_epoch(1)  # type: ignore[attr-defined]
    batches = [batch.tolist() for batch in resumed]
    order = epoch_order(1)
    assert batches == [order[8:12], order[12:16]]
    assert resumed.state_dict() == {"epoch": 1, "batches": 4}


def test_a_resume_from_the_end_of_an_epoch_counts_the_next_epoch_from_zero() -> None:
    """The trainer may start the loader's iteration before it moves the sampler to the next epoch."""
    resumed = loader()
    resumed.load_state_dict({"epoch": 1, "batches": 4})  # saved after the last batch of epoch 1
    iterator = iter(resumed)
    resumed.sampler.set_epoch(2)  # type: ignore[attr-defined]
    assert next(iterator).tolist() == epoch_order(2)[:4]
    assert resumed.state_dict() == {"epoch": 2, "batches": 1}


def test_evaluation_samples_are_split_over_processes_without_repeats() -> None:
    for replicas in (1, 2, 3, 5):
        shares = [list(EvaluationSampler(Indices(), replicas, rank)) for rank in range(replicas)]
        assert sorted(index for share in shares for index in share) == list(range(SAMPLES))
        assert shares[0] == list(range(0, SAMPLES, replicas))
        assert [len(EvaluationSampler(Indices(), replicas, rank)) for rank in range(replicas)] == [
            len(s) for s in shares
        ]
