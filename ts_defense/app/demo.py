"""``ts-defense demo --from-scratch``, the toy study: Gaussian, TS and the recommended robust
recipe trained from scratch on the bundled images, attacked white-box and by transfer, with a
printed table, a recommendation drawn from it, and a report folder (Markdown, JSON, PNG plots).
The main job itself (hardening the public DnCNN-S-25) is :mod:`.hardening`.

Small DnCNNs are trained on the spot on six scikit-image pictures and tested on crops of two
others, so the whole run takes a few minutes on two CPU cores and downloads nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..attacks import DenoisingPGD
from ..attacks.base import steps_text
from ..data import bundled_images, tiles
from ..evaluation.budget import budget_curve, family_psnr
from ..evaluation.detect import detection_auc
from ..evaluation.metrics import add_noise, denoise
from ..evaluation.transfer import transfer_matrix
from ..models import SmallDnCNN
from ..models.denoiser import Denoiser
from ..models.zoo import load_model
from ..noise.sampler import TSConfig
from ..training.fit import fit
from .output import check_out, json_text, write_set
from .plots import budget_curves_figure, deviation_figure, image_strip_figure
from .report import family_statistics, sampler_files, transfer_files

ROBUST = "free-hat"  # the recommended robust recipe (BENCHMARKS.md, paper protocol)


@dataclass(frozen=True)
class DemoConfig(SmallDnCNN):
    """What the demo trains (one small DnCNN per recipe, 300 steps) and how hard it attacks
    (defaults: a few minutes on 2 CPU cores)."""

    steps: int = 300
    sigma: float = 25 / 255
    budgets: tuple[float, ...] = (0.0, 2 / 255, 4 / 255, 8 / 255)
    attack_steps: int = 10
    transfer_eps: float = 8 / 255
    bm3d: bool = True
    seed: int = 0
    recipes: tuple[str, ...] = ("gaussian", "ts", ROBUST)


def train_variants(cfg: DemoConfig, train: torch.Tensor, progress: bool) -> dict[str, Any]:
    """One small DnCNN per recipe, same seed, data and steps; returns models and wall times."""
    models, seconds = {}, {}
    for name in cfg.recipes:
        torch.manual_seed(cfg.seed)  # identical initial weights for every recipe
        net = cfg.build(train.shape[1])
        t0 = time.perf_counter()
        fit(
            net,
            train,
            config={"sigma": cfg.sigma},
            recipe=name,
            seed=cfg.seed,
            predicts="noise",
            progress=progress,
            **cfg.fit_options(),
        )
        seconds[name] = time.perf_counter() - t0
        models[name] = Denoiser(net.eval(), predicts="noise")
    return {"models": models, "seconds": seconds}


def run_demo(out_dir: str | Path, cfg: DemoConfig | None = None, progress: bool = True) -> dict:
    """Train, attack, evaluate; write ``report.md``, ``.json``, the PNGs and the sampler and
    transfer reports into ``out_dir`` (checked first, written as one unit); return the results."""
    cfg = cfg or DemoConfig()
    check_out(out_dir)
    images = bundled_images(size=128)
    train, test = images[:6], tiles(images[6:], 64)
    sampler_config = TSConfig(sigma=cfg.sigma)
    files = sampler_files(family_statistics(sampler_config, seed=cfg.seed), sampler_config)
    trained = train_variants(cfg, train, progress)
    models: dict[str, Denoiser] = trained["models"]
    curves = budget_curve(
        models,
        test,
        cfg.sigma,
        cfg.budgets,
        steps=cfg.attack_steps,
        seed=cfg.seed,
        progress=progress,
    )
    files["psnr_vs_budget.png"] = budget_curves_figure(curves, steps=cfg.attack_steps)
    shifted = family_psnr(models, test, TSConfig(sigma=cfg.sigma), seed=cfg.seed)
    targets = dict(models)
    if cfg.bm3d:
        targets["bm3d"] = load_model("bm3d")
    attack = partial(DenoisingPGD, sigma=cfg.sigma, eps=cfg.transfer_eps, steps=cfg.attack_steps)
    transfer = transfer_matrix(targets, test, cfg.sigma, attack, seed=cfg.seed, progress=progress)
    files.update(transfer_files(transfer))

    # typicality of the attacked inputs, the detector, and one image strip (first variant)
    first = next(iter(models))
    noisy = add_noise(test, cfg.sigma, cfg.seed)[0]
    pgd = DenoisingPGD(models[first], cfg.sigma, eps=cfg.transfer_eps, steps=cfg.attack_steps)
    adv = pgd(noisy, test)
    files["deviations.png"] = deviation_figure(noisy - test, adv - test, cfg.sigma, pgd.describe())
    detector = {name: detection_auc(den, noisy, adv, cfg.sigma) for name, den in models.items()}
    panels = {"clean": test[:1], "noisy": noisy[:1], f"attacked on {first}": adv[:1]}
    for name, den in models.items():
        panels[f"{name}(attacked)"] = denoise(den, adv[:1], cfg.sigma)
    files["strip.png"] = image_strip_figure(panels)

    results = {
        "config": asdict(cfg),
        "train_seconds": trained["seconds"],
        "budget_curves": curves,
        "family_psnr": shifted,
        "transfer": transfer.to_dict(),
        "detector_auc": detector,
        "test_images": int(test.shape[0]),
    }
    files["report.json"] = json_text(results)
    files["report.md"] = format_report(results, transfer.to_markdown())
    write_set(out_dir, files, what="demo report")
    return results


def transferred(results: dict) -> dict[str, float]:
    """Mean PSNR of each trained model under the perturbations crafted on the others."""
    attacked = results["transfer"]["attacked"]
    names = list(results["budget_curves"])
    return {
        t: sum(attacked[s][t] for s in names if s != t and s in attacked) / (len(names) - 1)
        for t in names
        if len(names) > 1
    }


def format_table(results: dict) -> str:
    """The printed table: clean and attacked PSNR per recipe and budget, the pass-through,
    transfer from the other recipes' models, and the training time."""
    curves = results["budget_curves"]
    budgets = next(iter(curves.values()))["budget"]
    head = " | ".join(f"eps {b * 255:.0f}/255" if b else "clean" for b in budgets)
    moved = transferred(results)
    lines = [
        f"| recipe | train s | {head} | f(y)+delta at max eps | gain | transfer |",
        "|---|---:|" + "---:|" * (len(budgets) + 3),
    ]
    for name, c in curves.items():
        vals = " | ".join(f"{p:.2f}" for p in c["psnr"])
        secs = results["train_seconds"].get(name, float("nan"))
        lines.append(
            f"| {name} | {secs:.0f} | {vals} | {c['pass_through'][-1]:.2f} | {c['gain'][-1]:.2f}"
            f" | {moved.get(name, float('nan')):.2f} |"
        )
    return "\n".join(lines)


