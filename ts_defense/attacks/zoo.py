"""Named denoisers for attacks and transfer studies: the pretrained DnCNNs of ``shared/data``,
plug-and-play HQS around the blind DnCNN-B, and BM3D (a model-driven baseline: a transfer
target only, it has no gradient).

>>> den = load_model("dncnn-s-25")      # a ts_defense.Denoiser, in eval mode
>>> register_model("mine", lambda data_dir: Denoiser(my_net, predicts="clean"))
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data import shared_data_dir
from ..denoiser import Denoiser
from ..models import PnPHQS, load_dncnn

Builder = Callable[[Path | None], Denoiser]


class BM3D(nn.Module):
    """BM3D (Dabov et al. 2007, the ``bm3d`` package) as a module ``forward(noisy, sigma)``.

    Each sample and channel is denoised on the CPU with its nominal sigma. Not differentiable
    (``differentiable = False``): attacks refuse it as a surrogate.
    """

    differentiable = False
    block = 8  # bm3d's block size: smaller images are refused, exactly 8x8 crashes the process

    def forward(self, noisy: Tensor, sigma: Tensor) -> Tensor:
        import bm3d

        h, w = noisy.shape[-2:]
        if min(h, w) < self.block or (h, w) == (self.block, self.block):
            raise ValueError(
                f"BM3D needs noisy images larger than its {self.block}x{self.block} block, got "
                f"{h}x{w}"
            )

        out = torch.empty_like(noisy)
        arr = noisy.detach().cpu().double().numpy()
        for b in range(noisy.shape[0]):
            s = float(sigma[b] if sigma.numel() > 1 else sigma)
            for c in range(noisy.shape[1]):
                den = np.asarray(bm3d.bm3d(arr[b, c], sigma_psd=s), dtype=np.float64)
                out[b, c] = torch.from_numpy(den).to(out)
        return out


def _dncnn(filename: str, data_dir: Path | None) -> Denoiser:
    folder = data_dir if data_dir is not None else shared_data_dir()
    return Denoiser(load_dncnn(Path(folder) / "weights" / filename), predicts="noise").eval()


def _pnp_dncnn_b(data_dir: Path | None) -> Denoiser:
    hqs = PnPHQS(_dncnn("DnCNN-B.pth", data_dir))
    return Denoiser(hqs, predicts="clean", noise_level="argument").eval()


MODELS: dict[str, Builder] = {
    "dncnn-s-15": partial(_dncnn, "DnCNN-S-15.pth"),
    "dncnn-s-25": partial(_dncnn, "DnCNN-S-25.pth"),
    "dncnn-s-50": partial(_dncnn, "DnCNN-S-50.pth"),
    "dncnn-b": partial(_dncnn, "DnCNN-B.pth"),
    "kair-dncnn-25": partial(_dncnn, "kair_dncnn_25.pth"),
    "pnp-hqs-dncnn-b": _pnp_dncnn_b,
    "bm3d": lambda data_dir: Denoiser(BM3D(), predicts="clean", noise_level="argument"),
}


def register_model(name: str, builder: Builder) -> None:
    """Add a named model: ``builder(data_dir)`` returns a :class:`Denoiser`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {type(builder).__name__}")
    MODELS[name] = builder


def load_model(name: str, data_dir: str | Path | None = None) -> Denoiser:
    """The denoiser called ``name`` (see ``MODELS``); weights come from ``data_dir`` or the
    shared data folder (``$TS_DEFENSE_DATA``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](None if data_dir is None else Path(data_dir))
