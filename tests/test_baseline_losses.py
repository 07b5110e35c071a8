"""The baseline losses of paper Table 3 against float64 formulas written here from docs/losses.md."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pat_reference import reference_pat

from pat_seg.losses import (
    BalancedSoftmaxLoss,
    BLVLoss,
    ClassBalancedFocalLoss,
    ClassBalancedLoss,
    CrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    PATLoss,
)

IGNORE = 255
COUNTS = [5000.0, 1200.0, 300.0, 40.0, 0.0]  # class 4 never seen in training: clamped to 1
NUM_CLASSES = len(COUNTS)


def _load_benchmark_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "losses.py"
    spec = importlib.util.spec_from_file_location("pat_seg_benchmark_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_batch(shape=(2, NUM_CLASSES, 6, 7), dtype=torch.float64, seed=0, ignore_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(shape, generator=g)).to(dtype)
    batch, num_classes, height, width = shape
    target = torch.randint(0, num_classes, (batch, height, width), generator=g)
    target[torch.rand(target.shape, generator=g) < ignore_fraction] = IGNORE
    return logits, target


# --- float64 references, written from docs/losses.md (one-hot is fine here: tiny tensors) -------
def ref_log_softmax(z):
    shift = z.amax(1, keepdim=True)
    return z - shift - (z - shift).exp().sum(1, keepdim=True).log()


def ref_pixel_terms(z, target, term, class_weight=None):
    """Mean over valid pixels of ``w_t * term(log p_t)``, looping over pixels."""
    log_p = ref_log_softmax(z.double())
    total, valid = torch.zeros((), dtype=torch.float64), 0
    for b, i, j in torch.nonzero(target != IGNORE).tolist():
        t = int(target[b, i, j])
        w = 1.0 if class_weight is None else float(class_weight[t])
        total = total + w * term(log_p[b, t, i, j])
        valid += 1
    return total / max(valid, 1)


def ref_ce(z, target, class_weight=None):
    return ref_pixel_terms(z, target, lambda lp: -lp, class_weight)


def ref_focal(z, target, gamma, class_weight=None):
    return ref_pixel_terms(z, target, lambda lp: -((1 - lp.exp()) ** gamma) * lp, class_weight)


def ref_counts():
    return [max(c, 1.0) for c in COUNTS]


def ref_cb_weights(beta=None):
    counts = ref_counts()
    b = 1 - 1 / sum(counts) if beta is None else beta
    w = [(1 - b) / (1 - b**n) for n in counts]
    return [x * len(w) / sum(w) for x in w]


def ref_onehot(target, num_classes):
    return F.one_hot(target.clamp_max(num_classes - 1), num_classes).permute(0, 3, 1, 2).double()


def ref_ldam_logits(z, target, max_margin=0.5, scale=20.0):
    counts = torch.tensor(ref_counts(), dtype=torch.float64)
    constant = max_margin * counts.min() ** 0.25  # so that the rarest class gets max_margin
    margin = constant / counts**0.25
    onehot = ref_onehot(target, z.shape[1])
    return scale * (z.double() - margin.view(1, -1, 1, 1) * onehot)


def ref_blv_logits(z, noise, sigma):
    counts = torch.tensor(ref_counts(), dtype=torch.float64)
    f = math.log(counts.sum()) - counts.log()
    return z.double() + (sigma * noise.double()).clamp(-1, 1).abs() * (f / f.max()).view(1, -1, 1, 1)


def blv_noise_for(z, seed):
    """The standard normals BLV draws after ``manual_seed(seed)``: one ``randn`` per logit."""
    torch.manual_seed(seed)
    return torch.randn(z.shape, dtype=z.dtype)


def seeded(loss, seed=1234):
    """Call ``loss`` under a fixed global seed (BLV draws its noise from the global generator)."""

    def call(z, target):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return loss(z, target)

    return call


# (name, loss factory, reference(z, target)) for deterministic losses in training mode
DETERMINISTIC = [
    ("focal", lambda: FocalLoss(gamma=2.0), lambda z, t: ref_focal(z, t, 2.0)),
    (
        "focal_alpha_g0.5",
        lambda: FocalLoss(gamma=0.5, alpha=[0.1, 0.2, 0.3, 0.4, 2.0]),
        lambda z, t: ref_focal(z, t, 0.5, [0.1, 0.2, 0.3, 0.4, 2.0]),
    ),
    ("cb", lambda: ClassBalancedLoss(COUNTS), lambda z, t: ref_ce(z, t, ref_cb_weights())),
    ("cb_beta", lambda: ClassBalancedLoss(COUNTS, beta=0.99), lambda z, t: ref_ce(z, t, ref_cb_weights(0.99))),
    ("cbfocal", lambda: ClassBalancedFocalLoss(COUNTS, gamma=2.0), lambda z, t: ref_focal(z, t, 2.0, ref_cb_weights())),
    (
        "bms",
        lambda: BalancedSoftmaxLoss(COUNTS),
        lambda z, t: ref_ce(z + torch.tensor(ref_counts(), dtype=torch.float64).log().view(1, -1, 1, 1), t),
    ),
    ("ldam", lambda: LDAMLoss(COUNTS), lambda z, t: ref_ce(ref_ldam_logits(z, t), t)),
    (
        "ldam_m0.3_s5",
        lambda: LDAMLoss(COUNTS, max_margin=0.3, scale=5.0),
        lambda z, t: ref_ce(ref_ldam_logits(z, t, 0.3, 5.0), t),
    ),
    (
        "ldam_drw",
        lambda: LDAMLoss(COUNTS, drw_epoch=0),
        lambda z, t: ref_ce(ref_ldam_logits(z, t), t, ref_cb_weights()),
    ),
]


@pytest.mark.parametrize("name,make_loss,reference", DETERMINISTIC, ids=[d[0] for d in DETERMINISTIC])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_value_matches_float64_formula(name, make_loss, reference, dtype):
    logits, target = make_batch(dtype=dtype)
    value = make_loss().train()(logits, target)
    assert value.dtype == dtype
    tolerance = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(value.double(), reference(logits, target), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name,make_loss,reference", DETERMINISTIC, ids=[d[0] for d in DETERMINISTIC])
def test_gradcheck(name, make_loss, reference):
    logits, target = make_batch(shape=(2, NUM_CLASSES, 3, 3), seed=1)
    loss = make_loss().train()
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits.requires_grad_(),))


def test_blv_value_and_gradient_against_formula_with_the_same_noise():
    logits, target = make_batch(seed=2)
    loss = BLVLoss(COUNTS, sigma=0.7).train()
    with torch.random.fork_rng():
        expected = ref_ce(ref_blv_logits(logits, blv_noise_for(logits, 1234), 0.7), target)
    torch.testing.assert_close(seeded(loss)(logits, target), expected, rtol=1e-10, atol=1e-10)
    small, small_target = make_batch(shape=(1, NUM_CLASSES, 3, 3), seed=3)
    assert torch.autograd.gradcheck(lambda z: seeded(loss)(z, small_target), (small.requires_grad_(),))


def test_blv_sigma_zero_is_cross_entropy():
    logits, target = make_batch(dtype=torch.float32, seed=4)
    value = BLVLoss(COUNTS, sigma=0.0).train()(logits, target)
    torch.testing.assert_close(value, F.cross_entropy(logits, target, ignore_index=IGNORE), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_blv_noise_mean_shift_per_class(sigma):
    loss = BLVLoss(COUNTS, sigma=sigma).train()
    zeros = torch.zeros(4, NUM_CLASSES, 128, 128)
    torch.manual_seed(5)
    shift = loss.logit_variation(zeros)
    # E[min(|X|, 1)] for X ~ N(0, sigma): the truncated half-normal mean plus P(|X| >= 1).
    mean_abs = sigma * math.sqrt(2 / math.pi) * (1 - math.exp(-1 / (2 * sigma**2))) + math.erfc(
        1 / (sigma * math.sqrt(2))
    )
    counts = torch.tensor(ref_counts(), dtype=torch.float64)
    f = math.log(counts.sum()) - counts.log()
    expected = mean_abs * f / f.max()
    measured = shift.double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(measured, expected, rtol=0, atol=4e-3)  # ~6 standard errors of 65k draws
    assert float(shift.min()) >= 0 and float(shift.amax(dim=(0, 2, 3)).max()) <= 1.0 + 1e-6
    assert float(shift[:, 0].max()) < float(shift[:, NUM_CLASSES - 1].max())  # head varies less than tail
    # The distribution, not just the mean: P(min(|X|, 1) <= x) = erf(x / (sigma sqrt 2)) for x < 1.
    tail = shift[:, NUM_CLASSES - 1].double().flatten()  # f_c / max f = 1 for the rarest class
    for x in (0.05, 0.2, 0.5, 0.9):
        expected_cdf = math.erf(x / (sigma * math.sqrt(2)))
        assert abs(float((tail <= x).double().mean()) - expected_cdf) < 0.01, x


def test_class_balanced_default_beta_is_not_uniform_where_0_9999_is():
    counts = [2e7, 1e6, 5e5]  # pixel counts: b**n < 5e-22 for every class at b = 0.9999
    saturated = ClassBalancedLoss(counts, beta=0.9999).class_weight
    torch.testing.assert_close(saturated, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
    weights = ClassBalancedLoss(counts).class_weight
    total = sum(counts)
    b = 1 - 1 / total
    expected = torch.tensor([(1 - b) / (1 - b**n) for n in counts], dtype=torch.float64)
    expected = expected * 3 / expected.sum()
    torch.testing.assert_close(weights, expected, rtol=1e-9, atol=0)
    assert float(weights.max() / weights.min()) > 10


@pytest.mark.parametrize(
    "make_loss,eval_reference",
    [
        (lambda: BalancedSoftmaxLoss(COUNTS), lambda z, t: F.cross_entropy(z, t, ignore_index=IGNORE)),
        (lambda: BLVLoss(COUNTS, sigma=0.5), lambda z, t: F.cross_entropy(z, t, ignore_index=IGNORE)),
        (lambda: LDAMLoss(COUNTS, drw_epoch=0), lambda z, t: F.cross_entropy(20.0 * z, t, ignore_index=IGNORE)),
    ],
    ids=["bms", "blv", "ldam"],
)
def test_evaluation_uses_raw_logits(make_loss, eval_reference):
    logits, target = make_batch(seed=6)
    before = logits.clone()
    loss = make_loss()
    train_value = seeded(loss.train())(logits, target)
    eval_value = loss.eval()(logits, target)
    torch.testing.assert_close(eval_value, eval_reference(logits, target), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(train_value, eval_value)  # the adjustment is on in training
    torch.testing.assert_close(logits, before, rtol=0, atol=0)  # never modified in place


def test_ldam_deferred_reweighting_starts_at_drw_epoch():
    logits, target = make_batch(seed=7)
    loss = LDAMLoss(COUNTS, drw_epoch=2).train()
    adjusted = ref_ldam_logits(logits, target)
    for epoch, weights in [(0, None), (1, None), (2, ref_cb_weights()), (5, ref_cb_weights())]:
        loss.set_epoch(epoch)
        torch.testing.assert_close(loss(logits, target), ref_ce(adjusted, target, weights), rtol=1e-10, atol=1e-10)


def make_all_losses(counts=COUNTS):
    """Every loss of Table 3, with deferred re-weighting on for LDAM so that its weights are exercised."""
    return {
        "ce": CrossEntropyLoss(),
        "pat": PATLoss(),
        "focal": FocalLoss(),
        "cb": ClassBalancedLoss(counts),
        "cbfocal": ClassBalancedFocalLoss(counts),
        "bms": BalancedSoftmaxLoss(counts),
        "ldam": LDAMLoss(counts, drw_epoch=0),
        "blv": BLVLoss(counts),
    }


ALL_LOSSES = list(make_all_losses())


def blv_reference(z, t, sigma=0.5, seed=1234):
    """BLV's formula with the noise the loss draws under ``seeded``: the same generator, the same draws."""
    with torch.random.fork_rng():
        noise = blv_noise_for(z.float(), seed)
    return ref_ce(ref_blv_logits(z, noise, sigma), t)


