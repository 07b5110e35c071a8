"""Float64 per-pixel terms of the losses, written from their formulas in docs/losses.md.

Each formula builds the one-hot target and the full softmax (fine for test-sized tensors) and shares
no code with :mod:`pat_seg.losses`: no ``gather``, no histogram, no analytic backward. The gradient
is autograd's through these lines. Any number of spatial dimensions: ``z [B, L, *spatial]``,
``target [B, *spatial]``; ``ignore_index=None`` ignores nothing.

:func:`formula_terms` gives each pixel's term (0 where ignored) and :func:`formula_loss` reduces them:
``"sum"`` adds them up; ``"mean"`` divides that sum by the number of valid pixels (at least 1), except
for PAT, whose terms carry Eq. 4's ``1 / (B S_i^l)`` and add up to the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

LOSS_NAMES = ("ce", "focal", "cb", "cbfocal", "bms", "ldam", "blv", "pat")
# Beyond the paper: PAT with the presence correction (presence_exponent 0.5, the CLASS_PRESENCE shares
# of the first five classes; more classes repeat them), and the PAT+CB mixture at its first training step.
BEYOND_PAPER_NAMES = ("pat_presence", "patcb")
PRESENCE_EXPONENT = 0.5
CLASS_PRESENCE = [0.9, 0.5, 0.3, 0.1, 0.05]


def class_presence_for(num_classes: int) -> list[float]:
    return [CLASS_PRESENCE[c % len(CLASS_PRESENCE)] for c in range(num_classes)]


def presence_factors64(presence: Sequence[float], exponent: float) -> list[float]:
    """``a_l = pi_l^{-alpha} / Z`` with ``Z = sum pi^{1 - alpha} / sum pi`` (every share > 0 here)."""
    z = sum(p ** (1.0 - exponent) for p in presence) / sum(presence)
    return [p ** (-exponent) / z for p in presence]


def log_softmax64(z: Tensor) -> Tensor:
    """``z - log sum_c exp(z_c)`` over dim 1, in float64, with the max shifted out first."""
    z = z.double()
    top = z.amax(1, keepdim=True).detach()
    return z - top - (z - top).exp().sum(1, keepdim=True).log()


def valid_and_onehot(target: Tensor, num_classes: int, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """``(valid [B, *spatial] bool, onehot [B, L, *spatial] float64)``; ignored pixels have an all-zero row."""
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    classes = torch.arange(num_classes).view(1, -1, *([1] * (target.dim() - 1)))
    onehot = ((target.unsqueeze(1) == classes) & valid.unsqueeze(1)).double()
    return valid, onehot


def true_class(values: Tensor, onehot: Tensor) -> Tensor:
    """``values`` at each pixel's true class, by the one-hot product (0 at ignored pixels)."""
    return (values * onehot).sum(1)


def per_class(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, -1, *([1] * (like.dim() - 2)))


def clamped_counts(counts: Sequence[float]) -> list[float]:
    return [max(float(c), 1.0) for c in counts]


def class_balanced_weights64(counts: Sequence[float]) -> list[float]:
    """Cui et al. Eq. 8 with ``b = 1 - 1/N``: ``(1 - b) / (1 - b^n_c)``, scaled to sum to ``L``."""
    n = clamped_counts(counts)
    b = 1.0 - 1.0 / sum(n)
    w = [(1.0 - b) / (1.0 - b**count) for count in n]
    return [x * len(w) / sum(w) for x in w]


def ldam_margins64(counts: Sequence[float], max_margin: float) -> list[float]:
    """``m_c = C n_c^{-1/4}`` with ``C`` such that the rarest class gets ``max_margin``."""
    n = clamped_counts(counts)
    return [max_margin * (min(n) / count) ** 0.25 for count in n]


def blv_offsets64(counts: Sequence[float], noise: Tensor, sigma: float) -> Tensor:
    """``min(|sigma e|, 1) * f_c / max f`` with ``f_c = log N - log n_c``, for standard normals ``noise``."""
    n = clamped_counts(counts)
    f = [math.log(sum(n)) - math.log(count) for count in n]
    scale = per_class([x / max(f) for x in f], noise)
    return (sigma * noise.double()).abs().clamp_max(1.0) * scale


def pat_terms64(z: Tensor, onehot: Tensor, temperature: float, epsilon: float = 0.0) -> Tensor:
    """``beta_ij (-log p_t) / (B S_i^{y_ij})``, Eq. 4-5; ``S_i^l`` counted over all positions of sample ``i``."""
    log_p_t = true_class(log_softmax64(z), onehot)
    beta = torch.exp((1.0 - log_p_t.exp() - epsilon) / temperature)
    sizes = onehot.flatten(2).sum(2)  # [B, L]: S_i^l
    size_at_pixel = true_class(sizes.view(*sizes.shape, *([1] * (z.dim() - 2))), onehot)
    return beta * -log_p_t / (z.shape[0] * size_at_pixel.clamp_min(1.0))


