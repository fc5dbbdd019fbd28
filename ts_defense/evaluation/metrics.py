"""Evaluation of attacks on denoisers: PSNR and SSIM (scikit-image) per image and mean, clean
versus attacked, and the worst case per image over a set of attacks (the strongest attack
counts, as in robustness benchmarks for classifiers).

Denoised outputs are clamped to ``[0, data_range]`` before the metrics, as in the DnCNN
evaluations; inputs are never clamped. PSNR is capped at :data:`PSNR_CEILING` (100 dB, an error
of 1e-5 of the range): a perfect estimate (a saturated image, an identity on a clean input)
scores the ceiling, never ``inf``, so that means stay finite and reports stay valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

from .._checks import check_choice, check_images, check_positive
from ..attacks.base import DenoiserAttack, preserved_modes
from ..models.denoiser import Denoiser
from ..noise.sampler import TSSampler
from ..seeding import stream_seed

Images = Tensor | Sequence[Tensor]
SSIM_WINDOW = 7  # skimage's default window
PSNR_CEILING = 100.0  # dB: what an exact estimate scores (the MSE floor is 1e-10 of range**2)


def as_batches(images: Images, name: str = "images") -> list[Tensor]:
    """A (B, C, H, W) tensor is one batch; a sequence holds batches of any sizes."""
    batches = [images] if isinstance(images, Tensor) else list(images)
    if not batches:
        raise ValueError(f"{name} is empty")
    return [check_images(b, name) for b in batches]


def add_noise(clean: Images, sigma: float, seed: int = 0) -> list[Tensor]:
    """Gaussian-noisy copies ``x + sigma * n`` of every batch, one seeded noise stream."""
    sampler = TSSampler(sigma=sigma, p_ood=0.0, seed=stream_seed(seed, "test-noise"))
    return [sampler.draw(b).noisy for b in as_batches(clean, "clean")]


@torch.no_grad()
def denoise(denoiser: Denoiser, noisy: Tensor, sigma: float | Tensor) -> Tensor:
    """``denoiser(noisy, sigma)`` in eval mode (its modes restored after), without gradients."""
    with preserved_modes(denoiser):
        denoiser.eval()
        return denoiser(noisy, sigma)


def _per_image(
    metric: Callable, clean: Tensor, est: Tensor, data_range: float, nonfinite: str = "raise"
) -> list[float]:
    check_choice("nonfinite", nonfinite, ("raise", "nan"))
    check_images(clean, "clean")
    check_images(est, "estimate", finite=nonfinite == "raise")
    check_positive("data_range", data_range)
    if clean.shape != est.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and estimate {tuple(est.shape)} differ")
    x = clean.detach().cpu().double().numpy()
    est = est.detach().cpu().double()
    finite = torch.isfinite(est).flatten(1).all(1).tolist()
    y = est.nan_to_num(0.0, 0.0, 0.0).clamp(0, data_range).numpy()
    return [
        float(metric(a, b, data_range=data_range)) if ok else math.nan
        for a, b, ok in zip(x, y, finite, strict=True)
    ]


def _psnr(clean: np.ndarray, estimate: np.ndarray, data_range: float) -> float:
    """skimage's ``peak_signal_noise_ratio``, capped at :data:`PSNR_CEILING`."""
    mse = np.mean((clean - estimate) ** 2, dtype=np.float64)
    floor = data_range**2 * 10 ** (-PSNR_CEILING / 10)
    return float(min(10 * np.log10(data_range**2 / max(mse, floor)), PSNR_CEILING))


def psnr(
    clean: Tensor, estimate: Tensor, data_range: float = 1.0, nonfinite: str = "raise"
) -> list[float]:
    """PSNR in dB of each image (as skimage computes it), at most :data:`PSNR_CEILING`; the
    estimate is clamped to ``[0, data_range]``. A NaN/Inf estimate is an error, or with
    ``nonfinite="nan"`` (for a caller that reports those images by name) scores NaN."""
    return _per_image(_psnr, clean, estimate, data_range, nonfinite)


