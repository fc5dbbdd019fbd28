"""The reports behind the commands: ``sampler-report`` (each TS family drawn on the bundled
images, its statistics against the theory), ``attack`` and ``transfer`` (images and attacks by
name, JSON + Markdown + heatmap written into a folder).

Each report is computed (a JSON-ready dict or a result object), rendered into its files
(``*_files``: file name -> text or Figure) and written as one unit by
:func:`ts_defense.app.output.write_set`."""

from __future__ import annotations

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
from ..noise.families import Local, Radial
from ..noise.sampler import TSConfig, TSSampler
from .output import Content, check_out, json_text, write_set
from .plots import sampler_figure, transfer_figure


# -- the sampler report ------------------------------------------------------------------------
def family_statistics(
    config: TSConfig, patch: int = 64, repeats: int = 8, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Draw every family (and Gaussian) on bundled-image patches; deviation statistics each."""
    clean = tiles(bundled_images(), patch).repeat(repeats, 1, 1, 1)
    n_dims = clean[0].numel()
    eps, window = config.families.first(Radial, Local).band[0], config.families.first(Local).window
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


def sampler_files(stats: dict[str, dict[str, Any]], config: TSConfig) -> dict[str, Content]:
    """``sampler.md``, ``.json`` and ``.png`` of :func:`family_statistics`."""
    slim = {
        k: {kk: vv for kk, vv in v.items() if kk not in ("d", "window_map")}
        for k, v in stats.items()
    }
    md = f"# TS sampler report\n\n{sampler_table(stats)}\n\n![deviations](sampler.png)\n"
    return {
        "sampler.md": md,
        "sampler.json": json_text({"config": config.to_dict(), "stats": slim}),
        "sampler.png": sampler_figure(stats, config),
    }


def sampler_report(out_dir: str | Path, config: TSConfig | None = None, seed: int = 0) -> str:
    """Write ``sampler.md``, ``.json`` and ``.png`` into ``out_dir``; return the table."""
    config = config or TSConfig()
    check_out(out_dir)
    stats = family_statistics(config, seed=seed)
    write_set(out_dir, sampler_files(stats, config), what="sampler report")
    return sampler_table(stats)


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


def attack_data(
    model: str,
    attacks: Sequence[str],
    images: list[Tensor],
    sigma: float,
    options: dict[str, dict],
    seed: int = 0,
    window: int = 8,
    data_dir: Path | None = None,
) -> dict:
    """Evaluate ``attacks`` on one named model: per-attack metrics, the worst case per image and
    the typicality of the inputs, as a JSON-ready dict (what :func:`attack_markdown` renders)."""
    den = load_model(model, data_dir)
    noisy = add_noise(images, sigma, seed)
    evals, typ = {}, {"noisy": _typicality(images, noisy, sigma, window)}
    for name in tqdm(attacks, desc=f"attacking {model}"):
        atk = make_attack(name, den, sigma, **options[name])
        evals[name], adv = evaluate_attack(den, atk, images, noisy, sigma, name=name)
        typ[name] = _typicality(images, adv, sigma, window)
    return {
        "model": model,
        "sigma": sigma,
        "seed": seed,
        "window": window,
        "images": sum(len(x) for x in images),
        "image_shape": list(images[0].shape),
        "options": options,
        "attacks": {k: v.to_dict() for k, v in evals.items()},
        "worst_case": worst_case(evals),
        "typicality": typ,
    }


def attack_markdown(data: dict) -> str:
    """The attack report's tables: PSNR/SSIM per attack and the worst case, then typicality."""
    rows = [
        f"Model {data['model']}, sigma {data['sigma'] * 255:g}/255, {data['images']} images.\n",
        "| attack | options | PSNR clean | PSNR attacked | drop | SSIM clean | SSIM attacked |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, ev in data["attacks"].items():
        m = ev["mean"]
        rows.append(
            f"| {name} | {format_options(data['options'][name])} | {m['psnr_clean']:.2f} | "
            f"{m['psnr_attacked']:.2f} | "
            f"{m['psnr_drop']:.2f} | {m['ssim_clean']:.4f} | {m['ssim_attacked']:.4f} |"
        )
    w = data["worst_case"]["mean"]
    rows.append(
        f"| worst case per image | | {w['psnr_clean']:.2f} | {w['psnr_attacked']:.2f} | "
        f"{w['psnr_drop']:.2f} | | {w['ssim_attacked']:.4f} |"
    )
    shape = tuple(data["image_shape"])
    rows += ["", typicality_table(data["typicality"], data["sigma"], data["window"], 0.05, shape)]
    return "\n".join(rows)


def attack_files(data: dict) -> dict[str, Content]:
    """``attack.json`` and ``attack.md`` of :func:`attack_data`."""
    return {"attack.json": json_text(data), "attack.md": attack_markdown(data) + "\n"}


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
    """:func:`attack_data`, written as ``attack.{json,md}`` into ``out`` (checked first);
    returns the Markdown."""
    check_out(out)
    data = attack_data(model, attacks, images, sigma, options, seed, window, data_dir)
    write_set(out, attack_files(data), what="attack report")
    return attack_markdown(data)


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
    check_out(out)
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


def transfer_files(result: TransferResult, stem: str = "transfer") -> dict[str, Content]:
    """``<stem>.json``, ``<stem>.md`` and the heatmap ``<stem>.png`` of ``result``."""
    return {
        f"{stem}.json": json_text(result.to_dict()),
        f"{stem}.md": result.to_markdown() + "\n",
        f"{stem}.png": transfer_figure(result),
    }


def save_transfer(
    result: TransferResult, out_dir: str | Path, stem: str = "transfer"
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the heatmap ``<stem>.png`` into ``out_dir`` (one
    unit, see :func:`~ts_defense.app.output.write_set`); return their paths by kind."""
    paths = write_set(out_dir, transfer_files(result, stem), what="transfer report")
    return {name.rsplit(".", 1)[1]: path for name, path in paths.items()}
