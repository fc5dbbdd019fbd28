"""DnCNN (Zhang et al. 2017) in the two layouts of ``../shared/data/weights`` (the DnCNN-PyTorch
layout, with batch norm, and the KAIR layout, without).

The network returns the *noise residual*; wrap it in :class:`ts_defense.Denoiser` with
``predicts="noise"`` to get the clean estimate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._checks import check_network_size, check_positive
from .._io import safe_load


class DnCNN(nn.Module):
    """``depth`` 3x3 convolutions with ReLU; batch norm in the middle layers (DnCNN-PyTorch
    layout, convolutions without bias) or none (KAIR layout, convolutions with bias)."""

    def __init__(
        self, channels: int = 1, depth: int = 17, features: int = 64, batch_norm: bool = True
    ) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("depth", depth), ("features", features)):
            check_positive(name, value, integer=True)
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        check_network_size(
            f"DnCNN(channels={channels}, depth={depth}, features={features})",
            *self.size(channels, depth, features),
        )
        bias = not batch_norm
        layers: list[nn.Module] = [  # with batch norm no conv has a bias, the first included
            nn.Conv2d(channels, features, 3, padding=1, bias=bias),
            nn.ReLU(inplace=True),
        ]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(features, channels, 3, padding=1, bias=bias))
        self.layers = nn.Sequential(*layers)

    @staticmethod
    def size(channels: int, depth: int, features: int) -> tuple[int, int]:
        """``(layers, weights)`` of a DnCNN: its convolutions and their weights (about)."""
        return depth, 9 * features * (2 * channels + (depth - 2) * features)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """The estimated noise (residual); the clean estimate is ``noisy - forward(noisy)``."""
        return self.layers(noisy)


_PREFIXES = re.compile(r"^(module\.)?(dncnn|model)\.")


@dataclass(frozen=True)
class SmallDnCNN:
    """A small residual DnCNN without batch norm and how long ``fit`` trains it from scratch:
    the toy scale of the demo and of the CPU benchmarks (a few minutes on two cores)."""

    steps: int = 1000
    depth: int = 8
    features: int = 32
    batch_size: int = 16
    patch_size: int = 40

    def build(self, channels: int = 1) -> DnCNN:
        """A freshly initialised network of this size (seed torch first for repeatable
        weights)."""
        return DnCNN(channels, self.depth, self.features, batch_norm=False)

    def fit_options(self) -> dict[str, int]:
        """``steps``, ``batch_size`` and ``patch_size`` as keywords of ``fit``."""
        return {"steps": self.steps, "batch_size": self.batch_size, "patch_size": self.patch_size}


def load_dncnn(path: str | Path | Mapping[str, torch.Tensor]) -> DnCNN:
    """Load a pretrained DnCNN state dict (DnCNN-PyTorch or KAIR keys) with ``weights_only=True``
    (or take one already loaded).

    Depth, width, channels and batch norm are read off the keys; the model is in eval mode.
    """
    state = path if isinstance(path, Mapping) else safe_load(path, "weights file", finite=True)
    path = "the state dict" if isinstance(path, Mapping) else path
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} does not hold a state dict")
    renamed = {_PREFIXES.sub("layers.", k): v for k, v in state.items()}
    if any(not k.startswith("layers.") for k in renamed):
        raise ValueError(f"{path}: keys {list(state)[:3]}... are not DnCNN keys")
    convs = sorted(
        (int(k.split(".")[1]), v)
        for k, v in renamed.items()
        if k.endswith("weight") and v.dim() == 4
    )
    batch_norm = any(k.endswith("running_mean") for k in renamed)
    first = convs[0][1]
    model = DnCNN(first.shape[1], len(convs), first.shape[0], batch_norm)
    model.load_state_dict(renamed)
    return model.eval()
