"""Named denoisers for attacks and transfer studies: the public pretrained DnCNNs,
plug-and-play HQS around the blind DnCNN-B, and BM3D (a model-driven baseline: a transfer
target only, it has no gradient).

Pretrained weights are never downloaded: ``SOURCES`` says where each file comes from (its
public URL) and pins its SHA-256. The two MIT-licensed sigma-25 files (``dncnn-s-25``,
``kair-dncnn-25``) ship inside the package (``models/weights``, with their licence notices in
``NOTICE.md``); :func:`weights_file` looks for the others in the given data folder, the cache
folder (``$TS_DEFENSE_CACHE``, else ``~/.cache/ts-defense``) and the shared data folder
(``$TS_DEFENSE_DATA``), refuses a file whose SHA-256 differs, and for a missing file names the
URL and the folder to put it in.

>>> den = load_model("dncnn-s-25")      # a ts_defense.Denoiser, in eval mode
>>> register_model("mine", lambda data_dir: Denoiser(my_net, predicts="clean"))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import optional_import
from .._registry import Registry
from ..data import shared_data_dir
from .denoiser import Denoiser
from .dncnn import load_dncnn
from .pnp import PnPHQS

Builder = Callable[[Path | None], Denoiser]
CACHE_ENV = "TS_DEFENSE_CACHE"


@dataclass(frozen=True)
class WeightsSource:
    """Where a pretrained weights file comes from: its public URL and its SHA-256."""

    url: str
    sha256: str


# DenoisingSimilitude by Yao Li (MIT) redistributes DnCNN-PyTorch's (SaoYan) trained files
_SIMILITUDE = (
    "https://github.com/yaoli90/DenoisingSimilitude/raw/76368f7/DnCNN_denoising_PGD/logs/{}/net.pth"
)
BUNDLED_WEIGHTS = Path(__file__).parent / "weights"  # shipped in the wheel: see NOTICE.md there
SOURCES: dict[str, WeightsSource] = {
    # logs/<name>/net.pth, saved here as <name>.pth
    "DnCNN-S-15.pth": WeightsSource(
        _SIMILITUDE.format("DnCNN-S-15"),
        "6eaf743d87f977693ad2ab1e35b0d09c3c8bd87fb74b8ed2d659918bdba2cbd9",
    ),
    "DnCNN-S-25.pth": WeightsSource(
        _SIMILITUDE.format("DnCNN-S-25"),
        "65f0f0ea16d667274a75a7eec19950b22e752007c8a3147831b2d5441bd62920",
    ),
    "DnCNN-S-50.pth": WeightsSource(
        _SIMILITUDE.format("DnCNN-S-50"),
        "dfdd4d9b10e50d466a48f15f4aaa0ba0ccfa4b71fc80b5ccbcecddce8e69a50e",
    ),
    "DnCNN-B.pth": WeightsSource(
        _SIMILITUDE.format("DnCNN-B"),
        "dc25406eff05b9f4d1b30084a7a774e458e963f67d4a0ad1d2d9efbef4325b39",
    ),
    # KAIR's model zoo by Kai Zhang (MIT): release v1.0, dncnn_25.pth
    "kair_dncnn_25.pth": WeightsSource(
        "https://github.com/cszn/KAIR/releases/download/v1.0/dncnn_25.pth",
        "0451a70de9b672ae037270498fbb1c17a1c1c4403785df586ff65df5b858e5b0",
    ),
}


def cache_dir() -> Path:
    """``$TS_DEFENSE_CACHE``, else ``~/.cache/ts-defense`` (it need not exist)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ts-defense")


def sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_file(filename: str, data_dir: Path | None = None) -> Path:
    """The checked path of a file of ``SOURCES``: the first of ``data_dir/weights``, the
    package's own ``weights/`` (the two files it ships), the cache folder and the shared data
    folder's ``weights/`` that holds it.

    A missing file is a FileNotFoundError naming the URL to get it from and where to put it; a
    file whose SHA-256 differs from the pinned one is refused (ValueError)."""
    source = SOURCES[filename]
    folders = [BUNDLED_WEIGHTS, cache_dir(), shared_data_dir(must_exist=False) / "weights"]
    if data_dir is not None:
        folders.insert(0, Path(data_dir) / "weights")
    for folder in folders:
        path = folder / filename
        if path.is_file():
            found = sha256(path)
            if found != source.sha256:
                raise ValueError(
                    f"refusing {path}: its SHA-256 is {found}, not {source.sha256} (the file "
                    f"published at {source.url}); replace it with that file"
                )
            return path
    raise FileNotFoundError(
        f"weights file {filename} not found (looked in {', '.join(map(str, folders))}): get it "
        f"from {source.url} and save it as {folders[-2] / filename} (or set ${CACHE_ENV})"
    )


