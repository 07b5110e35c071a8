"""PATLoss against the float64 reference of paper Eq. 4-5 (tests/pat_reference.py) and hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from pat_reference import reference_pat

from pat_seg.losses import CrossEntropyLoss, PATLoss


def random_case(seed, batch=3, num_classes=5, height=6, width=7, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(batch, num_classes, height, width, generator=g, dtype=torch.float64)
    # Labels drawn from a subset of the classes so that some classes are absent from some images.
    target = torch.randint(0, num_classes - 1, (batch, height, width), generator=g)
    target[torch.rand(batch, height, width, generator=g) < 0.2] = 255  # ignored pixels
    target[-1] = 255  # an all-ignored image: contributes 0, still counts in B
    return logits, target


@pytest.mark.parametrize("temperature", [0.5, 5.0, 20.0, 50.0])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("class_reduction", ["sum", "mean"])
def test_value_matches_float64_reference(temperature, epsilon, class_reduction):
    logits, target = random_case(seed=int(temperature * 10 + epsilon * 100))
    loss = PATLoss(temperature=temperature, epsilon=epsilon, class_reduction=class_reduction)
    expected = reference_pat(logits, target, temperature, epsilon, class_reduction=class_reduction)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-10)
    # float32 input gives the same value to float32 precision.
    assert loss(logits.float(), target).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("temperature,epsilon", [(1.0, 0.0), (20.0, 0.2), (5.0, -0.3)])
@pytest.mark.parametrize("class_reduction", ["sum", "mean"])
def test_gradcheck_float64(temperature, epsilon, class_reduction):
    # Only the undetached loss is a true gradient of its value; detach_weight is checked by hand below.
    logits, target = random_case(seed=3, batch=2, num_classes=4, height=3, width=4)
    logits.requires_grad_(True)
    loss = PATLoss(temperature=temperature, epsilon=epsilon, class_reduction=class_reduction)
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits,), eps=1e-6, atol=1e-7)


def test_gradient_matches_reference_autograd():
    logits, target = random_case(seed=11)
    ours = logits.clone().requires_grad_(True)
    ref = logits.clone().requires_grad_(True)
    PATLoss(temperature=2.0).forward(ours, target).backward()
    reference_pat(ref, target, 2.0, 0.0).backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-9, atol=1e-12)
    assert ours.grad[-1].abs().max() == 0  # the all-ignored image gets no gradient


def test_detach_weight_changes_gradient_not_value():
    logits, target = random_case(seed=5)
    grads, values = [], []
    for detach in (False, True):
        z = logits.clone().requires_grad_(True)
        value = PATLoss(temperature=1.0, detach_weight=detach)(z, target)
        value.backward()
        values.append(value.item())
        grads.append(z.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-12)
    assert (grads[0] - grads[1]).abs().max() > 1e-4

    # With beta constant, d/dz of beta*(-log p_t)/S is beta/S * (p - onehot): check that by hand.
    z = logits.clone().requires_grad_(True)
    PATLoss(temperature=1.0, detach_weight=True)(z, target).backward()
    expected = gradient_with_constant_weight(logits, target, lambda p_t: torch.exp(1 - p_t))
    torch.testing.assert_close(z.grad, expected, rtol=1e-9, atol=1e-12)


def gradient_with_constant_weight(logits, target, weight_of_p_t):
    """d/dz of (1/B) sum_i sum_j w_ij (-log p_t) / S_i^t with w held constant: w (p - onehot) / (B S)."""
    p = torch.softmax(logits, 1)
    expected = torch.zeros_like(logits)
    for i in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            mask = target[i] == c
            if mask.any():
                onehot = torch.zeros(logits.shape[1], dtype=torch.float64)
                onehot[c] = 1
                weight = weight_of_p_t(p[i, c][mask])
                expected[i][:, mask] = (p[i][:, mask] - onehot[:, None]) * weight / mask.sum() / logits.shape[0]
    return expected


def test_hand_computed_two_pixel_case():
    # One image, 2 classes, 3 pixels: two of class 0 (mask size 2), one of class 1 (mask size 1).
    logits = torch.tensor([[[[0.0, 2.0, 0.0]], [[0.0, 0.0, 1.0]]]])  # [1, 2, 1, 3]
    target = torch.tensor([[[0, 0, 1]]])
    p = [0.5, math.exp(2) / (math.exp(2) + 1), math.e / (math.e + 1)]
    T = 20.0
    terms = [math.exp((1 - q) / T) * -math.log(q) for q in p]
    expected = (terms[0] + terms[1]) / 2 + terms[2] / 1
    assert PATLoss(temperature=T)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_small_and_large_class_weigh_the_same():
    # Same per-pixel loss everywhere: a class of 1 pixel contributes as much as a class of 15.
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1
    per_pixel = math.exp((1 - 0.5) / 20) * math.log(2)
    assert PATLoss()(logits, target).item() == pytest.approx(2 * per_pixel, rel=1e-6)


def test_all_ignored_batch_is_zero_and_finite():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    for loss in (PATLoss(), CrossEntropyLoss()):
        value = loss(logits, target)
        assert value.item() == 0.0
        value.backward()
        assert torch.isfinite(logits.grad).all()


def test_custom_ignore_index():
    logits, target = random_case(seed=2)
    target[target == 255] = -1
    expected = reference_pat(logits, torch.where(target == -1, 255, target), 20.0, 0.0)
    assert PATLoss(ignore_index=-1)(logits, target).item() == pytest.approx(expected.item(), rel=1e-10)


def test_autocast_bfloat16_gives_float32_value():
    logits, target = random_case(seed=4)
    expected = reference_pat(logits, target, 20.0, 0.0).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = PATLoss()(logits.float(), target)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # bfloat16 logits themselves: the loss still computes in float32.
    value16 = PATLoss()(logits.bfloat16(), target)
    assert value16.dtype == torch.float32
    assert value16.item() == pytest.approx(
        reference_pat(logits.bfloat16().double(), target, 20.0, 0.0).item(), rel=1e-5
    )


def test_cross_entropy_matches_torch():
    logits, target = random_case(seed=8)
    target[-1, 0, 0] = 1  # keep a valid pixel in the last image
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("loss", [PATLoss(), CrossEntropyLoss()], ids=["pat", "ce"])
def test_bad_label_raises_before_any_kernel(loss, monkeypatch):
    logits = torch.randn(2, 12, 5, 5)
    target = torch.zeros(2, 5, 5, dtype=torch.long)
    target[1, 2, 3] = 37

    def fail(*args, **kwargs):
        raise AssertionError("a kernel ran before the label check")

    monkeypatch.setattr(torch, "log_softmax", fail)
    monkeypatch.setattr(F, "cross_entropy", fail)
    with pytest.raises(ValueError, match=r"label 37 .*\[0, 11\].*ignore_index 255"):
        loss(logits, target)


@pytest.mark.parametrize(
    "logits_shape,target_shape,dtype,match",
    [
        ((2, 3, 4, 4), (2, 4, 5), torch.long, "target must have shape"),
        ((2,), (2,), torch.long, "logits must have shape"),
        ((2, 3, 4, 4, 4), (2, 4, 4), torch.long, "target must have shape"),
        ((2, 3, 4, 4), (2, 4, 4), torch.float32, "integer tensor"),
    ],
)
def test_bad_shapes_and_dtypes_raise(logits_shape, target_shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        PATLoss()(torch.randn(logits_shape), torch.zeros(target_shape, dtype=dtype))


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"temperature": -1.0}, {"epsilon": float("nan")}, {"class_reduction": "max"}]
)
def test_bad_options_raise(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PATLoss(**kwargs)


# --- the two ablation options: confidence_weight (Eq. 5 off) and normalization (Eq. 4 off) ------------
# Every valid combination; class_reduction="mean" exists only with Eq. 4's per-class sums.
COMBINATIONS = [
    (confidence_weight, normalization, class_reduction)
    for confidence_weight in (True, False)
    for normalization in ("image_class", "pixel")
    for class_reduction in (("sum", "mean") if normalization == "image_class" else ("sum",))
]


def combination_id(combination):
    confidence_weight, normalization, class_reduction = combination
    return f"{'beta' if confidence_weight else 'nobeta'}-{normalization}-{class_reduction}"


@pytest.mark.parametrize("combination", COMBINATIONS, ids=combination_id)
@pytest.mark.parametrize("detach_weight", [False, True])
def test_options_value_and_gradient_match_float64_reference(combination, detach_weight):
    confidence_weight, normalization, class_reduction = combination
    logits, target = random_case(seed=21)
    options = dict(
        temperature=2.0,
        epsilon=0.1,
        class_reduction=class_reduction,
        detach_weight=detach_weight,
        confidence_weight=confidence_weight,
        normalization=normalization,
    )
    ours = logits.clone().requires_grad_(True)
    ref = logits.clone().requires_grad_(True)
    value = PATLoss(**options)(ours, target)
    expected = reference_pat(ref, target, **options)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    value.backward()
    expected.backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-9, atol=1e-12)
    assert ours.grad[-1].abs().max() == 0  # the all-ignored image gets no gradient under either normalisation
    # float32 logits give the same value to float32 precision.
    assert PATLoss(**options)(logits.float(), target).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("combination", COMBINATIONS, ids=combination_id)
def test_options_gradcheck_float64(combination):
    confidence_weight, normalization, class_reduction = combination
    logits, target = random_case(seed=13, batch=2, num_classes=4, height=3, width=4)
    logits.requires_grad_(True)
    loss = PATLoss(
        temperature=1.5,
        epsilon=0.2,
        class_reduction=class_reduction,
        confidence_weight=confidence_weight,
        normalization=normalization,
    )
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "confidence_weight,normalization,expected",
    [
        # Worked out by hand for the three-pixel case of test_hand_computed_two_pixel_case:
        # -log p_t = ln 2, ln(1 + e^-2), ln(1 + e^-1) = 0.6931472, 0.1269280, 0.3132617;
        # beta = exp((1 - p_t)/20) = 1.0253151, 1.0059779, 1.0135379.
        (True, "image_class", 0.7366931),  # (b0 l0 + b1 l1)/2 + b2 l2  (Eq. 4-5)
        (False, "image_class", 0.7232993),  # (l0 + l1)/2 + l2            (Eq. 4, beta = 1)
        (True, "pixel", 0.3852946),  # (b0 l0 + b1 l1 + b2 l2)/3   (Eq. 5, pixel mean)
        (False, "pixel", 0.3777790),  # (l0 + l1 + l2)/3            (cross-entropy)
    ],
)
def test_options_hand_computed_three_pixel_case(confidence_weight, normalization, expected):
    logits = torch.tensor([[[[0.0, 2.0, 0.0]], [[0.0, 0.0, 1.0]]]])  # [1, 2, 1, 3]
    target = torch.tensor([[[0, 0, 1]]])
    loss = PATLoss(temperature=20.0, confidence_weight=confidence_weight, normalization=normalization)
    assert loss(logits, target).item() == pytest.approx(expected, abs=2e-7)


def test_both_options_off_is_cross_entropy():
    logits, target = random_case(seed=9)
    logits.requires_grad_(True)
    ablated = PATLoss(confidence_weight=False, normalization="pixel")(logits, target)
    (grad,) = torch.autograd.grad(ablated, logits)
    expected = F.cross_entropy(logits, target, ignore_index=255)  # the all-ignored image has no valid pixel
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert ablated.item() == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-14)


def test_pixel_normalization_weighs_classes_by_their_area():
    # The case of test_small_and_large_class_weigh_the_same: 1 pixel of class 1 among 16. Eq. 4 gives
    # both classes the same weight (2 x per-pixel term); the pixel mean gives each pixel 1/16.
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1
    per_pixel = math.exp((1 - 0.5) / 20) * math.log(2)
    assert PATLoss(normalization="pixel")(logits, target).item() == pytest.approx(per_pixel, rel=1e-6)
    assert PATLoss(normalization="pixel", confidence_weight=False)(logits, target).item() == pytest.approx(
        math.log(2), rel=1e-6
    )


def test_pixel_normalization_counts_valid_pixels_not_images():
    # Two images: one with 3 valid pixels, one all ignored. Eq. 4 divides by B = 2; the pixel mean by V = 3.
    logits = torch.zeros(2, 2, 1, 3, dtype=torch.float64)  # p_t = 1/2 everywhere
    target = torch.tensor([[[0, 0, 1]], [[255, 255, 255]]])
    log2 = math.log(2)
    assert PATLoss(confidence_weight=False, normalization="pixel")(logits, target).item() == pytest.approx(
        log2, rel=1e-12
    )
    assert PATLoss(confidence_weight=False)(logits, target).item() == pytest.approx((log2 + log2) / 2, rel=1e-12)
    everything_ignored = torch.full_like(target, 255)
    z = logits.clone().requires_grad_(True)
    value = PATLoss(normalization="pixel")(z, everything_ignored)
    value.backward()
    assert value.item() == 0.0 and not z.grad.any()


def test_confidence_weight_off_gradient_by_hand():
    # beta = 1: d/dz of -log p_t / (B S) is (p - onehot) / (B S); temperature and epsilon play no part.
    logits, target = random_case(seed=6)
    z = logits.clone().requires_grad_(True)
    PATLoss(temperature=0.3, epsilon=0.7, confidence_weight=False)(z, target).backward()
    expected = gradient_with_constant_weight(logits, target, torch.ones_like)
    torch.testing.assert_close(z.grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,named",
    [
        ({"confidence_weight": "false"}, "'false'"),
        ({"confidence_weight": 0}, "got 0"),
        ({"normalization": "image"}, "'image'"),
        ({"normalization": "pixel", "class_reduction": "mean"}, "class_reduction='mean'"),
        ({"temperature": float("inf")}, "inf"),
    ],
)
def test_bad_ablation_options_raise_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=next(iter(kwargs))) as error:
        PATLoss(**kwargs)
    assert named in str(error.value)


def test_options_through_the_cli_survive_a_saved_config(tmp_path, capsys):
    """The flags parse through LightningCLI, and the config it writes reads back to the same loss."""
    from pat_seg.cli import cli_main

    def printed_loss(args):
        with pytest.raises(SystemExit):
            cli_main(["fit", *args, "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    config = printed_loss(
        ["--model.loss.init_args.confidence_weight=false", "--model.loss.init_args.normalization=pixel"]
    )
    init_args = config["model"]["loss"]["init_args"]
    assert init_args["confidence_weight"] is False and init_args["normalization"] == "pixel"
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(config))
    again = printed_loss([f"--config={saved}"])["model"]["loss"]
    assert again == config["model"]["loss"]
    loss = PATLoss(**{k: v for k, v in again["init_args"].items() if k != "ignore_index"})
    assert loss.confidence_weight is False and loss.normalization == "pixel"
