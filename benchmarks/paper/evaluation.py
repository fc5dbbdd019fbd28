"""One denoiser on the test set: clean, white-box, reference-protocol and transferred attacks.

Every model sees the same test noise (seed 0) and the same attack seeds, so differences between
models are paired. For each white-box PGD budget the row also holds the pass-through PSNR (of
``f(y) + delta``: what a model that let the perturbation through untouched would score) and the
gain ``|f(y + delta) - f(y)| / |delta|``; the drop splits into the pass-through part (clean minus
pass-through: a reference, not a bound) and the rest (pass-through minus attacked). With a
``worst_case_steps`` plan, the row also holds the parameter-free worst case (``--attack
auto``'s ensemble: APGD-L-inf, APGD on the noisy objective, zero-mean L2 APGD, transfer from the
public models).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

from ts_defense import Denoiser
from ts_defense.attacks import DenoisingPGD, ObsAtk
from ts_defense.data import centre_crop
from ts_defense.evaluation.auto import Transferred, auto_attack, auto_members, craft_transfer
from ts_defense.evaluation.metrics import add_noise, denoise, psnr, ssim

from .plan import SIGMA, Plan

Batches = list[Tensor]


def test_batches(images: list[Tensor], plan: Plan, device: torch.device) -> tuple[Batches, Batches]:
    """Clean and noisy test batches: images of one shape together, ``plan.chunk`` at most."""
    groups: dict[tuple, list[Tensor]] = defaultdict(list)
    for img in images[: plan.test_images]:
        img = img if plan.test_crop is None else centre_crop(img, plan.test_crop)
        groups[tuple(img.shape)].append(img)
    clean = [
        torch.cat(g[i : i + plan.chunk]).to(device)
        for g in groups.values()
        for i in range(0, len(g), plan.chunk)
    ]
    return clean, add_noise(clean, SIGMA, seed=0)


def craft(attack: DenoisingPGD, clean: Batches, noisy: Batches) -> Batches:
    """The attacked input of every batch."""
    return [attack(y, x) for x, y in zip(clean, noisy, strict=True)]


def transfer_inputs(
    sources: dict[str, Denoiser], clean: Batches, noisy: Batches, plan: Plan
) -> dict[str, Batches]:
    """PGD at the largest budget crafted once on each source model (clean target)."""
    eps = max(plan.budgets) / 255
    return {
        name: craft(DenoisingPGD(den, SIGMA, eps=eps, steps=plan.attack_steps), clean, noisy)
        for name, den in sources.items()
    }


def worst_case_members(plan: Plan) -> dict:
    """The ensemble's white-box members (``--attack auto``'s, at the plan's iterations)."""
    return auto_members(SIGMA, eps=max(plan.budgets) / 255, steps=plan.worst_case_steps, seed=0)


def worst_case_transfer(sources: dict[str, Denoiser], clean: Batches, plan: Plan) -> Transferred:
    """The ensemble's transfer inputs: its first member crafted once on each source."""
    first = next(iter(worst_case_members(plan).values()))
    return craft_transfer(sources, clean, SIGMA, first, seed=0)


def _mean_psnr(den: Denoiser, clean: Batches, inputs: Batches) -> float:
    pairs = zip(clean, inputs, strict=True)
    return float(np.mean([v for x, y in pairs for v in psnr(x, denoise(den, y, SIGMA))]))


def evaluate(
    den: Denoiser,
    clean: Batches,
    noisy: Batches,
    transfer: dict[str, Batches],
    plan: Plan,
    worst: Transferred | None = None,
) -> dict:
    """Mean metrics over the test images (PSNR in dB, budgets in the keys in 1/255); with
    ``worst`` (from :func:`worst_case_transfer`), ``"auto"`` is the worst case over the
    ensemble, ``"auto_wins"`` and ``"auto_members"`` its wins and member means."""
    outs = [denoise(den, y, SIGMA) for y in noisy]
    row = {
        "clean": float(np.mean([v for x, o in zip(clean, outs, strict=True) for v in psnr(x, o)])),
        "ssim": float(np.mean([v for x, o in zip(clean, outs, strict=True) for v in ssim(x, o)])),
    }
    for budget in plan.budgets:
        attack = DenoisingPGD(den, SIGMA, eps=budget / 255, steps=plan.attack_steps)
        attacked, passed, gains = [], [], []
        for x, y, out in zip(clean, noisy, outs, strict=True):
            adv = attack(y, x)
            delta = adv - y
            out_adv = denoise(den, adv, SIGMA)
            attacked += psnr(x, out_adv)
            passed += psnr(x, out + delta)
            moved = (out_adv - out).flatten(1).norm(dim=1)
            gains += (moved / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).tolist()
        row[f"pgd{budget}"] = float(np.mean(attacked))
        row[f"pass{budget}"] = float(np.mean(passed))
        row[f"gain{budget}"] = float(np.mean(gains))
    if plan.extra_attacks:
        obs = ObsAtk(den, SIGMA, eps=plan.obsatk / 255, steps=plan.attack_steps)
        row["obsatk"] = _mean_psnr(den, clean, craft(obs, clean, noisy))
        # the reference code's protocol: noisy input clamped to [0, 1], 3/255, 5 steps towards
        # the noisy input, attacked input clamped
        clamped = [y.clamp(0, 1) for y in noisy]
        ref = DenoisingPGD(den, SIGMA, eps=3 / 255, steps=5, objective="noisy", clip=(0.0, 1.0))
        row["ref_clean"] = _mean_psnr(den, clean, clamped)
        row["ref3"] = _mean_psnr(den, clean, craft(ref, clean, clamped))
    for source, inputs in transfer.items():
        row[f"from-{source}"] = _mean_psnr(den, clean, inputs)
    if worst is not None:
        result = auto_attack(den, clean, SIGMA, worst_case_members(plan), seed=0, transferred=worst)
        row["auto"] = result.mean
        row["auto_wins"] = result.wins
        row["auto_members"] = result.member_means()
    return row
