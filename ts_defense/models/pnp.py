"""Plug-and-play half-quadratic splitting (HQS) around any Gaussian denoiser (Zhang et al.
2017 "IRCNN", 2021 "DPIR"), specialised to denoising.

The MAP problem ``min_x |x - y|^2 / (2 sigma^2) + lam R(x)`` is split with ``z ~ x`` and solved by
alternating a closed-form data step and a denoiser as the prior's proximal map:

    x_k = (y + a_k z_{k-1}) / (1 + a_k),   a_k = lam sigma^2 / s_k^2,   z_k = D(x_k, s_k)

with ``z_0 = y`` and the denoiser's noise level ``s_k`` falling geometrically from
``sigma_max`` to the nominal sigma. The whole loop is differentiable, so attacks see through it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_positive
from .denoiser import Denoiser, per_sample_sigma


class PnPHQS(nn.Module):
    """``forward(noisy, sigma)`` -> the clean estimate after ``iterations`` HQS steps; wrap it
    as ``Denoiser(PnPHQS(den), predicts="clean", noise_level="argument")``."""

    def __init__(
        self,
        denoiser: Denoiser,
        iterations: int = 4,
        sigma_max: float = 50 / 255,
        lam: float = 0.23,
    ) -> None:
        super().__init__()
        if not isinstance(denoiser, Denoiser):
            raise TypeError(
                f"denoiser must be a ts_defense.Denoiser (it says what the model predicts and "
                f"how it takes sigma), got {type(denoiser).__name__}"
            )
        self.denoiser = denoiser
        self.iterations = int(check_positive("iterations", iterations, integer=True))
        self.sigma_max = check_positive("sigma_max", sigma_max)
        self.lam = check_positive("lam", lam)

    def levels(self, sigma: Tensor) -> Tensor:
        """The denoiser's noise levels, shape (iterations, B): geometric from ``sigma_max``
        (or sigma, if larger) down to sigma."""
        top = torch.clamp(sigma, min=self.sigma_max)
        t = torch.linspace(0, 1, self.iterations, dtype=sigma.dtype, device=sigma.device)
        t = t if self.iterations > 1 else torch.ones_like(t)
        return top ** (1 - t[:, None]) * sigma ** t[:, None]

    def forward(self, noisy: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = per_sample_sigma(sigma, noisy)
        z = noisy
        for s in self.levels(sigma):
            a = (self.lam * sigma**2 / s**2).view(-1, 1, 1, 1)
            x = (noisy + a * z) / (1 + a)
            z = self.denoiser(x, s)
        return z
