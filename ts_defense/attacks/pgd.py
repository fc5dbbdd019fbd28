"""Denoising-PGD (Ning et al. 2023, arXiv 2306.16050): L-inf PGD on the noisy input."""

from __future__ import annotations

from torch import Tensor

from .base import DenoiserAttack
from .constraints import project_linf


class DenoisingPGD(DenoiserAttack):
    r"""Denoising-PGD: sign steps, uniform random start, projection onto the L-inf ball.

    Distance measure: L-inf, ``|delta|_inf <= eps`` (in image units: 8/255 for [0, 1] images).

    Arguments: model (a :class:`Denoiser` or a sequence of them), sigma (nominal noise level),
    eps (8/255), steps (10), alpha (step size, default ``2.5 * eps / steps``), objective
    (``"clean"``), loss (``"mse"``), clip (None), random_start (True), seed (0).

    Shapes: noisy and reference (B, C, H, W); returns the attacked noisy input (B, C, H, W).

    >>> attack = DenoisingPGD(Denoiser(dncnn, predicts="noise"), sigma=25 / 255)
    >>> adv = attack(noisy, clean)
    """

    def init_delta(self, noisy: Tensor) -> Tensor:
        return self.uniform(noisy, -self.eps, self.eps)

    def step(self, delta: Tensor, grad: Tensor, state: dict) -> Tensor:
        return delta + self.alpha * grad.sign()

    def project(self, delta: Tensor, noisy: Tensor) -> Tensor:
        return self.clip_delta(project_linf(delta, self.eps), noisy)