def formula_terms(
    name: str,
    z: Tensor,
    target: Tensor,
    counts: Sequence[float],
    ignore_index: int | None = 255,
    ldam_scale: float = 20.0,
    blv_noise: Tensor | None = None,
) -> Tensor:
    """Each pixel's float64 term of loss ``name`` in training mode (0 where ignored), ``[B, *spatial]``.

    ``name`` is one of :data:`LOSS_NAMES` or :data:`BEYOND_PAPER_NAMES`.

    Hyperparameters are the defaults of the loss classes (focal ``gamma = 2``, LDAM ``max_margin = 0.5``
    with deferred re-weighting on, BLV ``sigma = 0.5``, PAT ``T = 20``); ``blv_noise`` holds the
    standard normals BLV draws, one per logit.
    """
    z = z.double()
    valid, onehot = valid_and_onehot(target, z.shape[1], ignore_index)
    cb = per_class(class_balanced_weights64(counts), z)

    def ce(adjusted: Tensor) -> Tensor:
        return -true_class(log_softmax64(adjusted), onehot)

    def focal(adjusted: Tensor) -> Tensor:
        log_p_t = true_class(log_softmax64(adjusted), onehot)
        return -((1.0 - log_p_t.exp()) ** 2) * log_p_t

    if name == "ce":
        terms = ce(z)
    elif name == "focal":
        terms = focal(z)
    elif name == "cb":
        terms = ce(z) * true_class(cb, onehot)
    elif name == "cbfocal":
        terms = focal(z) * true_class(cb, onehot)
    elif name == "bms":
        terms = ce(z + per_class(clamped_counts(counts), z).log())
    elif name == "ldam":
        margins = per_class(ldam_margins64(counts, 0.5), z)
        terms = ce(ldam_scale * (z - margins * onehot)) * true_class(cb, onehot)
    elif name == "blv":
        assert blv_noise is not None, "BLV's formula needs the noise the loss drew"
        terms = ce(z + blv_offsets64(counts, blv_noise, 0.5))
    elif name == "pat":
        terms = pat_terms64(z, onehot, temperature=20.0)
    elif name == "pat_presence":
        factors = per_class(presence_factors64(class_presence_for(z.shape[1]), PRESENCE_EXPONENT), z)
        terms = pat_terms64(z, onehot, temperature=20.0) * true_class(factors, onehot)
    elif name == "patcb":
        # First training step of a fresh loss: each term divided by its own (detached) value.
        pat = pat_terms64(z, onehot, temperature=20.0)
        cb_terms = ce(z) * true_class(cb, onehot)
        num_valid = max(int(valid.sum()), 1)
        pat_value, cb_value = pat.sum().detach(), (cb_terms.sum() / num_valid).detach()
        terms = 0.5 * pat / pat_value + 0.5 * cb_terms / (num_valid * cb_value)
    else:
        raise ValueError(name)
    return torch.where(valid, terms, torch.zeros((), dtype=torch.float64))


def formula_loss(
    name: str,
    z: Tensor,
    target: Tensor,
    counts: Sequence[float],
    reduction: str = "mean",
    ignore_index: int | None = 255,
    **options: object,
) -> Tensor:
    """:func:`formula_terms` reduced: ``"none"``, ``"sum"``, or ``"mean"`` (docs/losses.md, "Reduction")."""
    terms = formula_terms(name, z, target, counts, ignore_index=ignore_index, **options)  # type: ignore[arg-type]
    if reduction == "none":
        return terms
    if reduction == "sum" or name.startswith("pat"):  # PAT's terms (and the mixture's) carry the normalisation
        return terms.sum()
    valid = target.numel() if ignore_index is None else int((target != ignore_index).sum())
    return terms.sum() / max(valid, 1)


def make_loss(name: str, counts: Sequence[float], ldam_scale: float = 20.0, **kwargs: object) -> torch.nn.Module:
    """The pat-seg loss that :func:`formula_terms` describes, in training mode."""
    from pat_seg import losses

    counts = [float(c) for c in counts]
    factories: dict[str, Callable[[], torch.nn.Module]] = {
        "ce": lambda: losses.CrossEntropyLoss(**kwargs),
        "focal": lambda: losses.FocalLoss(gamma=2.0, **kwargs),
        "cb": lambda: losses.ClassBalancedLoss(counts, **kwargs),
        "cbfocal": lambda: losses.ClassBalancedFocalLoss(counts, gamma=2.0, **kwargs),
        "bms": lambda: losses.BalancedSoftmaxLoss(counts, **kwargs),
        "ldam": lambda: losses.LDAMLoss(counts, max_margin=0.5, scale=ldam_scale, drw_epoch=0, **kwargs),
        "blv": lambda: losses.BLVLoss(counts, sigma=0.5, **kwargs),
        "pat": lambda: losses.PATLoss(temperature=20.0, **kwargs),
        "pat_presence": lambda: losses.PATLoss(
            temperature=20.0,
            presence_exponent=PRESENCE_EXPONENT,
            class_presence=class_presence_for(len(counts)),
            **kwargs,
        ),
        "patcb": lambda: losses.PATCBMixtureLoss(counts, mix=0.5, temperature=20.0, **kwargs),
    }
    return factories[name]().train()


BLV_SEED = 1234


def blv_noise_like(z: Tensor) -> Tensor:
    """The standard normals BLVLoss draws for logits ``z`` after ``manual_seed(BLV_SEED)``.

    The loss draws in its working dtype: float64 for float64 logits, float32 for every other.
    """
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    with torch.random.fork_rng():
        torch.manual_seed(BLV_SEED)
        return torch.randn(z.shape, dtype=dtype)


def call_seeded(loss: torch.nn.Module, z: Tensor, target: Tensor) -> Tensor:
    """``loss(z, target)`` with the global generator at ``BLV_SEED`` (BLV draws its noise from it)."""
    with torch.random.fork_rng():
        torch.manual_seed(BLV_SEED)
        return loss(z, target)
