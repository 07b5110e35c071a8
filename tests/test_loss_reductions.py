"""``reduction``, ``ignore_index=None`` and any number of spatial dimensions, for every loss.

The eight of the paper's Table 3 and those beyond it (PAT's presence correction, the PAT+CB mixture).

Every value and gradient is checked against the float64 formulas of tests/loss_formulas.py (and PAT's
volume normalisation against the loop reference of tests/pat_reference.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_formulas import BEYOND_PAPER_NAMES, LOSS_NAMES, blv_noise_like, call_seeded, formula_loss, make_loss
from pat_reference import reference_pat

from pat_seg.losses import LDAMLoss, PATLoss, PixelLoss

IGNORE = 255
COUNTS = [5000.0, 1200.0, 300.0, 40.0, 0.0]  # class 4 never seen in training: clamped to 1
NUM_CLASSES = len(COUNTS)
SPATIAL_SHAPES = {"1d": (9,), "2d": (5, 6), "3d": (3, 4, 5)}
ALL_NAMES = LOSS_NAMES + BEYOND_PAPER_NAMES


def make_case(spatial: tuple[int, ...], ignore_index: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, NUM_CLASSES, *spatial, generator=g, dtype=torch.float64)
    target = torch.randint(0, NUM_CLASSES, (2, *spatial), generator=g)
    if ignore_index is not None:
        target[torch.rand(target.shape, generator=g) < 0.25] = ignore_index
    return logits, target


def value_and_gradient(
    loss: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor, seed_map: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and the gradient of ``(loss * seed_map).sum()`` (of the loss itself for a scalar)."""
    leaf = logits.detach().clone().requires_grad_(True)
    value = call_seeded(loss, leaf, target)
    (value if seed_map is None else (value * seed_map).sum()).backward()
    return value.detach(), leaf.grad


