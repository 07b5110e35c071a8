r"""The floor mixture of PAT's Eq. 4 term and the class-balanced term (docs/losses.md, "PAT+CB mixture").

Eq. 4 weighs a class by the share of images that contain it; class-balanced (CB) weights come from
the data set's pixel counts. The mixture adds the two, each divided by a detached running mean of
itself, so that each term is about 1 and neither dominates the other's gradient whatever their
scales:

.. math::
    \mathcal{L} = \lambda \, \frac{\mathcal{L}_{PAT}}{\bar m_{PAT}}
                + (1 - \lambda) \, \frac{\mathcal{L}_{CB}}{\bar m_{CB}}

with :math:`\bar m` the bias-corrected exponential moving average (decay ``d``) of each term's
training values, updated before it is used (the first step divides each term by itself) and held
fixed outside training. Under Adam, whose step does not depend on the gradient's overall scale, each
term then carries its share (``lambda`` and ``1 - lambda``) of the gradient: a floor under the
classes that each weighting favours.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pat_seg.arguments import ClosedUnitInterval, HalfOpenUnitInterval, PositiveFloat, check_number
from pat_seg.losses.base import Reduction
from pat_seg.losses.class_balanced import check_beta, class_balanced_weights
from pat_seg.losses.class_counts import ClassCountLoss
from pat_seg.losses.description import LossDescription
from pat_seg.losses.pat import PATLoss
from pat_seg.losses.pixel import lookup_class, target_log_prob


class PATCBMixtureLoss(ClassCountLoss):
    r"""``lambda * L_PAT / m_PAT + (1 - lambda) * L_CB / m_CB`` (module docstring).

    ``L_PAT`` is :class:`~pat_seg.losses.PATLoss` (Eq. 4 with Eq. 5's weight at ``temperature``),
    ``L_CB`` is :class:`~pat_seg.losses.ClassBalancedLoss` (mean over valid pixels of
    :math:`-w_t \log p_t`), both computed from one ``log_softmax``.

    Args:
        class_counts: per-class pixel counts of the training split (given by the data module when
            trained through pat-seg), for the CB weights.
        mix: :math:`\lambda` in [0, 1], the share of the PAT term.
        temperature / epsilon: Eq. 5's ``T`` and ``eps`` in the PAT term.
        beta: CB's ``b``; ``None`` = ``1 - 1/N``, ``N`` the total pixel count.
        decay: decay ``d`` in [0, 1) of the running means (0.99: a memory of about 100 steps).
        ignore_index: label of pixels that take no part; ``None``: every pixel takes part.
        reduction: ``"mean"`` (default) and ``"sum"`` both return the loss: each pixel's term
            ``lambda * (its PAT term) / m_PAT + (1 - lambda) * (its CB term) / (V m_CB)`` carries the
            normalisation of both, so the terms sum to the loss. ``"none"`` returns those terms.

    The running means are buffers saved in checkpoints, so a resumed run continues them exactly. Under
    DDP each process keeps its own (each normalises the loss it computes).
    """

    description = LossDescription("PAT+CB mix", symbols={"mix": "lambda"})

    # Each pixel's term carries both normalisations (PAT's Eq. 4 and CB's 1 / V): "mean" is their sum.
    mean_over_valid_pixels = False
    class_weight: Tensor
    running_means: Tensor  # [2]: PAT term, CB term (bias-uncorrected EMA)
    running_steps: Tensor  # number of training updates of the running means

    def __init__(
        self,
        class_counts: list[float] | None = None,
        mix: ClosedUnitInterval = 0.5,
        temperature: PositiveFloat = 20.0,
        epsilon: float = 0.0,
        beta: HalfOpenUnitInterval | None = None,
        decay: HalfOpenUnitInterval = 0.99,
        ignore_index: int | None = 255,
        reduction: Reduction = "mean",
    ) -> None:
        mix = check_number("mix", mix, at_least=0, at_most=1, note="the share of the PAT term")
        decay = check_number("decay", decay, at_least=0, below=1)
        self.beta = check_beta(beta)
        super().__init__(class_counts=class_counts, ignore_index=ignore_index, reduction=reduction)
        self.pat = PATLoss(temperature=temperature, epsilon=epsilon, ignore_index=ignore_index)
        self.mix = mix
        self.decay = decay
        self.temperature = self.pat.temperature
        self.epsilon = self.pat.epsilon
        self.register_buffer("running_means", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("running_steps", torch.zeros((), dtype=torch.long))

    def derive_from_counts(self, counts: Tensor) -> None:
        self.set_class_buffer("class_weight", class_balanced_weights(counts, self.beta))

    def term_maps(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(PAT terms, CB terms, valid, V)`` of upcast ``logits`` from one ``log_softmax``.

        The PAT terms carry Eq. 4's normalisation (they sum to ``L_PAT``); the CB terms are
        ``-w_t log p_t``, whose sum over valid pixels divided by ``V`` (at least 1) is ``L_CB``.
        """
        log_p_t, valid, index = target_log_prob(logits, target, self.ignore_index)
        pat_terms = (self.pat.pixel_weights(log_p_t, valid, index, logits.shape[1]) * -log_p_t).masked_fill(~valid, 0.0)
        cb_terms = (-log_p_t * lookup_class(self.class_weight, index, log_p_t)).masked_fill(~valid, 0.0)
        return pat_terms, cb_terms, valid, valid.sum().clamp_min(1).to(log_p_t.dtype)

    def running_scales(self, pat_term: Tensor, cb_term: Tensor) -> Tensor:
        """The bias-corrected running means ``[m_PAT, m_CB]``, updated with these terms when training."""
        if self.training and torch.is_grad_enabled():
            values = torch.stack([pat_term.detach(), cb_term.detach()]).to(self.running_means.dtype)
            self.running_means.mul_(self.decay).add_(values, alpha=1.0 - self.decay)
            self.running_steps.add_(1)
        # Adam's bias correction of a zero-started average, on the device (no host sync); before any
        # training step (an evaluation of a fresh loss) no scale is known and the terms count as they are.
        steps = self.running_steps.to(self.running_means.dtype)
        correction = 1.0 - torch.pow(torch.full_like(steps, self.decay), steps)
        tiny = torch.finfo(torch.float32).tiny
        scales = torch.where(
            steps > 0,
            (self.running_means / correction.clamp_min(tiny)).clamp_min(tiny),
            torch.ones_like(self.running_means),
        )
        return scales.to(dtype=pat_term.dtype, device=pat_term.device)

    def pixel_terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        pat_terms, cb_terms, valid, num_valid = self.term_maps(logits, target)
        scales = self.running_scales(pat_terms.sum(), cb_terms.sum() / num_valid)
        terms = self.mix * pat_terms / scales[0] + (1.0 - self.mix) * cb_terms / (scales[1] * num_valid)
        return terms, valid

    def extra_repr(self) -> str:
        return (
            f"mix={self.mix}, temperature={self.temperature}, epsilon={self.epsilon}, beta={self.beta}, "
            f"decay={self.decay}, {super().extra_repr()}"
        )
