"""The one float64 reference of the PAT loss (paper Eq. 4-5) that the tests compare every path with.

Written from the equations with explicit loops over images and classes, sharing no code with
:class:`pat_seg.losses.PATLoss` or the Triton kernel. Its gradient is autograd's, through these
loops; ``detach_weight`` makes ``beta`` a constant, as the option promises.

The two ablation options are written from their definitions (docs/losses.md):

- ``confidence_weight=False``: ``beta_ij = 1`` instead of Eq. 5.
- ``normalization="pixel"``: every valid pixel's term divided by ``V``, the number of valid pixels in
  the whole batch, instead of Eq. 4's ``B * S_i^l``.

The presence correction (docs/losses.md, "Presence-corrected Eq. 4") multiplies class ``l``'s terms by
``a_l = pi_l^(-alpha) / Z``, ``Z = sum_l pi_l^(1 - alpha) / sum_l pi_l`` over the classes with
``pi_l > 0``; a class with ``pi_l = 0`` takes the largest ``a`` of the others.

``weight_normalization="batch_minmax"`` (docs/losses.md, the paper's Fig. 2 caption): every ``beta``
of Eq. 5 is replaced by ``(beta - min beta) / (max beta - min beta)``, min and max over the valid
pixels of the whole batch, computed literally (epsilon included, betas subtracted); 1 when
``max == min``. Autograd differentiates through the min and the max.
"""

from __future__ import annotations

import torch


def reference_pat(
    logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 20.0,
    epsilon: float = 0.0,
    ignore_index: int = 255,
    class_reduction: str = "sum",
    detach_weight: bool = False,
    confidence_weight: bool = True,
    normalization: str = "image_class",
    presence_exponent: float = 0.0,
    class_presence: list[float] | None = None,
    weight_normalization: str = "none",
) -> torch.Tensor:
    """PAT of ``logits [B, L, H, W]`` (cast to float64) and ``target [B, H, W]`` as a float64 scalar.

    Labels equal to ``ignore_index`` take no part; with ``normalization="image_class"`` an image with
    no valid pixel contributes 0 and still counts in ``B``; with ``"pixel"`` a batch without valid
    pixels gives 0.
    """
    if normalization not in ("image_class", "pixel"):
        raise ValueError(f"unknown normalization {normalization!r}")
    if weight_normalization not in ("none", "batch_minmax"):
        raise ValueError(f"unknown weight_normalization {weight_normalization!r}")
    logits = logits.double()
    batch, num_classes = logits.shape[:2]
    valid_in_batch = int((target != ignore_index).sum())  # V
    factor = [1.0] * num_classes
    if presence_exponent > 0:
        assert class_presence is not None and len(class_presence) == num_classes
        present_shares = [share for share in class_presence if share > 0]
        z = sum(share ** (1 - presence_exponent) for share in present_shares) / sum(present_shares)
        factor = [share**-presence_exponent / z if share > 0 else 0.0 for share in class_presence]
        largest = max(factor)
        factor = [f if share > 0 else largest for f, share in zip(factor, class_presence)]
    log_ps = []
    for i in range(batch):
        z = logits[i]  # [L, H, W]
        shifted = z - z.max(0, keepdim=True).values.detach()
        log_ps.append(shifted - shifted.exp().sum(0, keepdim=True).log())

    def eq5(log_pt: torch.Tensor) -> torch.Tensor:
        beta = torch.exp((1 - log_pt.exp() - epsilon) / temperature)
        return beta.detach() if detach_weight else beta

    if weight_normalization == "batch_minmax":
        # Every valid pixel's beta in the batch, for the min and the max.
        betas = torch.cat(
            [
                eq5(log_ps[i][c][(target[i] == c) & (target[i] != ignore_index)])
                for i in range(batch)
                for c in range(num_classes)
            ]
        )
        smallest, largest = (betas.min(), betas.max()) if betas.numel() else (None, None)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(batch):
        log_p = log_ps[i]
        image_sum = torch.zeros((), dtype=torch.float64)
        present = 0
        for c in range(num_classes):
            mask = (target[i] == c) & (target[i] != ignore_index)
            size = int(mask.sum())  # S_i^c, Eq. 2
            if size == 0:
                continue
            present += 1
            log_pt = log_p[c][mask]
            if confidence_weight:
                beta = eq5(log_pt)  # Eq. 5
                if weight_normalization == "batch_minmax":
                    assert smallest is not None and largest is not None
                    if largest > smallest:
                        beta = (beta - smallest) / (largest - smallest)
                    else:  # every valid pixel equally confident: beta' = 1
                        beta = torch.ones_like(log_pt)
            else:
                beta = torch.ones_like(log_pt)
            if normalization == "image_class":
                image_sum = image_sum + factor[c] * (beta * -log_pt).sum() / size  # Eq. 4, one class of one image
            else:
                image_sum = image_sum + (beta * -log_pt).sum()  # divided by V below
        if normalization == "image_class" and class_reduction == "mean" and present:
            image_sum = image_sum / present
        total = total + image_sum
    if normalization == "pixel":
        return total / valid_in_batch if valid_in_batch else total
    return total / batch


def reference_pat_and_grad(logits: torch.Tensor, target: torch.Tensor, **options: object) -> tuple[float, torch.Tensor]:
    """``(value, d value / d logits)`` of :func:`reference_pat`, both in float64."""
    leaf = logits.detach().double().requires_grad_(True)
    value = reference_pat(leaf, target, **options)  # type: ignore[arg-type]
    value.backward()
    return float(value.detach()), leaf.grad
