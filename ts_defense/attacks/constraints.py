"""Projections onto the attack constraint sets, per sample: L-inf and L2 balls, zero mean, and
the clip box. Each returns a point that satisfies its constraint up to float rounding."""

from __future__ import annotations

import torch
from torch import Tensor


def per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample, shape (B, 1, 1, 1), accumulated in float64."""
    return t.double().flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def project_linf(delta: Tensor, eps: float) -> Tensor:
    """Clamp into the L-inf ball ``|delta|_inf <= eps``."""
    return delta.clamp(-eps, eps)


def project_l2(delta: Tensor, radius: Tensor) -> Tensor:
    """Scale each sample into the L2 ball of its ``radius`` (B, 1, 1, 1); inside stays put."""
    scale = (radius.double() / per_sample_norm(delta).clamp_min(1e-30)).clamp(max=1.0)
    return (delta.double() * scale).to(delta.dtype)


def normalize_l2(grad: Tensor) -> Tensor:
    """Each sample divided by its L2 norm (zero stays zero)."""
    return grad / per_sample_norm(grad).clamp_min(1e-30).to(grad.dtype)


def zero_mean(delta: Tensor) -> Tensor:
    """Subtract each sample's mean over all channels and pixels (ObsAtk's hyperplane)."""
    return delta - delta.mean(dim=(1, 2, 3), keepdim=True)


def zero_mean_in_box(delta: Tensor, low: Tensor, high: Tensor, iters: int = 60) -> Tensor:
    """Euclidean projection onto ``{mean = 0} & {low <= delta <= high}`` (``low <= 0 <= high``).

    By the KKT conditions the projection is ``clamp(delta - lam, low, high)`` for the one
    ``lam`` per sample that zeroes the mean; the mean is monotone in ``lam``, so bisect.
    """
    d = delta.double()
    lo_b, hi_b = low.double().expand_as(d), high.double().expand_as(d)
    b = d.shape[0]
    lam_lo = (d - hi_b).flatten(1).min(1).values.view(b, 1, 1, 1)  # mean >= 0 here
    lam_hi = (d - lo_b).flatten(1).max(1).values.view(b, 1, 1, 1)  # mean <= 0 here
    for _ in range(iters):
        lam = (lam_lo + lam_hi) / 2
        too_high = torch.minimum(torch.maximum(d - lam, lo_b), hi_b).mean((1, 2, 3), True) > 0
        lam_lo = torch.where(too_high, lam, lam_lo)
        lam_hi = torch.where(too_high, lam_hi, lam)
    out = torch.minimum(torch.maximum(d - (lam_lo + lam_hi) / 2, lo_b), hi_b)
    return out.to(delta.dtype)
