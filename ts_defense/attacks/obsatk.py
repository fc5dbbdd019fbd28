"""ObsAtk (Yan et al., IJCAI 2022, arXiv 2201.04397): zero-mean L2 PGD on the noisy input."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .constraints import project_l2, zero_mean, zero_mean_in_box
from .pgd_l2 import L2Attack


class ObsAtk(L2Attack):
    r"""Observation-based zero-mean attack: L2 PGD whose perturbation has zero mean per sample.

    Distance measure: L2, ``|delta|_2 <= eps * sqrt(N)`` (eps is the RMS per pixel, as in
    Yan et al.) and ``mean(delta) = 0`` over channels and pixels: a zero-mean perturbation
    cannot be undone by a brightness shift. Each step projects onto the zero-mean hyperplane,
    then onto the ball (with ``clip``: first exactly onto hyperplane and box, then scales into
    the ball, which keeps both).

    Arguments: as :class:`L2DenoisingPGD`, with eps (5/255) in place of rho.

    >>> adv = ObsAtk(Denoiser(dncnn, predicts="noise"), sigma=25 / 255, eps=5 / 255)(noisy, clean)
    """

    budget_unit = "rms"
    default_budget = 5 / 255

    def radius(self, noisy: Tensor) -> Tensor:
        """The per-sample L2 budget ``eps * sqrt(N)``, shape (B, 1, 1, 1)."""
        r = self.eps * math.sqrt(math.prod(noisy.shape[1:]))
        return torch.full((noisy.shape[0], 1, 1, 1), r, dtype=torch.float64, device=noisy.device)

    def project(self, delta: Tensor, noisy: Tensor) -> Tensor:
        if self.clip is None:
            flat = zero_mean(delta)
        else:
            flat = zero_mean_in_box(delta, self.clip[0] - noisy, self.clip[1] - noisy)
        return project_l2(flat, self.radius(noisy))