# Float64 formula of every loss in training mode, for the precision tests below.
REFERENCES = {
    "ce": ref_ce,
    "pat": lambda z, t: reference_pat(z, t),
    "focal": lambda z, t: ref_focal(z, t, 2.0),
    "cb": lambda z, t: ref_ce(z, t, ref_cb_weights()),
    "cbfocal": lambda z, t: ref_focal(z, t, 2.0, ref_cb_weights()),
    "bms": lambda z, t: ref_ce(z + torch.tensor(ref_counts(), dtype=torch.float64).log().view(1, -1, 1, 1), t),
    "ldam": lambda z, t: ref_ce(ref_ldam_logits(z, t), t, ref_cb_weights()),
    "blv": blv_reference,
}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bfloat16_logits_are_computed_in_float32(name):
    # The loss of bf16 logits must equal the float64 formula on the same (rounded) values to float32
    # precision; bf16 arithmetic would be off by ~1e-2. Under autocast too, which must not downcast.
    logits, target = make_batch(shape=(2, NUM_CLASSES, 16, 16), dtype=torch.float32, seed=8)
    half = logits.bfloat16()
    expected = REFERENCES[name](half.double(), target)
    loss = seeded(make_all_losses()[name].train())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(half, target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bfloat16_autocast_forward_matches_the_float32_forward(name):
    # A network run under bf16 autocast hands the loss bf16 logits; the loss then agrees with the
    # float32 run up to the rounding of those logits (3 significant digits), not more.
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, NUM_CLASSES, 3, padding=1)
    image = torch.randn(2, 3, 16, 16)
    target = make_batch(shape=(2, NUM_CLASSES, 16, 16), seed=8)[1]
    loss = seeded(make_all_losses()[name].train())
    reference = loss(network(image), target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = network(image)
        mixed = loss(logits, target)
    assert logits.dtype == torch.bfloat16 and mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=2e-2, atol=0)


