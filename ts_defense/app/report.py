"""The reports behind the commands: ``sampler-report`` (each TS family drawn on the bundled
images, its statistics against the theory), ``attack`` and ``transfer`` (images and attacks by
name, JSON + Markdown + heatmap written into a folder)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_choice
from ..attacks import ATTACKS, budget_options, make_attack
from ..attacks.base import DenoiserAttack
from ..data import bundled_images, tiles
from ..evaluation.metrics import add_noise, evaluate_attack, worst_case
from ..evaluation.transfer import TransferResult, transfer_matrix
from ..evaluation.typicality import typicality, typicality_table
from ..models.denoiser import Denoiser
from ..models.zoo import load_model
from ..noise import typical
from ..noise.sampler import TSConfig, TSSampler
from .plots import plot_statistics, plot_transfer


# -- the sampler report ------------------------------------------------------------------------
def family_statistics(
    config: TSConfig, patch: int = 64, repeats: int = 8, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Draw every family (and Gaussian) on bundled-image patches; deviation statistics each."""
    clean = tiles(bundled_images(), patch).repeat(repeats, 1, 1, 1)
    n_dims = clean[0].numel()
    eps, window = config.families.flat("band")[0], config.families.flat("window")
    stats: dict[str, dict[str, Any]] = {}
    for name in config.family_names:
        draw = TSSampler(config.only(name), seed=seed).draw(clean)
        d = draw.deviation
        dk = typical.window_deviation(draw.noise, draw.sigma, window)
        stats[name] = {
            "samples": int(d.numel()),
            "n_dims": n_dims,
            "mean_d": float(d.mean()),
            "std_d": float(d.std()),
            "outside_typical": float((d.abs() > eps).float().mean()),
            "atypical_windows": float((dk.abs() > eps).float().mean()),
            "d": d.tolist(),
            "window_map": dk[0].tolist(),
        }
    stats["theory"] = {
        "std_d": typical.deviation_std(n_dims),
        "chebyshev": typical.chebyshev_bound(n_dims, eps),
        "laurent_massart": typical.laurent_massart_bound(n_dims, eps),
        "window_std_d": typical.deviation_std(window**2 * clean.shape[1]),
        "eps": eps,
    }
    return stats


def sampler_table(stats: dict[str, dict[str, Any]]) -> str:
    """Markdown table of the family statistics, with the Gaussian theory beneath."""
    th = stats["theory"]
    rows = [
        "| family | samples | mean d | std d | share outside eps-typical | atypical windows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in stats.items():
        if name == "theory":
            continue
        rows.append(
            f"| {name} | {s['samples']} | {s['mean_d']:+.4f} | {s['std_d']:.4f} | "
            f"{s['outside_typical']:.3f} | {s['atypical_windows']:.3f} |"
        )
    rows.append(
        f"\nTheory for Gaussian noise (N = {stats['gaussian']['n_dims']}, eps = {th['eps']}): "
        f"mean d 0, std d {th['std_d']:.4f}; P(|d| > eps) <= {th['laurent_massart']:.2e} "
        f"(Laurent–Massart), <= {th['chebyshev']:.3f} (Chebyshev); "
        f"window std d {th['window_std_d']:.4f}."
    )
    return "\n".join(rows)


def sampler_report(out_dir: str | Path, config: TSConfig | None = None, seed: int = 0) -> str:
    """Write ``sampler.md``, ``.json`` and ``.png`` into ``out_dir``; return the table."""
    config = config or TSConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = family_statistics(config, seed=seed)
    table = sampler_table(stats)
    plot_statistics(stats, config, out / "sampler.png")
    slim = {
        k: {kk: vv for kk, vv in v.items() if kk not in ("d", "window_map")}
        for k, v in stats.items()
    }
    (out / "sampler.json").write_text(
        json.dumps({"config": config.to_dict(), "stats": slim}, indent=2)
    )
    (out / "sampler.md").write_text(
        f"# TS sampler report\n\n{table}\n\n![deviations](sampler.png)\n"
    )
    return table


# -- attacks and transfer by name -------------------------------------------------------------
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


def save_transfer(
    result: TransferResult, out_dir: str | Path, stem: str = "transfer"
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the heatmap ``<stem>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2))
    paths["md"].write_text(result.to_markdown() + "\n")
    plot_transfer(result, paths["png"])
    return paths
