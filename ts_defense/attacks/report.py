"""Reports behind ``ts-defense attack`` and ``ts-defense transfer``: images by name, attacks by
name with their options, and JSON + Markdown (+ heatmap) written into a folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_choice, check_positive
from ..data import BUNDLED, bundled_images, load_image, set12
from ..denoiser import Denoiser
from . import ATTACKS, budget_options, make_attack
from .base import DenoiserAttack
from .evaluate import add_noise, evaluate_attack, worst_case
from .transfer import TransferResult, save_transfer, transfer_matrix
from .typicality import typicality, typicality_table
from .zoo import load_model


def centre_crop(x: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window (images smaller than that are kept whole)."""
    h, w = x.shape[-2:]
    s_h, s_w = min(size, h), min(size, w)
    return x[..., (h - s_h) // 2 : (h - s_h) // 2 + s_h, (w - s_w) // 2 : (w - s_w) // 2 + s_w]


def load_images(
    spec: Sequence[str], size: int | None, data_dir: Path | None = None
) -> list[Tensor]:
    """``["bundled"]`` (default), ``["set12"]``, bundled image names, or image files; batches.

    Bundled images are resized to ``size``; Set12 images and files are centre-cropped to it.
    """
    if size is not None:
        check_positive("size", size, integer=True)
    spec = list(spec) or ["bundled"]
    if spec == ["bundled"]:
        return [bundled_images(size=size)]
    if all(s in BUNDLED for s in spec):
        return [bundled_images(tuple(spec), size=size)]
    if spec == ["set12"]:
        images = set12(None if data_dir is None else data_dir / "set12")
    else:
        images = [load_image(p) for p in spec]
    return [centre_crop(x, size) if size else x for x in images]


def attack_options(
    name: str, eps: float, rho: float, steps: int, objective: str, seed: int
) -> dict:
    """Keyword options of the attack ``name``: ``rho`` for budgets relative to the noise norm,
    else ``eps`` (given in 0..255 units); ``steps`` where the attack takes them.

    Checks the name first, so that a typo fails before any model is loaded or bar drawn."""
    check_choice("attack", name, tuple(ATTACKS))
    budget = rho if ATTACKS[name].budget_unit == "ratio" else eps / 255
    return {**budget_options(name, budget, steps), "objective": objective, "seed": seed}


def format_options(options: dict) -> str:
    """``k=v`` pairs, floats to four significant digits; ``eps`` (image units inside) as the
    grey levels the command line takes, e.g. ``eps=8/255``."""
    return ", ".join(
        f"{k}={v * 255:.4g}/255"
        if k == "eps"
        else f"{k}={v:.4g}"
        if isinstance(v, float)
        else f"{k}={v}"
        for k, v in options.items()
    )


def attack_report(
    model: str,
    attacks: Sequence[str],
    images: list[Tensor],
    sigma: float,
    out: str | Path,
    options: dict[str, dict],
    seed: int = 0,
    window: int = 8,
    data_dir: Path | None = None,
) -> str:
    """Evaluate ``attacks`` on one named model; write ``attack.{json,md}``; return the Markdown."""
    den = load_model(model, data_dir)
    noisy = add_noise(images, sigma, seed)
    evals, typ = {}, {"noisy": _typicality(images, noisy, sigma, window)}
    for name in tqdm(attacks, desc=f"attacking {model}"):
        atk = make_attack(name, den, sigma, **options[name])
        evals[name], adv = evaluate_attack(den, atk, images, noisy, sigma, name=name)
        typ[name] = _typicality(images, adv, sigma, window)
    worst = worst_case(evals)
    rows = [
        f"Model {model}, sigma {sigma * 255:g}/255, {sum(len(x) for x in images)} images.\n",
        "| attack | options | PSNR clean | PSNR attacked | drop | SSIM clean | SSIM attacked |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, ev in evals.items():
        m = ev.summary()
        rows.append(
            f"| {name} | {format_options(options[name])} | {m['psnr_clean']:.2f} | "
            f"{m['psnr_attacked']:.2f} | "
            f"{m['psnr_drop']:.2f} | {m['ssim_clean']:.4f} | {m['ssim_attacked']:.4f} |"
        )
    w = worst["mean"]
    rows.append(
        f"| worst case per image | | {w['psnr_clean']:.2f} | {w['psnr_attacked']:.2f} | "
        f"{w['psnr_drop']:.2f} | | {w['ssim_attacked']:.4f} |"
    )
    rows += ["", typicality_table(typ, sigma, window, 0.05, images[0].shape)]
    text = "\n".join(rows)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    report = {
        "model": model,
        "sigma": sigma,
        "seed": seed,
        "options": options,
        "attacks": {k: v.to_dict() for k, v in evals.items()},
        "worst_case": worst,
        "typicality": typ,
    }
    (path / "attack.json").write_text(json.dumps(report, indent=2))
    (path / "attack.md").write_text(text + "\n")
    return text


def _typicality(clean: list[Tensor], inputs: list[Tensor], sigma: float, window: int) -> dict:
    parts = [typicality(x, y, sigma, window) for x, y in zip(clean, inputs, strict=True)]
    return {k: [v for p in parts for v in p[k]] for k in parts[0]}


def transfer_report(
    models: Sequence[str],
    attack: str,
    images: list[Tensor],
    sigma: float,
    out: str | Path,
    options: dict,
    seed: int = 0,
    data_dir: Path | None = None,
) -> TransferResult:
    """Transfer matrix between named models; writes ``transfer.{json,md,png}`` into ``out``."""
    named = {m: load_model(m, data_dir) for m in models}
    factory = partial(_build, attack, sigma, options)
    result = transfer_matrix(named, images, sigma, factory, seed=seed, progress=True)
    desc = format_options(options)
    result.meta.update(
        attack=attack, options=options, description=f"{attack} ({desc}), sigma {sigma * 255:g}/255"
    )
    save_transfer(result, out)
    return result


def _build(attack: str, sigma: float, options: dict, model: Denoiser) -> DenoiserAttack:
    return make_attack(attack, model, sigma, **options)