def one_hot_focal(logits, target):
    """A focal loss the way the authors wrote it (one-hot target): what the memory test must catch."""
    onehot = F.one_hot(target.clamp_max(logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2)
    log_p_t = (onehot * F.log_softmax(logits, 1)).sum(1)
    return (-((1 - log_p_t.exp()) ** 2) * log_p_t)[target != IGNORE].mean()


def track_forward_backward(loss, num_classes=8):
    logits, target = make_batch(shape=(2, num_classes, 64, 96), dtype=torch.float32, seed=9)
    logits.requires_grad_()
    with _load_benchmark_module().LiveTensorMemory() as tracker:
        loss(logits, target).backward()
    big_integer = [
        (op, dtype)
        for op, dtype, numel in tracker.allocations
        if numel >= logits.numel() and not (dtype.is_floating_point or dtype.is_complex)
    ]
    return tracker, big_integer, logits, target


def test_memory_check_catches_a_one_hot_loss():
    tracker, big_integer, logits, target = track_forward_backward(one_hot_focal)
    assert big_integer  # the int64 one-hot
    assert tracker.peak > 3 * logits.nbytes + 24 * target.numel()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_no_one_hot_and_memory_bounded_by_logits(name):
    counts = torch.bincount(make_batch(shape=(2, 8, 64, 96), seed=9)[1].flatten(), minlength=256)[:8].double().tolist()
    loss = make_all_losses(counts)[name].train()
    tracker, big_integer, logits, target = track_forward_backward(loss)
    assert big_integer == [], f"{name} built [B, L, H, W] integer/bool tensors: {big_integer}"
    # log p and the gradient are 2 logits-sized buffers (F.cross_entropy holds 3: log p, a zero-filled
    # nll gradient and the log_softmax gradient); a logit adjustment adds at most one more, plus a few
    # per-pixel [B, H, W] tensors (24 bytes a pixel). Any one-hot (even float) on top would exceed this.
    bound = (3 if name in ("bms", "ldam", "blv", "ce") else 2) * logits.nbytes + 24 * target.numel()
    assert tracker.peak <= bound, f"{name}: peak {tracker.peak} bytes > bound {bound} (logits {logits.nbytes})"


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_all_pixels_ignored_gives_zero(name):
    logits, target = make_batch(seed=10)
    target.fill_(IGNORE)
    value = make_all_losses()[name].train()(logits.requires_grad_(), target)
    assert float(value.detach()) == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "loss_type", [ClassBalancedLoss, ClassBalancedFocalLoss, BalancedSoftmaxLoss, LDAMLoss, BLVLoss]
)
def test_missing_counts_are_a_clear_error_and_set_class_counts_fixes_it(loss_type):
    logits, target = make_batch(seed=11)
    loss = loss_type()
    assert loss.needs_class_counts and loss.class_counts is None
    with pytest.raises(ValueError, match=rf"{loss_type.__name__} needs class_counts.*SegmentationModule"):
        loss(logits, target)
    loss.set_class_counts(COUNTS)
    assert loss.class_counts == COUNTS
    assert torch.isfinite(loss(logits, target))
    with pytest.raises(ValueError, match="was given 5 class_counts but the logits have 3 classes"):
        loss(logits[:, :3], target.clamp_max(2))


