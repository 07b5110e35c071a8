"""The embedded synthetic long-tailed data: deterministic, long-tailed, not solvable by colour alone."""

import pytest
import torch

from pat_seg.data import SyntheticLongTailDataModule
from pat_seg.metrics import SegmentationMetrics


@pytest.fixture(scope="module")
def datamodule():
    return SyntheticLongTailDataModule(num_train=256, num_val=64, num_test=16)


def test_same_seed_same_samples_and_splits_differ(datamodule):
    other = SyntheticLongTailDataModule(num_train=256, num_val=64)
    for split in ("train", "val"):
        a, b = datamodule.dataset(split)[7], other.dataset(split)[7]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(datamodule.dataset("train")[7]["image"], datamodule.dataset("val")[7]["image"])
    reseeded = SyntheticLongTailDataModule(seed=1).dataset("train")[7]
    assert not torch.equal(reseeded["target"], datamodule.dataset("train")[7]["target"])


def test_sample_format(datamodule):
    sample = datamodule.dataset("train")[0]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["target"].shape == (64, 64) and sample["target"].dtype == torch.long
    assert datamodule.num_classes == len(datamodule.class_names) == 9


def test_class_counts_are_training_pixel_counts(datamodule):
    expected = torch.zeros(datamodule.num_classes, dtype=torch.long)
    ignored = 0
    for i in range(len(datamodule.dataset("train"))):
        target = datamodule.dataset("train")[i]["target"]
        ignored += int((target == 255).sum())
        for c in range(datamodule.num_classes):
            expected[c] += int((target == c).sum())
    assert datamodule.class_counts == expected.tolist()
    assert ignored > 0  # some pixels carry ignore_index, as in real data sets
    assert sum(expected.tolist()) + ignored == 256 * 64 * 64


def test_long_tail_spans_three_orders_of_magnitude(datamodule):
    counts = datamodule.class_counts
    assert min(counts) > 0
    assert max(counts) / min(counts) >= 1000
    # A few stuff classes hold most pixels.
    top4 = sum(sorted(counts, reverse=True)[:4])
    assert top4 / sum(counts) > 0.9


def test_colour_alone_does_not_solve_the_task(datamodule):
    """A nearest-mean-colour pixel classifier fitted on the training split fails on the rare classes."""
    train = torch.stack([datamodule.dataset("train")[i]["image"] for i in range(256)])
    labels = torch.stack([datamodule.dataset("train")[i]["target"] for i in range(256)])
    colours = train.permute(0, 2, 3, 1).reshape(-1, 3)
    flat = labels.reshape(-1)
    means = torch.stack([colours[flat == c].mean(0) for c in range(datamodule.num_classes)])

    metrics = SegmentationMetrics(datamodule.num_classes, class_counts=datamodule.class_counts)
    for i in range(64):
        sample = datamodule.dataset("val")[i]
        pixels = sample["image"].permute(1, 2, 0).reshape(-1, 3)
        preds = torch.cdist(pixels, means).argmin(1).view(1, 64, 64)
        metrics.update(preds, sample["target"].unsqueeze(0))
    result = metrics.compute()
    assert result["miou_tail"] < 0.1
    assert result["miou"] < 0.3  # the trained default U-Net reaches ~0.7 (README)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_train"):
        SyntheticLongTailDataModule(num_train=0)
    with pytest.raises(ValueError, match="ignore_index 3"):
        SyntheticLongTailDataModule(ignore_index=3)
