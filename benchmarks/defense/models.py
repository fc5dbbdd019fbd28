"""The benchmark's models: each variant trained through the library's ``fit`` (HAT through its
``hat`` recipe), the architectures of the zoo, and the saved weights loaded back under the
names of the transfer records."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn

from ts_defense import Denoiser, fit
from ts_defense._io import safe_load
from ts_defense.data import shared_data_dir
from ts_defense.models import PnPHQS, ProxGradUnfolded, load_dncnn
from ts_defense.models.zoo import load_model

from .config import HAT, HAT_RECIPE, SIGMA, VARIANTS, Sizes


def fit_variant(net: nn.Module, name: str, images: torch.Tensor, **options) -> Denoiser:
    """Train ``net`` (predicting the noise) with variant ``name`` through ``fit``; HAT is the
    library's ``hat`` recipe with ObsAtk's zero-mean L2 threat, as in Yan et al."""
    variant = VARIANTS[name]
    plan = HAT_RECIPE if variant == HAT else {"config": {"sigma": SIGMA, **variant}}
    fit(net, images, predicts="noise", progress=False, **plan, **options)
    return Denoiser(net.eval(), predicts="noise")


def train_scratch(name: str, seed: int, sizes: Sizes, images: torch.Tensor) -> Denoiser:
    """One small DnCNN trained from scratch with variant ``name``."""
    torch.manual_seed(seed)
    return fit_variant(sizes.build(), name, images, seed=seed, **sizes.fit_options())


def train_finetune(name: str, seed: int, sizes: Sizes, images: torch.Tensor) -> Denoiser:
    """The pretrained DnCNN-S-25 fine-tuned with variant ``name`` (batch norm in train mode)."""
    net = load_dncnn(shared_data_dir() / "weights" / "DnCNN-S-25.pth")
    return fit_variant(net, name, images, steps=sizes.finetune_steps, seed=seed,
                       batch_size=sizes.finetune_batch, patch_size=sizes.patch_size,
                       lr=sizes.finetune_lr)  # fmt: skip


# The heterogeneous zoo: name -> (build(), predicts, noise_level, training sigma). Sizes fit a
# 2-core CPU: 1000 steps of batch 16 take 1-6 minutes each (`--part zoo`).
def _drunet() -> nn.Module:
    from spandrel.architectures.DRUNet import DRUNet

    return DRUNet(in_nc=2, out_nc=1, nc=[16, 32, 64, 64], nb=1)


def _swinir() -> nn.Module:
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(img_size=40, in_chans=1, embed_dim=24, depths=[2, 2], num_heads=[2, 2],
                  window_size=8, mlp_ratio=2.0, drop_path_rate=0.0)  # fmt: skip


ZOO = {  # DRUNet is trained blind (sigma 10-50): the PnP-HQS schedule queries 50 down to 25
    "drunet": (_drunet, "clean", "map", (10 / 255, 50 / 255)),
    "swinir": (_swinir, "clean", "none", SIGMA),
    "unfolded": (partial(ProxGradUnfolded, 1, 3, 4, 32), "clean", "none", SIGMA),
}
PNP_ITERATIONS = 4


def train_zoo(arch: str, name: str, seed: int, sizes: Sizes, images: torch.Tensor) -> Denoiser:
    """Architecture ``arch`` of the zoo trained with the TS options of variant ``name`` at the
    architecture's sigma (a range for blind models)."""
    if VARIANTS[name] == HAT:
        raise ValueError("--part zoo trains TS variants only (HAT: --part scratch)")
    build, predicts, noise_level, sigma = ZOO[arch]
    torch.manual_seed(seed)
    net = build()
    fit(net, images, config={**VARIANTS[name], "sigma": sigma}, predicts=predicts,
        noise_level=noise_level, progress=False, seed=seed, **sizes.fit_options())  # fmt: skip
    return Denoiser(net.eval(), predicts=predicts, noise_level=noise_level)


def load_zoo(arch: str, path: Path) -> Denoiser:
    """Saved weights of the zoo's architecture ``arch``."""
    build, predicts, noise_level, _ = ZOO[arch]
    net = build()
    net.load_state_dict(safe_load(path, "model weights"))
    return Denoiser(net.eval(), predicts=predicts, noise_level=noise_level)


def pnp(drunet: Denoiser) -> Denoiser:
    """Plug-and-play HQS around a (blind) DRUNet."""
    hqs = PnPHQS(drunet, iterations=PNP_ITERATIONS)
    return Denoiser(hqs, predicts="clean", noise_level="argument")


def load_small(path: Path, sizes: Sizes) -> Denoiser:
    """Saved weights of a small DnCNN trained from scratch."""
    net = sizes.build()
    net.load_state_dict(safe_load(path, "model weights"))
    return Denoiser(net.eval(), predicts="noise")


def load_finetuned(path: Path) -> Denoiser:
    """Saved weights of a fine-tuned DnCNN-S-25."""
    net = load_dncnn(shared_data_dir() / "weights" / "DnCNN-S-25.pth")
    net.load_state_dict(safe_load(path, "model weights"))
    return Denoiser(net.eval(), predicts="noise")


def _target_name(path: Path, prefix: str = "") -> str:
    """``scratch-ts-s0.pt`` -> ``ts``; other seeds keep their suffix (``ts-s1``)."""
    return path.stem.removeprefix(prefix).removesuffix("-s0")


def saved_models(models_dir: Path, sizes: Sizes, zoo: bool = True) -> dict[str, Denoiser]:
    """Every saved scratch and fine-tuned DnCNN (each seed: a spread per variant), the two
    pretrained DnCNN-25s and, with ``zoo``, the seed-0 zoo models with PnP-HQS around each
    DRUNet — under the names of the transfer records."""
    models: dict[str, Denoiser] = {}
    for path in sorted(models_dir.glob("scratch*.pt")):
        models[_target_name(path, "scratch-")] = load_small(path, sizes)
    for name in ("dncnn-s-25", "kair-dncnn-25"):
        models[name] = load_model(name)
    for path in sorted(models_dir.glob("finetune*.pt")):
        models[_target_name(path)] = load_finetuned(path)
    for path in sorted(models_dir.glob("zoo-*-s0.pt")) if zoo else ():
        arch, variant = path.stem.removeprefix("zoo-").removesuffix("-s0").split("-", 1)
        suffix = "" if variant == "gaussian" else f"-{variant}"
        models[arch + suffix] = load_zoo(arch, path)
        if arch == "drunet":
            models["pnp-hqs" + suffix] = pnp(models[arch + suffix])
    return models