@pytest.mark.parametrize(
    "counts,message",
    [
        ([10.0, -1.0], r"class_counts\[1\] must be a finite number >= 0; got -1.0"),
        ([10.0, float("nan")], r"class_counts\[1\] must be a finite number >= 0; got nan"),
        ([10.0], "at least 2"),
        ("10,20", "list of per-class pixel counts"),
    ],
)
def test_bad_counts_are_rejected(counts, message):
    with pytest.raises(ValueError, match=message):
        BalancedSoftmaxLoss(counts)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: FocalLoss(gamma=-1.0), "gamma must be a finite number >= 0; got -1.0"),
        (lambda: FocalLoss(gamma=float("inf")), "gamma must be a finite number >= 0; got inf"),
        (lambda: FocalLoss(alpha=[1.0, -2.0]), r"alpha\[1\] must be a finite number >= 0; got -2.0"),
        (lambda: ClassBalancedLoss(beta=1.0), r"beta must be a number in \[0, 1\) \(or None: 1 - 1/N\); got 1.0"),
        (lambda: LDAMLoss(max_margin=0.0), "max_margin must be a finite number > 0; got 0.0"),
        (lambda: LDAMLoss(scale=-20), "scale must be a finite number > 0; got -20"),
        (lambda: LDAMLoss(drw_epoch=-1), r"drw_epoch must be an integer >= 0 \(or None\); got -1"),
        (lambda: LDAMLoss(drw_epoch=1.5), r"drw_epoch must be an integer >= 0 \(or None\); got 1.5"),
        (lambda: BLVLoss(sigma=-0.1), "sigma must be a finite number >= 0; got -0.1"),
    ],
)
def test_bad_hyperparameters_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_label_and_alpha_length_are_rejected_before_any_kernel():
    logits, target = make_batch(seed=12)
    target[0, 0, 0] = 7
    with pytest.raises(ValueError, match="label 7 found in target"):
        LDAMLoss(COUNTS)(logits, target)
    with pytest.raises(ValueError, match="alpha has 2 weights but the logits have 5 classes"):
        FocalLoss(alpha=[1.0, 2.0])(logits, target.clamp_max(4))


def test_derived_buffers_follow_the_module_but_stay_out_of_checkpoints():
    loss = LDAMLoss(COUNTS).to(torch.float64)
    assert set(loss.state_dict()) == set()  # re-derived from the counts in the hparams, never stale
    fresh = LDAMLoss()
    fresh.load_state_dict(loss.state_dict())  # a model restored before setup() provides the counts
    assert fresh.class_counts is None
