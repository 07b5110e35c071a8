"""PATLoss(weight_normalization="batch_minmax"): Eq. 5's beta min-max normalised to [0, 1] per batch.

Checked against the float64 reference of tests/pat_reference.py, which forms ``(beta - min beta) /
(max beta - min beta)`` literally over the batch's valid pixels (the loss computes it another way,
with ``expm1``), and against hand computations.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from pat_reference import reference_pat
from test_pat_loss import random_case
from test_run_safety import pat_seg, short_error

from pat_seg.experiments.runs import display_labels
from pat_seg.losses import PATLoss
from pat_seg.losses.pat import batch_minmax_confidence_weight

MINMAX = {"weight_normalization": "batch_minmax"}
# Every normalisation of Eq. 4 it combines with; class_reduction="mean" exists only with Eq. 4's sums.
VARIANTS = [
    {"normalization": "image_class", "class_reduction": "sum"},
    {"normalization": "image_class", "class_reduction": "mean"},
    {"normalization": "pixel", "class_reduction": "sum"},
    {
        "normalization": "image_class",
        "class_reduction": "sum",
        "presence_exponent": 0.5,
        "class_presence": [0.9, 0.5, 0.3, 0.1, 0.05],
    },
]


def variant_id(variant: dict) -> str:
    return "-".join(f"{value}" for key, value in variant.items() if key != "class_presence")


REPO = Path(__file__).resolve().parents[1]


def direct_weights(p_t: torch.Tensor, valid: torch.Tensor, temperature: float, epsilon: float) -> torch.Tensor:
    """beta' of every valid pixel, float64, literally: Eq. 5's betas, then (beta - min) / (max - min)."""
    beta = torch.exp((1 - p_t[valid].double() - epsilon) / temperature)
    return (beta - beta.min()) / (beta.max() - beta.min())


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("detach_weight", [False, True])
@pytest.mark.parametrize("temperature,epsilon", [(20.0, 0.0), (1.0, 0.3), (0.05, 0.0)])
def test_value_and_gradient_match_the_float64_formula(variant, detach_weight, temperature, epsilon):
    # random_case: 20% of pixels ignored, and the last image entirely ignored.
    logits, target = random_case(seed=31)
    options = {**variant, **MINMAX, "temperature": temperature, "epsilon": epsilon, "detach_weight": detach_weight}
    ours = logits.clone().requires_grad_(True)
    reference = logits.clone().requires_grad_(True)
    value = PATLoss(**options)(ours, target)
    expected = reference_pat(reference, target, **options)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    value.backward()
    expected.backward()
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-8, atol=1e-12)
    assert not ours.grad[-1].any()  # the all-ignored image: no term, no gradient
    assert not ours.grad.permute(1, 0, 2, 3)[:, target == 255].any()  # nor any ignored pixel
    # float32 logits: the same value to float32 precision.
    assert PATLoss(**options)(logits.float(), target).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("variant", VARIANTS[:3], ids=variant_id)
def test_gradcheck_float64(variant):
    # Small T, so that beta' is far from linear in p_t; the min and the max move with the logits too.
    logits, target = random_case(seed=13, batch=2, num_classes=4, height=3, width=4)
    loss = PATLoss(temperature=0.7, epsilon=0.2, **variant, **MINMAX)
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits.requires_grad_(True),), eps=1e-6, atol=1e-7)


def test_weights_span_zero_to_one_and_match_the_formula_pixel_by_pixel():
    logits, target = random_case(seed=5)
    valid = target != 255
    p_t = torch.softmax(logits, 1).gather(1, target.clamp(0, 4).unsqueeze(1)).squeeze(1)
    weights = batch_minmax_confidence_weight(p_t, valid, temperature=20.0)
    expected = direct_weights(p_t, valid, temperature=20.0, epsilon=0.4)  # epsilon cancels
    torch.testing.assert_close(weights[valid], expected, rtol=1e-9, atol=1e-12)
    assert weights[valid].min() == 0.0 and weights[valid].max() == pytest.approx(1.0, abs=1e-12)
    # The most confident valid pixel weighs 0, the least confident 1.
    assert weights[valid][p_t[valid].argmax()] == 0.0
    assert weights[valid][p_t[valid].argmin()] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "normalization,expected",
    [
        # The three pixels of tests/test_pat_loss.py's hand-computed case, T = 20:
        # -log p_t = 0.6931472, 0.1269280, 0.3132617; beta = 1.0253151, 1.0059779, 1.0135379;
        # beta' = 1, 0, (1.0135379 - 1.0059779) / (1.0253151 - 1.0059779) = 0.3909540.
        ("image_class", 0.4690445),  # (1 * 0.6931472 + 0 * 0.1269280) / 2 + 0.3909540 * 0.3132617
        ("pixel", 0.2718727),  # (0.6931472 + 0 + 0.3909540 * 0.3132617) / 3
    ],
)
def test_hand_computed_three_pixel_case(normalization, expected):
    logits = torch.tensor([[[[0.0, 2.0, 0.0]], [[0.0, 0.0, 1.0]]]])  # [1, 2, 1, 3]
    target = torch.tensor([[[0, 0, 1]]])
    loss = PATLoss(temperature=20.0, normalization=normalization, **MINMAX)
    assert loss(logits, target).item() == pytest.approx(expected, abs=2e-7)
    terms = PATLoss(temperature=20.0, normalization=normalization, reduction="none", **MINMAX)(logits, target)
    assert terms[0, 0, 1].item() == 0.0  # the most confident pixel (p_t = 0.881) weighs 0


def test_equally_confident_pixels_weigh_one_and_the_loss_is_eq4s():
    # Zero logits: p_t = 1/2 at every pixel, so max beta = min beta. beta' = 1, the loss is Eq. 4 with
    # beta = 1: image 0 has classes 0 and 1 (each mean ln 2), image 1 is all ignored: (2 ln 2 + 0) / 2.
    logits = torch.zeros(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0, 0, 1], [1, 255, 0]], [[255] * 3] * 2])
    value = PATLoss(**MINMAX)(logits, target)
    assert value.item() == pytest.approx(math.log(2), rel=1e-12)
    (grad,) = torch.autograd.grad(value, logits)
    # beta' = 1 is a constant there: d/dz of -log p_t / (B S) is (p - onehot) / (B S) = (1/2 - [c = t]) / (2 S),
    # with S = 3 pixels of class 0 and 2 of class 1 in image 0.
    expected = torch.zeros_like(logits)
    size = {0: 3, 1: 2}
    for h, w in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)]:
        label = int(target[0, h, w])
        onehot = torch.tensor([label == 0, label == 1], dtype=torch.float64)
        expected[0, :, h, w] = (0.5 - onehot) / (2 * size[label])
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)


def test_the_gradient_through_the_max_lowers_the_most_confident_pixel():
    """Through beta' the loss rewards a lower batch maximum: with h the largest p_t, every pixel's
    beta' = (e^a - 1) / (e^b - 1) (a = (h - p_t) / T, b = (h - l) / T) grows with h, so dL/dh > 0 and a
    gradient step lowers the most confident pixel's p_t, although its own term weighs 0. Detached, that
    pixel weighs 0 and gets no gradient at all. (On CamVid the option's runs did not train;
    docs/camvid.md, "Exploratory arms".)"""
    target = torch.randint(0, 5, (2, 6, 7), generator=torch.Generator().manual_seed(0))
    start = torch.randn(2, 5, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for detach_weight in (False, True):
        logits = start.clone().requires_grad_()
        PATLoss(temperature=20.0, detach_weight=detach_weight, **MINMAX)(logits, target).backward()
        assert logits.grad is not None
        p_t = start.softmax(1).gather(1, target[:, None]).flatten()
        top = int(p_t.argmax())
        stepped = (start - 0.1 * logits.grad).softmax(1).gather(1, target[:, None]).flatten()
        if detach_weight:
            assert stepped[top] == p_t[top]  # beta' = 0: no gradient reaches it
        else:
            assert stepped[top] < p_t[top] - 1e-4
        assert (stepped > p_t).float().mean() > 0.9  # every other pixel is pushed up, as by Eq. 4


def test_one_valid_pixel_and_no_valid_pixel():
    logits = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    one = torch.full((2, 2, 2), 255)
    one[1, 0, 1] = 2  # max = min: beta' = 1, the loss is -log p_t / B
    z = logits.clone().requires_grad_(True)
    value = PATLoss(**MINMAX)(z, one)
    assert value.item() == pytest.approx(-torch.log_softmax(logits, 1)[1, 2, 0, 1].item() / 2, rel=1e-12)
    value.backward()
    assert torch.isfinite(z.grad).all() and z.grad[1, :, 0, 1].abs().sum() > 0
    for normalization in ("image_class", "pixel"):
        z = logits.clone().requires_grad_(True)
        value = PATLoss(normalization=normalization, **MINMAX)(z, torch.full((2, 2, 2), 255))
        value.backward()
        assert value.item() == 0.0 and not z.grad.any()  # 0, not NaN; no gradient


def test_small_temperature_does_not_overflow():
    # At T = 0.01 beta itself reaches e^100 > float32's largest number; beta' stays in [0, 1].
    logits, target = random_case(seed=3, scale=6.0)
    z = logits.float().requires_grad_(True)
    value = PATLoss(temperature=0.01, **MINMAX)(z, target)
    value.backward()
    expected = reference_pat(logits, target, temperature=0.01, **MINMAX)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
    assert torch.isfinite(z.grad).all()


def test_epsilon_cancels():
    logits, target = random_case(seed=8)
    values = [
        PATLoss(temperature=2.0, epsilon=epsilon, **MINMAX)(logits, target).item() for epsilon in (0.0, 0.7, -0.4)
    ]
    assert values == pytest.approx([values[0]] * 3, rel=1e-12)


def test_reduction_none_and_sum_and_check_labels():
    logits, target = random_case(seed=12)
    expected = reference_pat(logits, target, **MINMAX).item()
    terms = PATLoss(reduction="none", **MINMAX)(logits, target)
    assert terms.shape == target.shape and not terms[target == 255].any()
    assert terms.sum().item() == pytest.approx(expected, rel=1e-10)
    assert PATLoss(reduction="sum", **MINMAX)(logits, target).item() == pytest.approx(expected, rel=1e-10)
    assert PATLoss(**MINMAX)(logits, target, check_labels=False).item() == pytest.approx(expected, rel=1e-10)
    target[0, 0, 0] = 9  # a label outside [0, 5): refused before any min or max is taken
    with pytest.raises(ValueError, match="label 9"):
        PATLoss(**MINMAX)(logits, target)


def test_volumes_take_the_min_and_max_over_every_voxel():
    logits, target = random_case(seed=17, batch=2, num_classes=3, height=4, width=5)
    volumes = logits.view(2, 3, 2, 2, 5)  # [B, L, D, H, W]
    labels = target.view(2, 2, 2, 5)
    expected = reference_pat(volumes, labels, temperature=3.0, **MINMAX)
    assert PATLoss(temperature=3.0, **MINMAX)(volumes, labels).item() == pytest.approx(expected.item(), rel=1e-10)


def test_bf16_autocast_computes_in_float32():
    logits, target = random_case(seed=4)
    expected = reference_pat(logits, target, **MINMAX).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = PATLoss(**MINMAX)(logits.float(), target)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # bfloat16 logits themselves: upcast, then float32 math against the formula on the same rounded logits.
    rounded = logits.bfloat16()
    value16 = PATLoss(**MINMAX)(rounded, target)
    assert value16.dtype == torch.float32
    assert value16.item() == pytest.approx(reference_pat(rounded.double(), target, **MINMAX).item(), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,named",
    [
        ({"weight_normalization": "minmax"}, "'minmax'"),
        ({"weight_normalization": "batch_minmax", "confidence_weight": False}, "confidence_weight=False"),
        ({"weight_normalization": "batch_minmax", "implementation": "triton"}, "implementation='eager' or 'auto'"),
    ],
)
def test_bad_combinations_raise_naming_them(kwargs, named):
    with pytest.raises(ValueError, match="weight_normalization") as error:
        PATLoss(**kwargs)
    assert named in str(error.value)


def test_the_default_is_eq5_as_written():
    logits, target = random_case(seed=2)
    assert PATLoss().weight_normalization == "none"
    assert PATLoss()(logits, target).item() == pytest.approx(reference_pat(logits, target).item(), rel=1e-10)


def test_a_run_with_the_option_is_its_own_method_in_reports():
    labels = display_labels(
        [
            ("pat_seg.losses.PATLoss", {"temperature": 20.0}),  # saved before the option existed: the paper's PAT
            ("pat_seg.losses.PATLoss", {"temperature": 20.0, "weight_normalization": "none"}),
            ("pat_seg.losses.PATLoss", {"temperature": 20.0, "weight_normalization": "batch_minmax"}),
            (
                "pat_seg.losses.PATLoss",
                {"temperature": 20.0, "weight_normalization": "batch_minmax", "normalization": "pixel"},
            ),
        ],
        "loss",
    )
    assert sorted(set(labels.values())) == [
        "PAT (T=20)",
        "PAT beta min-max (T=20)",
        "PAT w/o Eq. 4, beta min-max (T=20)",
    ]


def test_the_config_piece_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A sweep names the piece as ``model.loss``; the flag resolves to the option, and a saved config reads back."""
    from pat_seg.cli import cli_main

    piece = REPO / "configs" / "loss" / "pat_beta_minmax.yaml"
    with pytest.raises(SystemExit):
        cli_main(
            ["fit", f"--config={REPO / 'configs' / 'synthetic_pat.yaml'}", f"--model.loss={piece}", "--print_config"]
        )
    loss = yaml.safe_load(capsys.readouterr().out)["model"]["loss"]
    assert loss["class_path"] == "pat_seg.losses.PATLoss"
    assert loss["init_args"]["weight_normalization"] == "batch_minmax" and loss["init_args"]["temperature"] == 20.0
    built = PATLoss(**{k: v for k, v in loss["init_args"].items() if k != "ignore_index"})
    assert built.weight_normalization == "batch_minmax" and built.confidence_weight


def test_console_refuses_the_option_without_beta_before_any_run(tmp_path: Path) -> None:
    result = pat_seg(
        "fit",
        "--config=configs/synthetic_pat.yaml",
        "--model.loss.init_args.weight_normalization=batch_minmax",
        "--model.loss.init_args.confidence_weight=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        cwd=REPO,
    )
    assert result.returncode == 2
    short_error(result, "weight_normalization='batch_minmax'", "confidence_weight=False")
    assert not (tmp_path / "runs").exists()
