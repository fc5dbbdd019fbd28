"""The sampler report: each family drawn on the bundled images, its deviation statistics set
against the theory, and a PNG of deviation histograms and window maps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import typical
from .data import bundled_images, tiles
from .sampler import TSConfig, TSSampler


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


def format_table(stats: dict[str, dict[str, Any]]) -> str:
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


def plot_statistics(stats: dict[str, dict[str, Any]], config: TSConfig, path: Path) -> None:
    """Deviation histograms (band and typical set shaded) above one window map per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in stats if n != "theory"]
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6.2), squeeze=False)
    eps_in, eps_out = config.families.flat("band")
    window = config.families.flat("window")
    lim = max(eps_out * 1.15, 4 * stats["theory"]["std_d"])
    for k, name in enumerate(names):
        ax = axes[0, k]
        ax.axvspan(-eps_in, eps_in, color="tab:green", alpha=0.15, label="eps-typical set")
        for sgn in (-1, 1):
            ax.axvspan(sgn * eps_in, sgn * eps_out, color="tab:orange", alpha=0.12)
        ax.hist(stats[name]["d"], bins=60, range=(-lim, lim), color="tab:blue")
        ax.set_title(f"{name}: deviation d")
        ax.set_xlabel("d = (|n|^2 / (N sigma^2) - 1) / 2")
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
        ax = axes[1, k]
        vmax = max(eps_out, 3 * stats["theory"]["window_std_d"])
        im = ax.imshow(stats[name]["window_map"], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"{name}: {window}x{window} window map", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("TS sampler: deviation from the entropy rate (orange: OOD band)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sampler_report(out_dir: str | Path, config: TSConfig | None = None, seed: int = 0) -> str:
    """Write ``sampler.md``, ``.json`` and ``.png`` into ``out_dir``; return the table."""
    config = config or TSConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = family_statistics(config, seed=seed)
    table = format_table(stats)
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