def recommendation(results: dict) -> str:
    """The robust recipe against Gaussian training, in this run's numbers."""
    curves, secs = results["budget_curves"], results["train_seconds"]
    if ROBUST not in curves or "gaussian" not in curves:
        return ""
    robust, base = curves[ROBUST], curves["gaussian"]
    moved = transferred(results)
    white = robust["psnr"][-1] - base["psnr"][-1]
    transfer = moved[ROBUST] - moved["gaussian"]
    clean = robust["psnr"][0] - base["psnr"][0]
    eps = base["budget"][-1] * 255
    verdict = (
        f"{ROBUST} is the recommended robust recipe: here"
        if white > 0 and transfer > 0
        else f"In this run {ROBUST} did not beat Gaussian training on both counts (at this toy "
        f"scale differences under ~0.1 dB are seed noise; BENCHMARKS.md has the paper-scale "
        f"figures):"
    )
    return (
        f"{verdict} {white:+.2f} dB under white-box PGD {eps:.0f}/255 and {transfer:+.2f} dB "
        f"under transfer against Gaussian training, {clean:+.2f} dB clean, at "
        f"{secs[ROBUST] / secs['gaussian']:.2f}x its training time."
    )


def format_families(results: dict) -> str:
    """PSNR per model under each noise family alone (no attack)."""
    table = results["family_psnr"]
    families = list(next(iter(table.values())))
    lines = [f"| model | {' | '.join(families)} |", "|---|" + "---:|" * len(families)]
    for name, row in table.items():
        lines.append(f"| {name} | {' | '.join(f'{row[f]:.2f}' for f in families)} |")
    return "\n".join(lines)


def format_report(results: dict, transfer_md: str) -> str:
    cfg = results["config"]
    auc = "\n".join(
        f"| {name} | {a['global']:.3f} | {a['window']:.3f} |"
        for name, a in results["detector_auc"].items()
    )
    variants = ", ".join(cfg["recipes"])
    return f"""# ts-defense demo

Small DnCNNs ({cfg["depth"]} layers, {cfg["features"]} features) trained for {cfg["steps"]} steps
on six bundled images at sigma {cfg["sigma"] * 255:.0f}/255, one per training recipe
({variants}), same seed and data; tested on {results["test_images"]} crops of two other images.

## White-box denoising-PGD ({steps_text(cfg["attack_steps"])}, clean target): mean PSNR (dB)

{format_table(results)}

`f(y)+delta`: the PSNR a denoiser would score if it passed the perturbation through unchanged;
`gain`: |f(y+delta) - f(y)| / |delta| at the largest budget (below 1: the model damps it);
`transfer`: PSNR under PGD {cfg["transfer_eps"] * 255:.0f}/255 crafted on the other recipes'
models.

{recommendation(results)}

![PSNR against budget](psnr_vs_budget.png)

## Nearby noise distributions, no attack: mean PSNR (dB) per noise family

Each family of the TS sampler alone at the nominal sigma (library defaults: band 0.05-0.35,
8x8 windows, correlation length 4) — the distribution shift TS trains for.

{format_families(results)}

## Transfer (PGD {cfg["transfer_eps"] * 255:.0f}/255): PSNR drop (rows: crafted on)

{transfer_md}

![transfer](transfer.png)

## Typicality of attacked inputs, and the typical-set detector (ROC AUC, clean-noisy vs attacked)

| model | global score | window score |
|---|---:|---:|
{auc}

![deviations](deviations.png)

![images](strip.png)

![sampler](sampler.png)
"""
