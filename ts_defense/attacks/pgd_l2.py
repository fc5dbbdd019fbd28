"""L2-denoising-PGD (Ning et al. 2023): L2 PGD with a budget relative to the noise norm."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import DenoiserAttack
from .constraints import normalize_l2, project_l2


class L2Attack(DenoiserAttack):
    """L2 PGD on a per-sample ball of :meth:`radius`: a random start in the ball, steps along
    the normalised gradient, projection onto the ball (the shared part of the L2 attacks)."""

    norm = "L2"

    def radius(self, noisy: Tensor) -> Tensor:
        """The per-sample L2 budget, shape (B, 1, 1, 1)."""
        raise NotImplementedError

    def default_alpha(self) -> float:
        """A fraction of the radius per step: the radius crossed 2.5 times in all."""
        return 2.5 / self.steps

    def init_delta(self, noisy: Tensor) -> Tensor:
        direction = normalize_l2(self.normal(noisy))
        u = self.uniform(noisy[:, :1, :1, :1], 0.0, 1.0)
        return direction * u * self.radius(noisy).to(noisy.dtype)

    def step(self, delta: Tensor, grad: Tensor, state: dict) -> Tensor:
        if "radius" not in state:
            state["radius"] = self.radius(delta).to(delta.dtype)
        return delta + self.alpha * state["radius"] * normalize_l2(grad)

    def project(self, delta: Tensor, noisy: Tensor) -> Tensor:
        return project_l2(self.clip_delta(delta, noisy), self.radius(noisy))


class L2DenoisingPGD(L2Attack):
    r"""L2 PGD: normalised-gradient steps, random start in the ball, projection onto the ball.

    Distance measure: L2, ``|delta|_2 <= rho * sigma * sqrt(N)`` per sample (N = C*H*W): the
    budget is a fraction ``rho`` of the expected noise norm, so the attacked noise stays close
    to the Gaussian typical shell (its deviation moves by about ``rho`` at most to first order).

    Arguments: as :class:`DenoisingPGD`, with rho (0.1, stored as ``eps``) in place of eps;
    alpha is a fraction of the radius per step (default ``2.5 / steps``).

    >>> adv = L2DenoisingPGD(Denoiser(dncnn, predicts="noise"), sigma=25 / 255)(noisy, clean)
    """

    budget = "rho"
    budget_unit = "ratio"
    default_budget = 0.1

    def __init__(
        self, model: Any, sigma: Any, rho: float | None = None, *args: Any, **options: Any
    ) -> None:
        """The base's arguments (model, sigma, steps, ...), the budget under its own name."""
        super().__init__(model, sigma, rho, *args, **options)

    def radius(self, noisy: Tensor) -> Tensor:
        """The per-sample L2 budget ``rho * sigma * sqrt(N)``, shape (B, 1, 1, 1)."""
        sigma = torch.as_tensor(self.sigma, dtype=torch.float64, device=noisy.device)
        n = math.prod(noisy.shape[1:])
        return (
            (self.eps * sigma * math.sqrt(n)).reshape(-1, 1, 1, 1).expand(noisy.shape[0], 1, 1, 1)
        )
