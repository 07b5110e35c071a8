"""Every loss in float32 against float64 of its own formula (tests/loss_formulas.py), on hard inputs.

Hard: 19 classes whose training pixel counts span 6,000x, logits ``3 * randn`` and ``10 * randn``,
LDAM at ``s = 20`` and ``s = 30``, ignored pixels, and one image dominated by the rarest class. The
bound (docs/losses.md, "float32 accuracy"): value relative error <= 1e-5 and gradient error <= 1e-5
of the largest gradient entry, in float32 and in float32 under bf16 autocast.

Run as a script, ``python tests/test_loss_accuracy.py`` prints the table of errors behind the bound.
"""

from __future__ import annotations

import pytest
import torch
from loss_formulas import BEYOND_PAPER_NAMES, LOSS_NAMES, blv_noise_like, call_seeded, formula_loss, make_loss

NUM_CLASSES = 19
SPAN = 6000.0
# Geometric from 10 million pixels (class 0) down to 1,667 (class 18): a 6,000x span.
COUNTS = [round(1e7 * SPAN ** (-c / (NUM_CLASSES - 1))) for c in range(NUM_CLASSES)]
RAREST = NUM_CLASSES - 1
IGNORE = 255
BOUND = 1e-5

# (loss, logit scale, LDAM's s): LDAM is measured at both of its scales, the others once per logit scale.
# The losses beyond the paper's eight are held to the same bound.
CASES = [
    (name, logit_scale, ldam_scale)
    for name in LOSS_NAMES + BEYOND_PAPER_NAMES
    for logit_scale in (3.0, 10.0)
    for ldam_scale in ((20.0, 30.0) if name == "ldam" else (20.0,))
]


def case_id(case: tuple[str, float, float]) -> str:
    name, logit_scale, ldam_scale = case
    return f"{name}-{logit_scale:g}randn" + (f"-s{ldam_scale:g}" if name == "ldam" else "")


def hard_batch(logit_scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three 12x16 images: labels drawn by (count)^0.5, 10% ignored, and image 2 mostly the rarest class."""
    g = torch.Generator().manual_seed(seed)
    logits = logit_scale * torch.randn(3, NUM_CLASSES, 12, 16, generator=g)
    prior = torch.tensor(COUNTS, dtype=torch.float64) ** 0.5
    target = torch.multinomial(prior, 3 * 12 * 16, replacement=True, generator=g).view(3, 12, 16)
    target[2][torch.rand(12, 16, generator=g) < 0.85] = RAREST
    target[torch.rand(target.shape, generator=g) < 0.1] = IGNORE
    return logits, target


def float32_errors(name: str, logit_scale: float, ldam_scale: float, autocast: bool) -> tuple[float, float]:
    """``(value relative error, max gradient error / max gradient)`` of the float32 loss against float64."""
    logits, target = hard_batch(logit_scale)
    loss = make_loss(name, COUNTS, ldam_scale=ldam_scale)
    leaf = logits.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        value = call_seeded(loss, leaf, target)
    value.backward()
    assert value.dtype == torch.float32
    exact_leaf = logits.double().requires_grad_()
    exact = formula_loss(name, exact_leaf, target, COUNTS, ldam_scale=ldam_scale, blv_noise=blv_noise_like(logits))
    exact.backward()
    value_error = float((value.detach().double() - exact.detach()).abs() / exact.detach().abs())
    gradient_error = float((leaf.grad.double() - exact_leaf.grad).abs().max() / exact_leaf.grad.abs().max())
    return value_error, gradient_error


def test_the_inputs_are_as_hard_as_promised() -> None:
    assert max(COUNTS) / min(COUNTS) == pytest.approx(SPAN, rel=1e-3)
    _, target = hard_batch(3.0)
    assert (target == IGNORE).any()
    assert float((target[2] == RAREST).double().mean()) > 0.7
    assert len(torch.unique(target[target != IGNORE])) >= 10  # head and tail classes alike


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_value_and_gradient_are_within_1e_5_of_float64(case: tuple[str, float, float], autocast: bool) -> None:
    value_error, gradient_error = float32_errors(*case, autocast=autocast)
    assert value_error <= BOUND, f"value relative error {value_error:.2e}"
    assert gradient_error <= BOUND, f"gradient error {gradient_error:.2e} of the largest gradient"


@pytest.mark.parametrize("name", LOSS_NAMES + BEYOND_PAPER_NAMES)
def test_bfloat16_logits_give_the_float64_value_of_their_rounded_values(name: str) -> None:
    # A network under bf16 autocast hands over bf16 logits; the loss upcasts them, so its value is
    # the formula's on the rounded logits to float32 precision (bf16 arithmetic would be off by 1e-2).
    logits, target = hard_batch(3.0)
    half = logits.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = call_seeded(make_loss(name, COUNTS), half, target)
    exact = formula_loss(name, half.double(), target, COUNTS, blv_noise=blv_noise_like(half))
    assert value.dtype == torch.float32
    assert float((value.double() - exact).abs() / exact.abs()) <= BOUND


if __name__ == "__main__":
    print("| loss | logits | float32 value | float32 gradient | bf16 autocast value | bf16 autocast gradient |")
    print("|---|---|---:|---:|---:|---:|")
    for case in CASES:
        plain = float32_errors(*case, autocast=False)
        mixed = float32_errors(*case, autocast=True)
        name, logit_scale, ldam_scale = case
        label = name + (f" (s={ldam_scale:g})" if name == "ldam" else "")
        print(
            f"| {label} | {logit_scale:g} randn | {plain[0]:.1e} | {plain[1]:.1e} | {mixed[0]:.1e} | {mixed[1]:.1e} |"
        )