def ssim(
    clean: Tensor, estimate: Tensor, data_range: float = 1.0, nonfinite: str = "raise"
) -> list[float]:
    """SSIM of each image (skimage, channels as the first axis of each image); ``nonfinite``
    as :func:`psnr`'s."""

    if min(check_images(clean, "clean").shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got clean "
            f"{tuple(clean.shape)}"
        )

    def one(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
        if a.shape[0] == 1:
            return structural_similarity(a[0], b[0], data_range=data_range)
        return structural_similarity(a, b, data_range=data_range, channel_axis=0)

    return _per_image(one, clean, estimate, data_range, nonfinite)


@dataclass
class AttackEvaluation:
    """Per-image metrics of one attack on one denoiser (lists in image order)."""

    name: str
    psnr_clean: list[float] = field(default_factory=list)
    psnr_attacked: list[float] = field(default_factory=list)
    ssim_clean: list[float] = field(default_factory=list)
    ssim_attacked: list[float] = field(default_factory=list)
    linf: list[float] = field(default_factory=list)
    l2: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Means over images, and the PSNR/SSIM drop from clean to attacked."""
        m = {k: float(np.mean(v)) for k, v in asdict(self).items() if k != "name"}
        m["psnr_drop"] = m["psnr_clean"] - m["psnr_attacked"]
        m["ssim_drop"] = m["ssim_clean"] - m["ssim_attacked"]
        return m

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.summary()}


def evaluate_attack(
    denoiser: Denoiser,
    attack: DenoiserAttack,
    clean: Images,
    noisy: Images,
    sigma: float | Tensor,
    name: str | None = None,
    data_range: float = 1.0,
) -> tuple[AttackEvaluation, list[Tensor]]:
    """Attack each noisy batch (reference: its clean batch); metrics of ``denoiser`` on both.

    Returns the evaluation and the attacked inputs (one tensor per batch).
    """
    check_positive("data_range", data_range)
    if not isinstance(attack, DenoiserAttack):
        raise TypeError(f"attack must be a DenoiserAttack, got {type(attack).__name__}")
    xs, ys = as_batches(clean, "clean"), as_batches(noisy, "noisy")
    if len(xs) != len(ys):
        raise ValueError(f"clean holds {len(xs)} batches, noisy {len(ys)}")
    ev = AttackEvaluation(name or attack.attack)
    attacked = []
    for x, y in zip(xs, ys, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"clean {tuple(x.shape)} and noisy {tuple(y.shape)} differ in shape")
        adv = attack(y, x).to(y.device)
        attacked.append(adv)
        delta = adv - y
        ev.linf += delta.flatten(1).abs().max(1).values.tolist()
        ev.l2 += delta.flatten(1).norm(dim=1).tolist()
        out_clean, out_adv = denoise(denoiser, y, sigma), denoise(denoiser, adv, sigma)
        ev.psnr_clean += psnr(x, out_clean, data_range)
        ev.psnr_attacked += psnr(x, out_adv, data_range)
        ev.ssim_clean += ssim(x, out_clean, data_range)
        ev.ssim_attacked += ssim(x, out_adv, data_range)
    return ev, attacked


def worst_case(evaluations: Mapping[str, AttackEvaluation]) -> dict:
    """Per image, the attack with the lowest attacked PSNR; its PSNR/SSIM and their means."""
    if not isinstance(evaluations, Mapping) or not evaluations:
        raise ValueError("evaluations must be a non-empty mapping of name -> AttackEvaluation")
    names = list(evaluations)
    lengths = {len(evaluations[n].psnr_attacked) for n in names}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"evaluations must cover the same images, at least one: {lengths}")
    table = np.array([evaluations[n].psnr_attacked for n in names])
    idx = table.argmin(0)
    worst = [evaluations[names[i]] for i in idx]
    psnrs = [float(table[i, j]) for j, i in enumerate(idx)]
    ssims = [ev.ssim_attacked[j] for j, ev in enumerate(worst)]
    clean = evaluations[names[0]].psnr_clean
    return {
        "attack": [names[i] for i in idx],
        "psnr_attacked": psnrs,
        "ssim_attacked": ssims,
        "mean": {
            "psnr_clean": float(np.mean(clean)),
            "psnr_attacked": float(np.mean(psnrs)),
            "psnr_drop": float(np.mean(clean) - np.mean(psnrs)),
            "ssim_attacked": float(np.mean(ssims)),
        },
    }