@pytest.mark.parametrize("ignore_index", [IGNORE, None], ids=["ignore255", "ignore-none"])
@pytest.mark.parametrize("spatial", list(SPATIAL_SHAPES), ids=list(SPATIAL_SHAPES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_reduction_shape_and_ignore_index_matches_the_float64_formula(name, reduction, spatial, ignore_index):
    logits, target = make_case(SPATIAL_SHAPES[spatial], ignore_index)
    loss = make_loss(name, COUNTS, reduction=reduction, ignore_index=ignore_index)
    seed_map = torch.rand(target.shape, dtype=torch.float64) if reduction == "none" else None
    value, gradient = value_and_gradient(loss, logits, target, seed_map)

    leaf = logits.clone().requires_grad_(True)
    expected = formula_loss(name, leaf, target, COUNTS, reduction, ignore_index, blv_noise=blv_noise_like(logits))
    (expected if seed_map is None else (expected * seed_map).sum()).backward()

    assert value.shape == (target.shape if reduction == "none" else ())
    torch.testing.assert_close(value, expected.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gradient, leaf.grad, rtol=1e-9, atol=1e-12)
    if reduction == "none" and ignore_index is not None:
        assert (value[target == ignore_index] == 0).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_sum_is_the_sum_of_the_per_pixel_terms_and_mean_is_the_default(name):
    logits, target = make_case((4, 5), IGNORE, seed=1)
    terms = call_seeded(make_loss(name, COUNTS, reduction="none"), logits, target)
    total = call_seeded(make_loss(name, COUNTS, reduction="sum"), logits, target)
    mean = call_seeded(make_loss(name, COUNTS, reduction="mean"), logits, target)
    default = call_seeded(make_loss(name, COUNTS), logits, target)
    torch.testing.assert_close(total, terms.sum(), rtol=1e-12, atol=0)
    valid = int((target != IGNORE).sum())
    # PAT's terms carry Eq. 4's 1 / (B S_i^l) (the mixture's both normalisations): they add up to the loss.
    torch.testing.assert_close(mean, total if name.startswith("pat") else total / valid, rtol=1e-12, atol=0)
    assert torch.equal(default, mean)


def test_pat_counts_a_class_over_the_whole_volume() -> None:
    # Class 1 fills 1 voxel of slice 0 and 3 of slice 1: in the volume S = 4, so each of its voxels
    # weighs 1/4. Taken as two images, slice 0's voxel alone would weigh 1 (times a different B).
    logits, _ = make_case((2, 3, 4), None, seed=2)
    target = torch.zeros(2, 2, 3, 4, dtype=torch.long)
    target[0, 0, 0, 0] = 1
    target[0, 1, 1, :3] = 1
    target[1, 0] = IGNORE
    volume = PATLoss()(logits, target)
    torch.testing.assert_close(volume, reference_pat(logits, target), rtol=1e-12, atol=0)
    terms = PATLoss(reduction="none")(logits, target)
    exact = formula_loss("pat", logits, target, COUNTS, "none")
    torch.testing.assert_close(terms, exact, rtol=1e-12, atol=0)
    slices = PATLoss()(logits.transpose(1, 2).reshape(4, NUM_CLASSES, 3, 4), target.reshape(4, 3, 4))
    assert abs(float(volume) - float(slices)) > 1e-3  # not the per-slice normalisation


def test_ignore_index_none_takes_every_pixel_and_rejects_255() -> None:
    logits, target = make_case((4, 4), None, seed=3)
    value = make_loss("ce", COUNTS, ignore_index=None)(logits, target)
    torch.testing.assert_close(value, F.cross_entropy(logits, target), rtol=1e-12, atol=0)
    target[0, 1, 2] = IGNORE
    for name in ALL_NAMES:
        with pytest.raises(
            ValueError,
            match=r"label 255 found in target; expected class indices in \[0, 4\] "
            r"\(ignore_index=None: every label must be a class\)",
        ):
            make_loss(name, COUNTS, ignore_index=None)(logits, target)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bad_reduction_and_ignore_index_are_named(name):
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none'; got 'avg'"):
        make_loss(name, COUNTS, reduction="avg")
    with pytest.raises(ValueError, match=r"ignore_index must be an integer label or None .*; got '255'"):
        make_loss(name, COUNTS, ignore_index="255")


def test_eval_mode_reductions_are_those_of_its_cross_entropy() -> None:
    # Outside training LDAM is cross-entropy on s * z; "none" gives its per-pixel terms.
    logits, target = make_case((3, 4, 2), IGNORE, seed=4)
    loss = LDAMLoss(COUNTS, scale=5.0, reduction="none").eval()
    expected = F.cross_entropy(5.0 * logits, target, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(loss(logits, target), expected, rtol=1e-12, atol=1e-15)


def test_every_loss_takes_reduction_and_ignore_index_none() -> None:
    import inspect

    from pat_seg.losses import BEYOND_PAPER_LOSSES, PAPER_LOSSES

    for loss_type in PAPER_LOSSES + BEYOND_PAPER_LOSSES:
        parameters = inspect.signature(loss_type.__init__).parameters
        assert parameters["reduction"].default == "mean", loss_type
        assert parameters["ignore_index"].annotation in ("int | None", int | None), loss_type
        assert issubclass(loss_type, PixelLoss)


def test_triton_refuses_volumes_and_per_pixel_terms_by_name() -> None:
    pytest.importorskip("triton")
    with pytest.raises(ValueError, match="reduction='none' needs implementation='eager'"):
        PATLoss(implementation="triton", reduction="none")
    volume = torch.zeros(1, 3, 2, 2, 2)
    with pytest.raises(
        ValueError, match=r"implementation='triton' takes images, logits \[B, L, H, W\]; got shape \[1, 3, 2, 2, 2\]"
    ):
        PATLoss(implementation="triton")(volume, torch.zeros(1, 2, 2, 2, dtype=torch.long))


def test_the_module_refuses_a_per_pixel_loss() -> None:
    from pat_seg.models import UNet
    from pat_seg.module import SegmentationModule

    with pytest.raises(ValueError, match=r"PATLoss\(reduction='none'\) returns a loss per pixel"):
        SegmentationModule(UNet(num_classes=3, base_channels=4), PATLoss(reduction="none"), num_classes=3)
