"""An unfolded denoiser: a few unrolled proximal-gradient steps with learned proximal maps.

For denoising the forward operator is the identity, so the gradient step on the data term
``|x - y|^2 / 2`` relaxes the estimate towards the observation; each step's proximal map is a
small residual CNN (Gregor & LeCun 2010; Zhang et al. 2020, "deep unfolding"):

    x_0 = y,   x_{k+1} = prox_k(x_k - eta_k (x_k - y)),   prox_k(v) = v - cnn_k(v)

with ``eta_k`` in (0, 1) learned. It returns the clean estimate (``predicts="clean"``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_network_size, check_positive
from .dncnn import DnCNN


class ProxGradUnfolded(nn.Module):
    """``steps`` unrolled proximal-gradient iterations, a ``depth`` x ``features`` DnCNN
    (no batch norm) as the proximal map of each."""

    def __init__(
        self, channels: int = 1, steps: int = 3, depth: int = 4, features: int = 32
    ) -> None:
        super().__init__()
        check_positive("steps", steps, integer=True)
        for name, value in (("channels", channels), ("depth", depth), ("features", features)):
            check_positive(name, value, integer=True)
        layers, weights = DnCNN.size(channels, depth, features)
        check_network_size(
            f"ProxGradUnfolded(steps={steps}, depth={depth}, features={features})",
            steps * layers,
            steps * weights,
        )
        self.prox = nn.ModuleList(
            DnCNN(channels, depth, features, batch_norm=False) for _ in range(steps)
        )
        # eta = sigmoid(logit): starts at 0.5, stays a convex combination of estimate and data
        self.eta_logit = nn.Parameter(torch.zeros(steps))

    def forward(self, noisy: Tensor) -> Tensor:
        x = noisy
        for prox, eta in zip(self.prox, torch.sigmoid(self.eta_logit), strict=True):
            v = x - eta * (x - noisy)
            x = v - prox(v)
        return x
