"""The fused C++ CPU kernel behind LDAM and BLV: its math, its noise and the losses that use it.

References are independent of the kernel: published Philox known-answer vectors and a Python Philox,
float64 ``torch.erfinv`` / ``exp`` / ``log``, and float64 formulas of the losses written here from
SPEC section 2 (with a one-hot tensor, fine at these sizes).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pat_seg.kernels import cpu_build
from pat_seg.kernels.cpu_build import CpuKernelUnavailable, build_library, cpu_kernels_available, load_cpu_kernels
from pat_seg.kernels.softmax_cross_entropy_cpu import blv_variation, draw_seed, fused_softmax_cross_entropy
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

needs_kernel = pytest.mark.skipif(not cpu_kernels_available(), reason="no C++ compiler to build the CPU kernel")

IGNORE = 255
COUNTS = [9000.0, 2500.0, 600.0, 120.0, 30.0, 0.0]  # the last class never seen: clamped to 1
NUM_CLASSES = len(COUNTS)


def make_batch(shape=(2, NUM_CLASSES, 9, 13), seed=0, ignore_fraction=0.2, spread=3.0):
    """float32 logits and labels with ignored pixels; 9 x 13 = 117 pixels cross a 64-pixel tile edge."""
    g = torch.Generator().manual_seed(seed)
    logits = spread * torch.randn(shape, generator=g)
    batch, num_classes, height, width = shape
    target = torch.randint(0, num_classes, (batch, height, width), generator=g)
    target[torch.rand(target.shape, generator=g) < ignore_fraction] = IGNORE
    return logits, target


def ref_mean_nll(y, target, class_weight=None):
    """float64 ``mean over valid pixels of w_t * (logsumexp(y) - y_t)`` with a one-hot tensor."""
    y = y.double()
    valid = target != IGNORE
    index = torch.where(valid, target, 0)
    onehot = F.one_hot(index, y.shape[1]).permute(0, 3, 1, 2).double()
    nll = torch.logsumexp(y, 1) - (onehot * y).sum(1)
    weight = torch.ones(y.shape[1], dtype=torch.float64) if class_weight is None else class_weight.double()
    return (nll * weight[index] * valid).sum() / valid.sum().clamp_min(1)


def ref_ldam_logits(z, target, counts, max_margin=0.5, scale=20.0):
    counts = torch.tensor([max(c, 1.0) for c in counts], dtype=torch.float64)
    margin = max_margin * counts.min() ** 0.25 / counts**0.25
    index = torch.where(target != IGNORE, target, 0)
    onehot = F.one_hot(index, z.shape[1]).permute(0, 3, 1, 2).double()
    return scale * (z.double() - margin.view(1, -1, 1, 1) * onehot)


def ref_drw_weights(counts):
    counts = [max(c, 1.0) for c in counts]
    b = 1 - 1 / sum(counts)
    w = [(1 - b) / (1 - b**n) for n in counts]
    return torch.tensor([x * len(w) / sum(w) for x in w], dtype=torch.float64)


def ref_blv_scale(counts):
    counts = torch.tensor([max(c, 1.0) for c in counts], dtype=torch.float64)
    f = counts.sum().log() - counts.log()
    return f / f.max()


def value_and_grad(loss_fn, logits, target):
    leaf = logits.detach().clone().requires_grad_()
    value = loss_fn(leaf, target)
    value.backward()
    return value.detach(), leaf.grad


def ref_value_and_grad(ref_fn, logits, target):
    leaf = logits.detach().double().requires_grad_()
    value = ref_fn(leaf, target)
    value.backward()
    return value.detach(), leaf.grad


# --- the kernel's building blocks ------------------------------------------------------------------
def call_math(name, values, out_dtype=torch.float32):
    out = torch.empty(values.shape, dtype=out_dtype)
    getattr(load_cpu_kernels(), name)(values.data_ptr(), out.data_ptr(), values.numel())
    return out


def python_philox(counter, key):
    """Philox4x32-10 written from Salmon et al. (SC 2011), in Python integers."""
    mask = 0xFFFFFFFF
    c, k = list(counter), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & mask, p1 & mask, ((p0 >> 32) ^ c[3] ^ k[1]) & mask, p0 & mask]
        k = [(k[0] + 0x9E3779B9) & mask, (k[1] + 0xBB67AE85) & mask]
    return c


def kernel_philox(counter, key):
    to_u32 = lambda values: torch.tensor(values, dtype=torch.int64).to(torch.uint32)  # noqa: E731
    c, k, out = to_u32(counter), to_u32(key), torch.zeros(4, dtype=torch.uint32)
    load_cpu_kernels().pat_seg_philox4x32_10(c.data_ptr(), k.data_ptr(), out.data_ptr())
    return [int(v) for v in out.to(torch.int64)]


@needs_kernel
def test_philox_matches_the_published_known_answers_and_a_python_implementation():
    # Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 10 rounds).
    assert kernel_philox([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert kernel_philox([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        counter = torch.randint(0, 2**32, (4,), generator=g, dtype=torch.int64).tolist()
        key = torch.randint(0, 2**32, (2,), generator=g, dtype=torch.int64).tolist()
        assert kernel_philox(counter, key) == python_philox(counter, key)


@needs_kernel
def test_half_normal_is_sqrt2_erfinv_of_the_centred_24_bit_uniform():
    top = torch.arange(0, 2**24, 97, dtype=torch.int64)
    top = torch.cat([top, torch.tensor([0, 1, 2**23, 2**24 - 2, 2**24 - 1])])
    bits = (top << 8 | 0xAB).to(torch.uint32)  # the low 8 bits are not used
    got = call_math("pat_seg_math_half_normal", bits).double()
    uniform = (top.double() + 0.5) / 2**24
    expected = math.sqrt(2) * torch.erfinv(uniform)
    torch.testing.assert_close(got, expected, rtol=1.5e-6, atol=0)


@needs_kernel
def test_exp_is_accurate_never_subnormal_and_overflows_to_inf():
    x = torch.cat([torch.linspace(-87.0, 0.0, 200_001), torch.tensor([-1e-30, -0.0])])
    got = call_math("pat_seg_math_exp", x).double()
    torch.testing.assert_close(got, x.double().exp(), rtol=3e-7, atol=0)
    below = call_math("pat_seg_math_exp", torch.tensor([-87.5, -100.0, -1e4, -float("inf")]))
    assert below.tolist() == [0.0, 0.0, 0.0, 0.0]  # flushed, never a subnormal
    positive = torch.linspace(0.0, 88.72, 100_001)  # PAT's weight exp((1 - p - eps) / T) takes these
    torch.testing.assert_close(call_math("pat_seg_math_exp", positive).double(), positive.double().exp(),
                               rtol=3e-7, atol=0)
    above = call_math("pat_seg_math_exp", torch.tensor([88.73, 89.5, 1e4, float("inf")]))
    assert above.tolist() == [float("inf")] * 4
    assert math.isnan(float(call_math("pat_seg_math_exp", torch.tensor([float("nan")]))))


@needs_kernel
def test_log_is_accurate_over_the_normal_range():
    x = torch.logspace(-37, 38, 300_001, dtype=torch.float64).float()
    got = call_math("pat_seg_math_log_positive", x).double()
    torch.testing.assert_close(got, x.double().log(), rtol=2e-7, atol=1e-8)  # float32 rounding of the result
    near_one = torch.linspace(0.5, 2.0, 100_001).float()
    got = call_math("pat_seg_math_log_positive", near_one).double()
    torch.testing.assert_close(got, near_one.double().log(), rtol=0, atol=2e-7)


# --- the fused loss against float64 formulas -------------------------------------------------------
@needs_kernel
@pytest.mark.parametrize("shape", [(2, NUM_CLASSES, 9, 13), (1, 2, 8, 8), (3, 37, 5, 30), (1, 4, 1, 129)])
def test_plain_cross_entropy_value_and_gradient(shape):
    logits, target = make_batch(shape, seed=1)
    value, grad = value_and_grad(lambda z, t: fused_softmax_cross_entropy(z, t), logits, target)
    expected, expected_grad = ref_value_and_grad(ref_mean_nll, logits, target)
    assert value.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=2e-8)


@needs_kernel
@pytest.mark.parametrize("drw", [False, True])
@pytest.mark.parametrize("max_margin,scale", [(0.5, 20.0), (0.3, 5.0)])
def test_ldam_kernel_matches_the_float64_formula(drw, max_margin, scale):
    logits, target = make_batch(seed=2, spread=4.0)
    loss = LDAMLoss(COUNTS, max_margin=max_margin, scale=scale, drw_epoch=0 if drw else None,
                    implementation="cpu").train()
    weights = ref_drw_weights(COUNTS) if drw else None
    value, grad = value_and_grad(loss, logits, target)
    expected, expected_grad = ref_value_and_grad(
        lambda z, t: ref_mean_nll(ref_ldam_logits(z, t, COUNTS, max_margin, scale), t, weights), logits, target)
    torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)
    # evaluation: unweighted cross-entropy on s * z, no margin
    eval_value = loss.eval()(logits, target)
    torch.testing.assert_close(eval_value.double(), ref_mean_nll(scale * logits.double(), target), rtol=2e-6, atol=2e-6)


@needs_kernel
def test_cross_entropy_class_balanced_and_balanced_softmax_kernels_match_float64_formulas():
    logits, target = make_batch(seed=14)
    counts = torch.tensor([max(c, 1.0) for c in COUNTS], dtype=torch.float64)
    b = 1 - 1 / float(counts.sum())
    cb = (1 - b) / (1 - b**counts)
    cb = cb * len(cb) / cb.sum()
    cases = [
        (CrossEntropyLoss(implementation="cpu"), lambda z, t: ref_mean_nll(z, t), lambda z, t: ref_mean_nll(z, t)),
        (ClassBalancedLoss(COUNTS, implementation="cpu"), lambda z, t: ref_mean_nll(z, t, cb),
         lambda z, t: ref_mean_nll(z, t, cb)),
        (BalancedSoftmaxLoss(COUNTS, implementation="cpu"), lambda z, t: ref_mean_nll(z + counts.log().view(1, -1, 1, 1), t),
         lambda z, t: ref_mean_nll(z, t)),  # evaluation: raw logits
    ]
    for loss, train_reference, eval_reference in cases:
        value, grad = value_and_grad(loss.train(), logits, target)
        expected, expected_grad = ref_value_and_grad(train_reference, logits, target)
        torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=2e-8)
        torch.testing.assert_close(loss.eval()(logits, target).double(), eval_reference(logits.double(), target),
                                   rtol=2e-6, atol=2e-6)


def ref_pat(z, target, temperature, epsilon, detach_weight=False, class_reduction="sum"):
    """PAT Eq. 4-5 in float64, image by image and class by class."""
    log_p = torch.log_softmax(z.double(), 1)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(z.shape[0]):
        image_total, present = torch.zeros((), dtype=torch.float64), 0
        for cls in range(z.shape[1]):
            mask = target[i] == cls
            if not mask.any():
                continue
            nll = -log_p[i, cls][mask]
            beta = torch.exp((1 - torch.exp(-nll) - epsilon) / temperature)
            beta = beta.detach() if detach_weight else beta
            image_total = image_total + (beta * nll).sum() / mask.sum()
            present += 1
        total = total + (image_total / max(present, 1) if class_reduction == "mean" else image_total)
    return total / z.shape[0]


def ref_focal(z, target, gamma, class_weight=None):
    log_p = torch.log_softmax(z.double(), 1)
    valid = target != IGNORE
    index = torch.where(valid, target, 0)
    log_p_t = log_p.gather(1, index.unsqueeze(1)).squeeze(1)
    q = (-torch.expm1(log_p_t)).clamp_min(torch.finfo(torch.float32).tiny)
    weight = torch.ones(z.shape[1], dtype=torch.float64) if class_weight is None else class_weight.double()
    per_pixel = -(q**gamma) * log_p_t * weight[index]
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1)


@needs_kernel
@pytest.mark.parametrize("temperature,epsilon,detach_weight,class_reduction",
                         [(20.0, 0.0, False, "sum"), (0.5, 0.3, False, "mean"), (5.0, -0.2, True, "sum")])
def test_pat_kernel_matches_the_float64_formula(temperature, epsilon, detach_weight, class_reduction):
    logits, target = make_batch((3, NUM_CLASSES, 9, 13), seed=15)
    target[2].fill_(IGNORE)  # an all-ignored image still counts in B
    loss = PATLoss(temperature, epsilon, IGNORE, detach_weight, class_reduction, implementation="cpu")
    value, grad = value_and_grad(loss, logits, target)
    expected, expected_grad = ref_value_and_grad(
        lambda z, t: ref_pat(z, t, temperature, epsilon, detach_weight, class_reduction), logits, target)
    torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)


@needs_kernel
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_kernels_match_the_float64_formula(gamma):
    # spread 8: many pixels with p_t within 1e-6 of 1, where 1 - p_t must not cancel
    logits, target = make_batch(seed=16, spread=8.0)
    alpha = [0.5, 1.0, 1.5, 2.0, 0.25, 3.0]
    for loss, weight in ((FocalLoss(gamma=gamma, alpha=alpha, implementation="cpu"), torch.tensor(alpha)),
                         (ClassBalancedFocalLoss(COUNTS, gamma=gamma, implementation="cpu"), ref_drw_weights(COUNTS))):
        value, grad = value_and_grad(loss.train(), logits, target)
        expected, expected_grad = ref_value_and_grad(lambda z, t: ref_focal(z, t, gamma, weight), logits, target)
        torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-7)


@needs_kernel
def test_blv_kernel_matches_the_float64_formula_with_the_noise_it_drew():
    logits, target = make_batch(seed=3)
    sigma, seed = 0.7, 987654321
    a = ref_blv_scale(COUNTS)
    value, grad = value_and_grad(
        lambda z, t: fused_softmax_cross_entropy(z, t, variation_scale=a.float(), sigma=sigma, seed=seed), logits, target)
    variation = blv_variation(tuple(logits.shape), sigma, seed).double()
    expected, expected_grad = ref_value_and_grad(
        lambda z, t: ref_mean_nll(z + variation * a.view(1, -1, 1, 1), t), logits, target)
    torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=2e-8)


@needs_kernel
def test_blv_loss_draws_its_seed_from_torchs_generator():
    logits, target = make_batch(seed=4)
    loss = BLVLoss(COUNTS, sigma=0.5, implementation="cpu").train()
    torch.manual_seed(11)
    first, second = loss(logits, target), loss(logits, target)
    torch.manual_seed(11)
    seed_of_first = draw_seed()
    assert float(first) != float(second)  # fresh noise every call
    torch.manual_seed(11)
    assert float(loss(logits, target)) == float(first)  # reproduced by manual_seed
    direct = fused_softmax_cross_entropy(logits, target, variation_scale=ref_blv_scale(COUNTS).float(), sigma=0.5,
                                         seed=seed_of_first)
    assert float(direct) == float(first)
    assert float(BLVLoss(COUNTS, sigma=0.5, implementation="cpu").eval()(logits, target)) == pytest.approx(
        float(ref_mean_nll(logits, target)), rel=2e-6)  # evaluation: raw logits


@needs_kernel
def test_blv_kernel_with_sigma_zero_is_cross_entropy():
    logits, target = make_batch(seed=5)
    value = BLVLoss(COUNTS, sigma=0.0, implementation="cpu").train()(logits, target)
    torch.testing.assert_close(value, F.cross_entropy(logits, target, ignore_index=IGNORE), rtol=2e-6, atol=2e-6)


@needs_kernel
@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_blv_kernel_noise_statistics(sigma):
    variation = blv_variation((4, 8, 128, 128), sigma, seed=2024).double()  # a_c = 1: min(sigma |e|, 1)
    # E[min(|X|, 1)] for X ~ N(0, sigma): the truncated half-normal mean plus P(|X| >= 1).
    mean_abs = sigma * math.sqrt(2 / math.pi) * (1 - math.exp(-1 / (2 * sigma**2))) + math.erfc(1 / (sigma * math.sqrt(2)))
    per_class = variation.mean(dim=(0, 2, 3))
    torch.testing.assert_close(per_class, torch.full_like(per_class, mean_abs), rtol=0, atol=4e-3)
    assert float(variation.min()) >= 0 and float(variation.max()) <= 1.0
    flat = variation.flatten()
    for x in (0.05, 0.2, 0.5, 0.9):  # P(min(|X|, 1) <= x) = erf(x / (sigma sqrt 2)) for x < 1
        assert abs(float((flat <= x).double().mean()) - math.erf(x / (sigma * math.sqrt(2)))) < 0.005, x
    # independent across the 4 lanes of one Philox output (classes 0-3), across groups and across pixels
    centred = variation - variation.mean()
    for a, b in ((centred[:, 0], centred[:, 1]), (centred[:, 3], centred[:, 4]), (centred[:, 0, :, 1:], centred[:, 0, :, :-1])):
        correlation = float((a * b).mean() / (a.std() * b.std()))
        assert abs(correlation) < 0.01


@needs_kernel
def test_results_do_not_depend_on_the_number_of_threads():
    logits, target = make_batch((2, NUM_CLASSES, 64, 96), seed=6)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            results.append(value_and_grad(lambda z, t: fused_softmax_cross_entropy(
                z, t, variation_scale=ref_blv_scale(COUNTS).float(), sigma=0.5, seed=5), logits, target))
    finally:
        torch.set_num_threads(threads)
    assert float(results[0][0]) == float(results[1][0])
    assert torch.equal(results[0][1], results[1][1])


@needs_kernel
def test_upstream_gradient_scales_and_a_second_backward_repeats():
    logits, target = make_batch(seed=7)
    loss = BLVLoss(COUNTS, sigma=0.5, implementation="cpu").train()
    leaf = logits.clone().requires_grad_()
    torch.manual_seed(3)
    value = loss(leaf, target)
    (value * -2.5).backward(retain_graph=True)
    first = leaf.grad.clone()
    leaf.grad = None
    value.backward()  # the same graph again: the gradient is recomputed with the same noise
    torch.testing.assert_close(first, -2.5 * leaf.grad, rtol=1e-6, atol=1e-9)


@needs_kernel
def test_half_precision_logits_get_a_gradient_in_their_dtype():
    logits, target = make_batch(seed=8)
    leaf = logits.bfloat16().requires_grad_()
    value = LDAMLoss(COUNTS, implementation="cpu").train()(leaf, target)
    value.backward()
    assert value.dtype == torch.float32 and leaf.grad.dtype == torch.bfloat16
    expected = ref_mean_nll(ref_ldam_logits(leaf.detach().double(), target, COUNTS), target)
    torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=2e-6)


@needs_kernel
def test_all_ignored_and_empty_batches():
    logits, target = make_batch(seed=9)
    target.fill_(IGNORE)
    value, grad = value_and_grad(lambda z, t: LDAMLoss(COUNTS, implementation="cpu").train()(z, t), logits, target)
    assert float(value) == 0.0 and torch.count_nonzero(grad) == 0
    empty = fused_softmax_cross_entropy(torch.zeros(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long))
    assert float(empty) == 0.0


@needs_kernel
def test_non_finite_logits_give_a_non_finite_loss():
    logits, target = make_batch(seed=10)
    logits[0, 2, 3, 4] = float("nan")
    target[0, 3, 4] = 1
    assert math.isnan(float(fused_softmax_cross_entropy(logits, target)))


@needs_kernel
def test_bad_input_is_a_clear_error():
    logits, target = make_batch(seed=11)
    target[1, 2, 3] = 9
    with pytest.raises(ValueError, match="label 9 found in target"):
        LDAMLoss(COUNTS, implementation="cpu")(logits, target)
    with pytest.raises(ValueError, match=r"labels outside \[0, 5\]"):
        fused_softmax_cross_entropy(logits, target)  # the kernel's own guard for direct callers
    with pytest.raises(ValueError, match="implementation='cpu' runs on CPU float32 logits; got torch.float64"):
        BLVLoss(COUNTS, implementation="cpu")(logits.double(), target.clamp_max(5))
    with pytest.raises(ValueError, match="implementation must be one of"):
        LDAMLoss(COUNTS, implementation="triton")
    with pytest.raises(ValueError, match=r"table must have shape \[6\]"):
        fused_softmax_cross_entropy(logits, target.clamp_max(5), class_weight=torch.ones(3))


@needs_kernel
def test_auto_takes_the_kernel_for_cpu_float32_and_eager_for_float64():
    logits, target = make_batch(seed=12)
    loss = LDAMLoss(COUNTS).train()
    # float64 logits: the eager path, exact to float64 rounding
    exact = loss(logits.double(), target)
    reference = ref_mean_nll(ref_ldam_logits(logits, target, COUNTS), target)
    torch.testing.assert_close(exact, reference, rtol=1e-12, atol=1e-12)
    calls = []
    original = load_cpu_kernels().pat_seg_pixel_loss

    def counting(*args):
        calls.append(1)
        return original(*args)

    library = load_cpu_kernels()
    library.pat_seg_pixel_loss = counting
    try:
        loss(logits, target)
        LDAMLoss(COUNTS, implementation="eager").train()(logits, target)
    finally:
        library.pat_seg_pixel_loss = original
    assert len(calls) == 1


# --- building and caching --------------------------------------------------------------------------
@needs_kernel
def test_the_library_is_cached_per_source_compiler_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PAT_SEG_KERNEL_CACHE", str(tmp_path))
    first = build_library()
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert build_library() == first and first.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no scratch files left


@needs_kernel
def test_the_std_thread_build_without_openmp_gives_the_same_bits(tmp_path, monkeypatch):
    """Apple's clang has no OpenMP: the kernel then splits the tiles over std::threads instead."""
    logits, target = make_batch((2, NUM_CLASSES, 64, 96), seed=17)
    loss = lambda z, t: fused_softmax_cross_entropy(  # noqa: E731
        z, t, variation_scale=ref_blv_scale(COUNTS).float(), sigma=0.5, seed=9, scale=2.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with_openmp = value_and_grad(loss, logits, target)
        monkeypatch.setenv("PAT_SEG_KERNEL_CACHE", str(tmp_path))
        monkeypatch.setattr(cpu_build, "TARGET_FLAGS", (("-march=native",), ()))
        load_cpu_kernels.cache_clear()
        try:
            library = load_cpu_kernels()
            assert not hasattr(library, "omp_get_num_threads")  # nothing from libgomp was linked in
            with_threads = value_and_grad(loss, logits, target)
        finally:
            load_cpu_kernels.cache_clear()
    finally:
        torch.set_num_threads(threads)
    assert float(with_openmp[0]) == float(with_threads[0])
    assert torch.equal(with_openmp[1], with_threads[1])


def test_without_a_compiler_auto_falls_back_to_eager_and_cpu_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PAT_SEG_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "")
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    with pytest.raises(CpuKernelUnavailable, match=r"no C\+\+ compiler found"):
        build_library()
    load_cpu_kernels.cache_clear()
    cpu_build.cpu_kernels_available.cache_clear()
    try:
        with pytest.raises(ValueError, match="implementation='cpu' needs pat-seg's C\\+\\+ CPU kernel.*no C\\+\\+ compiler"):
            LDAMLoss(COUNTS, implementation="cpu")
        logits, target = make_batch(seed=13)
        with pytest.warns(RuntimeWarning, match="using eager PyTorch instead"):
            value = LDAMLoss(COUNTS).train()(logits, target)
        reference = ref_mean_nll(ref_ldam_logits(logits, target, COUNTS), target)
        torch.testing.assert_close(value.double(), reference, rtol=2e-6, atol=2e-6)
    finally:
        load_cpu_kernels.cache_clear()
        cpu_build.cpu_kernels_available.cache_clear()
