"""The presence-corrected Eq. 4 of PATLoss (docs/losses.md) against the float64 reference, by hand."""

import math

import pytest
import torch

from pat_seg.losses import PATLoss
from pat_seg.losses.pat import presence_correction
from tests.pat_reference import reference_pat_and_grad

PRESENCE = [1.0, 0.9, 0.5, 0.12, 0.03, 0.0]  # the last class is in no training image


def hard_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Six classes, large logits, an image dominated by the rarest present class, ignored pixels."""
    generator = torch.Generator().manual_seed(seed)
    logits = 8 * torch.randn(3, 6, 10, 12, generator=generator)
    target = torch.randint(0, 5, (3, 10, 12), generator=generator)
    target[1] = 4
    target[1, :2, :3] = 0
    target[2, 3:6] = 255
    target[0, 0, :4] = 5
    return logits, target


def test_factors_by_hand() -> None:
    # pi = (1, 0.25, 0): alpha = 0.5 -> pi^-0.5 = (1, 2); Z = (1 + 0.5) / 1.25 = 1.2 -> a = (5/6, 5/3, 5/3).
    factors = presence_correction([1.0, 0.25, 0.0], 0.5)
    assert factors.tolist() == pytest.approx([5 / 6, 5 / 3, 5 / 3], rel=1e-15)
    # alpha = 1: a_l = sum(pi) / (K pi_l): every present class has the same expected total weight pi_l a_l.
    factors = presence_correction(PRESENCE, 1.0)
    present = [share for share in PRESENCE if share > 0]
    for share, factor in zip(PRESENCE, factors.tolist()):
        if share > 0:
            assert share * factor == pytest.approx(sum(present) / len(present), rel=1e-14)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_expected_total_weight_is_unchanged(alpha: float) -> None:
    factors = presence_correction(PRESENCE, alpha).tolist()
    assert math.fsum(share * factor for share, factor in zip(PRESENCE, factors)) == pytest.approx(
        sum(PRESENCE), rel=1e-14
    )


@pytest.mark.parametrize("alpha", [0.5, 1.0])
@pytest.mark.parametrize("confidence_weight", [True, False])
def test_value_and_gradient_match_the_float64_formula(alpha: float, confidence_weight: bool) -> None:
    logits, target = hard_batch()
    expected, expected_grad = reference_pat_and_grad(
        logits, target, presence_exponent=alpha, class_presence=PRESENCE, confidence_weight=confidence_weight
    )
    leaf = logits.clone().requires_grad_(True)
    loss = PATLoss(presence_exponent=alpha, class_presence=PRESENCE, confidence_weight=confidence_weight)
    value = loss(leaf, target)
    value.backward()
    assert float(value) == pytest.approx(expected, rel=1e-5)
    scale = expected_grad.abs().max()
    assert float((leaf.grad.double() - expected_grad).abs().max() / scale) <= 1e-5


def test_alpha_zero_is_pat() -> None:
    logits, target = hard_batch(1)
    plain = PATLoss()(logits, target)
    assert torch.equal(PATLoss(presence_exponent=0.0, class_presence=PRESENCE)(logits, target), plain)


def test_the_correction_changes_the_loss_when_asked() -> None:
    # A test that could not fail otherwise: the rare classes weigh more at alpha = 1 than in PAT.
    logits, target = hard_batch(2)
    assert not torch.allclose(
        PATLoss(presence_exponent=1.0, class_presence=PRESENCE)(logits, target), PATLoss()(logits, target)
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"presence_exponent": 1.5}, r"presence_exponent must be a number in \[0, 1\] .* got 1.5"),
        ({"presence_exponent": True}, "got True"),
        (
            {"presence_exponent": 0.5, "class_presence": [1.0, 1.2]},
            r"class_presence\[1\] must be a number in \[0, 1\] \(a share of training images\); got 1.2",
        ),
        ({"presence_exponent": 0.5, "class_presence": [0.0, 0.0]}, "no class with a share > 0"),
        ({"presence_exponent": 0.5, "normalization": "pixel"}, "normalization='pixel' switches off"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PATLoss(**kwargs)


def test_missing_presence_is_a_clear_error_before_any_kernel() -> None:
    logits, target = hard_batch()
    with pytest.raises(ValueError, match="needs class_presence"):
        PATLoss(presence_exponent=0.5)(logits, target)
    with pytest.raises(ValueError, match="6 classes"):
        PATLoss(presence_exponent=0.5, class_presence=[0.5, 0.5])(logits, target)
