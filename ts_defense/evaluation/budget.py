"""Robustness of denoisers against attack budgets (layer 4): attacked PSNR per budget, and what
a denoiser that passed the perturbation through unchanged would score.

A perturbation that looks like image content largely passes through a denoiser that keeps
image content. ``pass_through`` is the reference for that — the PSNR of ``f(y) + delta``, what
a model that kept the perturbation untouched would score — and ``gain`` how much of the
perturbation the model keeps, ``|f(y + delta) - f(y)| / |delta|``. The reference is not a
bound: a model with gain below 1 scores above it (adversarially trained DnCNNs do); the gain
is the quantity a defense moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..attacks import budget_options, make_attack
from ..models.denoiser import Denoiser
from ..noise.sampler import TSConfig, TSSampler
from .metrics import Images, add_noise, as_batches, denoise, psnr, ssim


def attacked_metrics(
    denoiser: Denoiser,
    clean: Tensor,
    noisy: Tensor,
    attacked: Tensor,
    sigma: float | Tensor,
    with_ssim: bool = False,
    nonfinite: str = "raise",
) -> dict[str, list[float]]:
    """Per image of one batch: ``psnr`` of ``f(attacked)``, ``pass_through`` (the PSNR of
    ``f(noisy) + delta``), ``gain`` (``|f(attacked) - f(noisy)| / |delta|``, 1 where delta
    is 0) and, with ``with_ssim``, ``ssim`` of ``f(attacked)``. A NaN/Inf output is an error,
    or with ``nonfinite="nan"`` scores NaN (see :func:`~.metrics.psnr`)."""
    out, out_adv = denoise(denoiser, noisy, sigma), denoise(denoiser, attacked, sigma)
    delta = (attacked - noisy).flatten(1).norm(dim=1)
    moved = (out_adv - out).flatten(1).norm(dim=1)
    metrics = {
        "psnr": psnr(clean, out_adv, nonfinite=nonfinite),
        "pass_through": psnr(clean, out + (attacked - noisy), nonfinite=nonfinite),
        "gain": torch.where(delta > 0, moved / delta.clamp_min(1e-30), 1.0).tolist(),
    }
    if with_ssim:
        metrics["ssim"] = ssim(clean, out_adv, nonfinite=nonfinite)
    return metrics


def budget_curve(
    models: Mapping[str, Denoiser],
    clean: Images,
    sigma: float,
    budgets: Sequence[float],
    attack: str = "pgd",
    steps: int = 10,
    seed: int = 0,
    progress: bool = False,
    objective: str = "clean",
) -> dict[str, dict[str, list[float]]]:
    """White-box attack on each model at each budget, in the attack's own unit (``eps`` in image
    units; ``rho``, a share of the noise norm, for ``"pgd-l2"``). ``steps`` is ignored by
    one-step attacks (``"fgsm"``); ``objective`` is the attacks' (``"clean"``, ``"output"``,
    ``"noisy"``).

    Returns per model: ``budget``, mean ``psnr`` (attacked; budget 0 is the clean-noisy PSNR),
    ``pass_through`` and ``gain`` (mean over images), one entry per budget.
    """
    xs = as_batches(clean, "clean")
    ys = add_noise(xs, sigma, seed)
    curves: dict[str, dict[str, list[float]]] = {}
    with tqdm(
        total=len(models) * len(budgets), disable=not progress, desc=f"{attack} budgets"
    ) as bar:  # closed before an error propagates
        for name, den in models.items():
            curve: dict[str, list[float]] = {
                "budget": [],
                "psnr": [],
                "pass_through": [],
                "gain": [],
            }
            for eps in budgets:
                options = budget_options(attack, eps, steps)
                atk = (
                    make_attack(attack, den, sigma, **options, objective=objective, seed=seed)
                    if eps
                    else None
                )
                scores: dict[str, list[float]] = {"psnr": [], "pass_through": [], "gain": []}
                for x, y in zip(xs, ys, strict=True):
                    adv = atk(y, x) if atk is not None else y
                    for key, values in attacked_metrics(den, x, y, adv, sigma).items():
                        scores[key] += values
                curve["budget"].append(float(eps))
                for key, values in scores.items():
                    curve[key].append(float(np.mean(values)))
                bar.update()
            curves[name] = curve
    return curves


def family_psnr(
    models: Mapping[str, Denoiser], clean: Images, config: TSConfig, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mean PSNR of each model on inputs noised by each family of ``config`` alone (and by
    Gaussian noise): robustness to the nearby noise distributions TS trains on, no attack.
    Every model sees the same draws; the nominal sigma is passed to conditioned models."""
    xs = as_batches(clean, "clean")
    table: dict[str, dict[str, float]] = {name: {} for name in models}
    for family in config.family_names:
        sampler = TSSampler(config.only(family), seed=seed)
        draws = [sampler.draw(x) for x in xs]
        for name, den in models.items():
            scores = [
                v
                for x, d in zip(xs, draws, strict=True)
                for v in psnr(x, denoise(den, d.noisy, d.sigma))
            ]
            table[name][family] = float(np.mean(scores))
    return table