def _bm3d_package() -> ModuleType:
    return optional_import("bm3d", "bm3d", "the BM3D model")


class BM3D(nn.Module):
    """BM3D (Dabov et al. 2007, the ``bm3d`` package) as a module ``forward(noisy, sigma)``.

    Each sample and channel is denoised on the CPU with its nominal sigma. Not differentiable
    (``differentiable = False``): attacks refuse it as a surrogate.
    """

    differentiable = False
    block = 8  # bm3d's block size: smaller images are refused, exactly 8x8 crashes the process

    def __init__(self) -> None:
        super().__init__()
        _bm3d_package()  # a missing package fails when the model is built, not mid-evaluation

    def forward(self, noisy: Tensor, sigma: Tensor) -> Tensor:
        h, w = noisy.shape[-2:]
        if min(h, w) < self.block or (h, w) == (self.block, self.block):
            raise ValueError(
                f"BM3D needs noisy images larger than its {self.block}x{self.block} block, got "
                f"{h}x{w}"
            )

        package = _bm3d_package()
        out = torch.empty_like(noisy)
        arr = noisy.detach().cpu().double().numpy()
        for b in range(noisy.shape[0]):
            s = float(sigma[b] if sigma.numel() > 1 else sigma)
            for c in range(noisy.shape[1]):
                den = np.asarray(package.bm3d(arr[b, c], sigma_psd=s), dtype=np.float64)
                out[b, c] = torch.from_numpy(den).to(out)
        return out


def _dncnn(filename: str, data_dir: Path | None) -> Denoiser:
    return Denoiser(load_dncnn(weights_file(filename, data_dir)), predicts="noise").eval()


def _pnp_dncnn_b(data_dir: Path | None) -> Denoiser:
    hqs = PnPHQS(_dncnn("DnCNN-B.pth", data_dir))
    return Denoiser(hqs, predicts="clean", noise_level="argument").eval()


DNCNN_FILES = {
    "dncnn-s-15": "DnCNN-S-15.pth",
    "dncnn-s-25": "DnCNN-S-25.pth",
    "dncnn-s-50": "DnCNN-S-50.pth",
    "dncnn-b": "DnCNN-B.pth",
    "kair-dncnn-25": "kair_dncnn_25.pth",
}
WEIGHTS_OF = {**DNCNN_FILES, "pnp-hqs-dncnn-b": "DnCNN-B.pth"}  # model name -> file of SOURCES
MODELS: Registry[Builder] = Registry(
    "model",
    {
        **{name: partial(_dncnn, filename) for name, filename in DNCNN_FILES.items()},
        "pnp-hqs-dncnn-b": _pnp_dncnn_b,
        "bm3d": lambda data_dir: Denoiser(BM3D(), predicts="clean", noise_level="argument"),
    },
)


def model_source(name: str) -> str:
    """Where the weights of a named model come from: URL and SHA-256 (or 'no weights')."""
    if name not in WEIGHTS_OF:
        return "no weights"
    filename = WEIGHTS_OF[name]
    return f"{filename} from {SOURCES[filename].url} (SHA-256 {SOURCES[filename].sha256})"


def register_model(name: str, builder: Builder) -> None:
    """Add (or replace) a named model: ``builder(data_dir)`` returns a :class:`Denoiser`."""
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {type(builder).__name__}")
    MODELS.register(name, builder, replace=True)


def load_model(name: str, data_dir: str | Path | None = None) -> Denoiser:
    """The denoiser called ``name`` (see ``MODELS``); weights come from ``data_dir``, the cache
    folder or the shared data folder (see :func:`weights_file`)."""
    return MODELS.lookup(name)(None if data_dir is None else Path(data_dir))
