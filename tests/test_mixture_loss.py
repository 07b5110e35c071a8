"""The PAT+CB floor mixture (docs/losses.md) against its formula in float64, step by step."""

import pytest
import torch

from pat_seg.losses import PATCBMixtureLoss
from tests.pat_reference import reference_pat
from tests.test_baseline_losses import COUNTS, IGNORE, make_batch, ref_cb_weights, ref_ce

DECAY = 0.9


def reference_terms(z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(PAT of Eq. 4-5 at T = 20, class-balanced CE), float64, differentiable in ``z``."""
    return reference_pat(z, target, ignore_index=IGNORE), ref_ce(z, target, ref_cb_weights())


def test_three_training_steps_and_an_evaluation_match_the_formula_by_hand() -> None:
    loss = PATCBMixtureLoss(class_counts=COUNTS, mix=0.3, decay=DECAY, ignore_index=IGNORE).train()
    history: list[tuple[float, float]] = []  # the terms' values at each training step
    for step in range(3):
        logits, target = make_batch(seed=step, dtype=torch.float32)
        leaf = logits.clone().requires_grad_(True)
        value = loss(leaf, target)
        value.backward()

        z = logits.double().requires_grad_(True)
        pat, cb = reference_terms(z, target)
        history.append((float(pat.detach()), float(cb.detach())))
        # Bias-corrected moving average over the steps so far: sum_k d^(t-k) (1-d) v_k / (1 - d^t).
        scales = [
            sum(DECAY ** (len(history) - 1 - k) * (1 - DECAY) * values[i] for k, values in enumerate(history))
            / (1 - DECAY ** len(history))
            for i in (0, 1)
        ]
        expected = 0.3 * pat / scales[0] + 0.7 * cb / scales[1]
        expected.backward()
        assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
        assert float((leaf.grad.double() - z.grad).abs().max() / z.grad.abs().max()) <= 1e-5
    assert history[0] != history[1] != history[2]  # the batches differ, so the averages were exercised

    # Evaluation uses the running means as they stand and does not move them.
    state = {name: tensor.clone() for name, tensor in loss.state_dict().items()}
    loss.eval()
    logits, target = make_batch(seed=7, dtype=torch.float32)
    pat, cb = reference_terms(logits.double(), target)
    value = loss(logits, target)
    assert float(value) == pytest.approx(0.3 * float(pat) / scales[0] + 0.7 * float(cb) / scales[1], rel=1e-5)
    assert all(torch.equal(state[name], tensor) for name, tensor in loss.state_dict().items())


def test_first_step_weighs_each_term_by_its_share_of_the_gradient() -> None:
    # At the first step each term is divided by itself: the value is 1 and each term's gradient is
    # scaled by 1 / its value, so the two carry mix and 1 - mix of the gradient's scale.
    logits, target = make_batch(seed=3, dtype=torch.float32)
    value = PATCBMixtureLoss(class_counts=COUNTS, ignore_index=IGNORE)(logits, target)
    assert float(value) == pytest.approx(1.0, rel=1e-6)


def test_running_means_are_saved_and_restored_for_an_exact_resume() -> None:
    first = PATCBMixtureLoss(class_counts=COUNTS, decay=DECAY, ignore_index=IGNORE)
    for step in range(2):
        first(*make_batch(seed=step, dtype=torch.float32))
    resumed = PATCBMixtureLoss(class_counts=COUNTS, decay=DECAY, ignore_index=IGNORE)
    resumed.load_state_dict(first.state_dict())
    logits, target = make_batch(seed=5, dtype=torch.float32)
    assert torch.equal(first(logits, target), resumed(logits, target))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mix": 1.5}, r"mix must be a number in \[0, 1\] .* got 1.5"),
        ({"decay": 1.0}, r"decay must be .* got 1.0"),
        ({"temperature": 0}, "temperature must be a finite number > 0"),
        ({"beta": 1.0}, r"beta must be a number in \[0, 1\) \(or None: 1 - 1/N\); got 1.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PATCBMixtureLoss(**kwargs)


def test_missing_counts_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="PATCBMixtureLoss needs class_counts"):
        PATCBMixtureLoss()(*make_batch(dtype=torch.float32))
