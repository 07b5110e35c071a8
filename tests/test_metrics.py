"""Confusion-matrix metrics against hand computations (pat_seg/metrics.py, paper Table 3)."""

import math

import pytest
import torch

from pat_seg.metrics import SegmentationMetrics, tail_classes


def test_hand_computed_confusion_matrix():
    # 4 classes; class 3 occurs nowhere (left out of mIoU), pixel 255 ignored.
    target = torch.tensor([[[0, 0, 1, 1, 2, 255]]])
    preds = torch.tensor([[[0, 1, 1, 1, 0, 3]]])
    metrics = SegmentationMetrics(num_classes=4, class_names=["a", "b", "c", "d"], class_counts=[100, 50, 5, 1])
    metrics.update(preds, target)
    result = metrics.compute()
    # class 0: TP 1, FP 1 (pixel 4), FN 1 (pixel 1) -> 1/3; class 1: TP 2, FP 1, FN 0 -> 2/3;
    # class 2: TP 0, FN 1 -> 0; class 3: nothing (the ignored pixel's prediction does not count).
    assert result["iou/a"].item() == pytest.approx(1 / 3)
    assert result["iou/b"].item() == pytest.approx(2 / 3)
    assert result["iou/c"].item() == 0.0
    assert math.isnan(result["iou/d"].item())
    assert result["miou"].item() == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert result["pixel_accuracy"].item() == pytest.approx(3 / 5)
    dice = [2 * 1 / (2 + 1 + 1), 2 * 2 / (4 + 1), 0.0]
    assert result["mean_dice"].item() == pytest.approx(sum(dice) / 3)
    assert result["dice_error"].item() == pytest.approx(1 - sum(dice) / 3)
    # Tail = rarest third of 4 classes, rounded up = 2 classes (c, d); d has no IoU -> tail is c alone.
    assert result["miou_tail"].item() == 0.0
    assert result["miou_head"].item() == pytest.approx(0.5)


def test_accumulates_over_batches_not_averaged_per_batch():
    metrics = SegmentationMetrics(num_classes=2)
    # Batch 1: 1 pixel of class 1 correct. Batch 2: 9 pixels of class 1, all predicted 0.
    metrics.update(torch.tensor([[[1]]]), torch.tensor([[[1]]]))
    metrics.update(torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(1, 3, 3, dtype=torch.long))
    result = metrics.compute()
    assert result["iou/1"].item() == pytest.approx(1 / 10)  # per-batch averaging would give 0.5
    assert result["pixel_accuracy"].item() == pytest.approx(1 / 10)


def test_tail_classes():
    assert tail_classes([10, 1, 5, 100, 2, 50]) == [1, 4]
    assert tail_classes([3, 2, 1]) == [2]
    with pytest.raises(ValueError, match="class counts"):
        SegmentationMetrics(num_classes=3, class_counts=[1, 2])


def test_means_are_nan_when_no_class_is_present():
    # Only ignored pixels: every per-class IoU/Dice is NaN, so the means over present classes have
    # nothing to average and are NaN (not 0, which would read as a real score).
    metrics = SegmentationMetrics(num_classes=3, class_counts=[100, 10, 1])
    metrics.update(torch.tensor([[[0, 1]]]), torch.tensor([[[255, 255]]]))
    result = metrics.compute()
    for key in ("miou", "mean_dice", "dice_error", "miou_head", "miou_tail"):
        assert math.isnan(result[key].item()), key
    # Tail (class 2) absent, head present: the tail mean alone is NaN.
    metrics.reset()
    metrics.update(torch.tensor([[[0, 1, 1]]]), torch.tensor([[[0, 1, 0]]]))
    result = metrics.compute()
    assert math.isnan(result["miou_tail"].item())
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 1, FP 1 -> 1/2.
    assert result["miou_head"].item() == pytest.approx(0.5)
