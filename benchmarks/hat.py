"""Hybrid adversarial training (HAT, Yan et al. 2022), the comparison baseline of issue 5.

Not part of the library: a training loop for the benchmark only. Each step draws Gaussian
noisy patches; half of the batch is replaced by one-step ObsAtk (zero-mean L2, budget
``eps ~ U(0, eps_max)`` per step, clean target) crafted on the current weights; the MSE loss
covers both halves. Patches, seeds and the optimizer match ``ts_defense.fit``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ts_defense import Denoiser
from ts_defense.attacks import ObsAtk
from ts_defense.fit import PatchSampler


class HATStep:
    """One HAT update of ``denoiser`` with ``optimizer``; returns the batch loss."""

    def __init__(
        self,
        denoiser: Denoiser,
        optimizer: torch.optim.Optimizer,
        sigma: float,
        eps_max: float = 8 / 255,
        seed: int = 0,
    ) -> None:
        self.denoiser, self.optimizer, self.sigma, self.eps_max = (
            denoiser,
            optimizer,
            sigma,
            eps_max,
        )
        self.gen = torch.Generator().manual_seed(seed)
        # alpha=1: one step of the full radius (the library's default alpha scales with eps)
        self.attack = ObsAtk(
            denoiser, sigma, eps=eps_max, steps=1, alpha=1.0, random_start=False, seed=seed
        )

    def __call__(self, clean: Tensor) -> float:
        noisy = clean + self.sigma * torch.randn(clean.shape, generator=self.gen)
        half = clean.shape[0] // 2
        self.attack.eps = float(torch.rand((), generator=self.gen)) * self.eps_max
        if half and self.attack.eps > 0:
            adv = self.attack(noisy[:half], clean[:half])  # restores the model's train mode
            noisy = torch.cat([adv, noisy[half:]])
        loss = nn.functional.mse_loss(self.denoiser(noisy, self.sigma), clean)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def fit_hat(
    model: nn.Module,
    images: Tensor,
    *,
    sigma: float,
    steps: int,
    batch_size: int = 16,
    patch_size: int = 40,
    lr: float = 1e-3,
    seed: int = 0,
    eps_max: float = 8 / 255,
) -> Denoiser:
    """Train ``model`` (predicting the noise) in place with HAT; return it as a Denoiser."""
    den = Denoiser(model, predicts="noise")
    step = HATStep(den, torch.optim.Adam(model.parameters(), lr=lr), sigma, eps_max, seed)
    patches = PatchSampler(images, patch_size, torch.Generator().manual_seed(seed))
    model.train()
    for _ in range(steps):
        step(patches(batch_size))
    return Denoiser(model.eval(), predicts="noise")
