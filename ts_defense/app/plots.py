"""Every plot of the application: one function per plot, each returning a
:class:`matplotlib.figure.Figure` of its own (no pyplot, so a notebook's backend is left alone),
and :func:`save_figure` to write one. Plots that other pages compose (budget curves, the
transfer heatmap) take ``ax=`` to draw into a given Axes and return that Axes' Figure.

Report sets take the Figures themselves as files (:func:`ts_defense.app.output.write_set`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from ..attacks import ATTACKS, BUDGET_UNITS
from ..attacks.base import steps_text
from ..data import centre_crop
from ..evaluation.metrics import psnr
from ..evaluation.transfer import TransferResult
from ..noise import typical
from ..noise.families import Local, Radial
from ..noise.sampler import TSConfig
from .output import write_file


def save_figure(fig: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """Write ``fig`` to ``path`` atomically (its folder is created), format from the suffix, at
    ``dpi`` (default: the figure's own)."""
    if dpi is not None:
        fig.set_dpi(dpi)
    return write_file(path, fig)


def _canvas(ax: Axes | None, size: tuple[float, float], dpi: int) -> tuple[Figure, Axes]:
    """A new Figure of ``size`` with one Axes, or ``ax`` and its Figure."""
    if ax is not None:
        return ax.get_figure(), ax
    fig = Figure(figsize=size, dpi=dpi, layout="tight")
    return fig, fig.add_subplot()


# -- attacked PSNR against the budget ----------------------------------------------------------
def budget_curves_figure(
    curves: Mapping[str, Mapping[str, list[float]]],
    unit: float = 255.0,
    pass_through: bool = True,
    title: str | None = None,
    attack: str = "pgd",
    steps: int = 10,
    objective: str = "clean",
    ax: Axes | None = None,
) -> Figure:
    """PSNR against attack budget per model (solid), with each pass-through reference (dotted;
    ``pass_through=False`` leaves them out).

    ``attack``, ``steps`` and ``objective`` are those ``budget_curve`` ran with: they name the
    axis and, without ``title``, the title. Budgets in image units are shown times ``unit``."""
    fig, ax = _canvas(ax, (6, 4.2), 110)
    cls = ATTACKS.lookup(attack)
    if cls.budget_unit == "ratio":
        unit = 1.0
    shown = BUDGET_UNITS[cls.budget_unit] if unit == 1.0 else f"x 1/{unit:g}"
    if title is None:
        done = steps_text(steps, cls.takes_steps)
        title = f"White-box {cls.__name__} ({done}, {objective} target)"
    for k, (name, c) in enumerate(curves.items()):
        colour = f"C{k}"
        budgets = [b * unit for b in c["budget"]]
        label = f"{name}: attacked" if pass_through else name
        ax.plot(budgets, c["psnr"], "o-", color=colour, label=label)
        if pass_through:
            ax.plot(budgets, c["pass_through"], ":", color=colour, label=f"{name}: f(y) + delta")
    _label(
        ax, f"{cls.norm} budget {cls.budget} ({shown})", "PSNR of the denoised image (dB)", title
    )
    return fig


def _label(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    """The axes' labels, title, grid and legend, as every line plot here has them."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


# -- attacked PSNR against iterations or restarts --------------------------------------------
def convergence_figure(
    curves: Mapping[str, Mapping[str, list[float]]],
    xlabel: str,
    title: str,
    log: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Mean attacked PSNR per model against ``count`` (iterations or restarts; ``log``: a
    logarithmic axis), each line drawn from its last point (labelled with it), so that models
    of different PSNR share one scale and a curve that has converged ends flat at 0."""
    fig, ax = _canvas(ax, (5, 3.6), 110)
    for k, (name, c) in enumerate(curves.items()):
        last = c["psnr"][-1]
        label = f"{name} (last {last:.2f} dB)"
        ax.plot(c["count"], [v - last for v in c["psnr"]], "o-", color=f"C{k}", label=label)
    ax.axhline(0.0, color="grey", lw=0.8)
    if log:
        ax.set_xscale("log")
    counts = sorted({n for c in curves.values() for n in c["count"]})
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.minorticks_off()
    _label(ax, xlabel, "attacked PSNR minus the last point (dB)", title)
    return fig


# -- transfer heatmap --------------------------------------------------------------------------
def transfer_figure(
    result: TransferResult, from_zero: bool = False, ax: Axes | None = None
) -> Figure:
    """Heatmap of the PSNR drop (rows: source, columns: target), values annotated, with its
    colour bar. The colours span the drops' own range (close values still differ) unless
    ``from_zero``."""
    size = (1.6 + 1.5 * len(result.targets), 1.4 + 0.8 * len(result.sources))
    fig, ax = _canvas(ax, size, 120)
    drop = np.array([[result.drop(s, t) for t in result.targets] for s in result.sources])
    low = 0.0 if from_zero else float(drop.min())
    high = max(float(drop.max()), low + 1e-6)
    im = ax.imshow(drop, cmap="magma_r", vmin=low, vmax=high)
    ax.set_xticks(range(len(result.targets)), result.targets, rotation=30, ha="right")
    ax.set_yticks(range(len(result.sources)), result.sources)
    ax.set_xlabel("target (evaluated)")
    ax.set_ylabel("source (crafted on)")
    for i in range(drop.shape[0]):
        for j in range(drop.shape[1]):
            tone = "white" if drop[i, j] > low + 0.6 * (high - low) else "black"
            ax.text(j, i, f"{drop[i, j]:.2f}", ha="center", va="center", color=tone)
    ax.set_title(
        result.meta.get("description", "transfer of adversarial perturbations"), fontsize=9
    )
    label = "PSNR drop (dB)" if from_zero else "PSNR drop (dB; colours span this table)"
    fig.colorbar(im, ax=ax, label=label)
    return fig


# -- the sampler's families against the theory ---------------------------------------------
def sampler_figure(stats: Mapping[str, Mapping[str, Any]], config: TSConfig) -> Figure:
    """Deviation histograms (band and typical set shaded) above one window map per family, from
    :func:`ts_defense.app.report.family_statistics`."""
    names = [n for n in stats if n != "theory"]
    fig = Figure(figsize=(3.2 * len(names), 6.2), dpi=110, layout="tight")
    axes = fig.subplots(2, len(names), squeeze=False)
    eps_in, eps_out = config.families.first(Radial, Local).band
    window = config.families.first(Local).window
    lim = max(eps_out * 1.15, 4 * stats["theory"]["std_d"])
    for k, name in enumerate(names):
        ax = axes[0, k]
        ax.axvspan(-eps_in, eps_in, color="tab:green", alpha=0.15, label="eps-typical set")
        for sgn in (-1, 1):
            ax.axvspan(sgn * eps_in, sgn * eps_out, color="tab:orange", alpha=0.12)
        ax.hist(stats[name]["d"], bins=60, range=(-lim, lim), color="tab:blue")
        ax.set_title(f"{name}: deviation d")
        ax.set_xlabel("d = (|n|^2 / (N sigma^2) - 1) / 2")
        ax.set_ylabel("samples")
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
        ax = axes[1, k]
        vmax = max(eps_out, 3 * stats["theory"]["window_std_d"])
        im = ax.imshow(stats[name]["window_map"], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"{name}: {window}x{window} window map", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, label="window deviation")
    fig.suptitle("TS sampler: deviation from the entropy rate (orange: OOD band)")
    return fig


# -- the demo's typicality and image plots ---------------------------------------------------
def deviation_figure(
    noise_clean: Tensor, noise_adv: Tensor, sigma: float, attack: str, window: int = 8
) -> Figure:
    """Histograms of the global and window deviations of ``y - x`` for Gaussian-noisy and
    attacked inputs, and the window map of one attacked input; ``attack`` (its description)
    titles the figure."""
    fig = Figure(figsize=(13, 3.8), dpi=110, layout="tight")
    axes = fig.subplots(1, 3)
    for ax, size in zip(axes[:2], (None, window), strict=True):
        if size is None:
            a, b = typical.deviation(noise_clean, sigma), typical.deviation(noise_adv, sigma)
            title = "global deviation d of y - x"
        else:
            a = typical.window_deviation(noise_clean, sigma, size).flatten()
            b = typical.window_deviation(noise_adv, sigma, size).flatten()
            title = f"{size}x{size} window deviations of y - x"
        lo, hi = float(torch.cat([a, b]).min()), float(torch.cat([a, b]).max())
        ax.hist(a.tolist(), bins=40, range=(lo, hi), alpha=0.6, label="Gaussian noise")
        ax.hist(b.tolist(), bins=40, range=(lo, hi), alpha=0.6, label="attacked")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("deviation d")
        ax.set_ylabel("count")
        ax.legend(fontsize=8, loc="upper left")
    window_map = typical.window_deviation(noise_adv[:1], sigma, window)[0].numpy()
    im = axes[2].imshow(window_map, cmap="RdBu_r")
    axes[2].set_title("window map of one attacked input", fontsize=10)
    fig.colorbar(im, ax=axes[2], fraction=0.046, label="deviation d")
    fig.suptitle(f"Typicality of inputs attacked by {attack}", fontsize=10)
    return fig


def _show_image(ax: Axes, img: Tensor, title: str) -> None:
    """One grey or colour image (C, H, W) in [0, 1], untitled axes off."""
    img = img.clamp(0, 1)
    ax.imshow(
        (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(),
        cmap="gray",
        vmin=0,
        vmax=1,
    )
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def image_strip_figure(panels: Mapping[str, Tensor]) -> Figure:
    """The first image of each batch in ``panels`` side by side, titled by its key."""
    fig = Figure(figsize=(2.6 * len(panels), 3), dpi=110, layout="tight")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, img) in zip(axes, panels.items(), strict=True):
        _show_image(ax, img[0], title)
    return fig


# -- the audit's page ------------------------------------------------------------------------
AUDIT_STRIP = ("clean", "noisy", "attacked", "output", "output_attacked")
AUDIT_CROP = 64


def audit_figure(data: Mapping[str, Any], examples: Mapping[str, Mapping[str, Tensor]]) -> Figure:
    """The audit on one page: budget curves and transfer heatmap on top, attacked PSNR against
    iterations and restarts below (``--attack auto``), then per model a strip of central crops
    (clean, noisy, attacked, both outputs) with their PSNR; a failed sanity check titles it.

    data: the audit's JSON record; examples: per model, the images of the strip (batches)."""
    c = data["config"]
    grey = c["units"] == "grey levels"
    auto = c.get("attack", "pgd") == "auto"
    table = "apgd" if auto else "pgd"
    n = len(examples)
    top_rows = 2 if auto else 1
    fig = Figure(figsize=(15, 4.6 * top_rows + 2.7 * n), dpi=90, layout="tight")
    grid = fig.add_gridspec(
        top_rows + n, len(AUDIT_STRIP), height_ratios=[1.5] * top_rows + [1] * n
    )
    curves = {
        name: {
            "budget": [0.0, *c["budgets"]],
            "psnr": [m["mean"]["psnr_clean"]] + [v["psnr"] for v in m["mean"][table].values()],
            "pass_through": [m["mean"]["psnr_clean"]]
            + [v["pass_through"] for v in m["mean"][table].values()],
        }
        for name, m in data["models"].items()
    }
    ax = fig.add_subplot(grid[0, :3] if data["transfer"] else grid[0, :])
    sigma = f"{c['sigma'] * 255:g}" if grey else f"{c['sigma']:.4g}"
    done = steps_text(c["steps"])
    if auto:
        done = "one iteration" if c["steps"] == 1 else f"{c['steps']} iterations"
    title = (
        f"White-box {table.upper()} ({done}) on {', '.join(data['models'])}; sigma "
        f"{sigma}; mean of {len(data['images'])} images"
    )
    budget_curves_figure(curves, 255.0 if grey else 1.0, title=title, ax=ax)
    if data["transfer"]:
        transfer_figure(TransferResult(**data["transfer"]), ax=fig.add_subplot(grid[0, 3:]))
    top = c["budgets_as_typed"][-1]
    if auto:
        conv = {name: m["curves"] for name, m in data["models"].items() if "curves" in m}
        where = f"APGD-L-inf at eps {top}, mean of {len(data['images'])} images"
        convergence_figure(
            {name: v["iterations"] for name, v in conv.items()},
            "iterations (each a run of its own)",
            f"Attacked PSNR against iterations; {where}",
            log=True,
            ax=fig.add_subplot(grid[1, :3]),
        )
        convergence_figure(
            {name: v["restarts"] for name, v in conv.items()},
            "restarts",
            f"Attacked PSNR against restarts ({done} each)",
            ax=fig.add_subplot(grid[1, 3:]),
        )
    labels = {"attacked": f"attacked input (eps {top})", "output_attacked": "output on attacked"}
    for row, (name, ex) in enumerate(examples.items(), start=top_rows):
        for col, key in enumerate(AUDIT_STRIP):
            label = labels.get(key, key)
            score = psnr(ex["clean"], ex[key], nonfinite="nan")[0]
            score = "" if key == "clean" else f"\n{score:.2f} dB".replace("nan", "NaN")
            title = f"{name}: {label}{score}" if col == 0 else f"{label}{score}"
            _show_image(fig.add_subplot(grid[row, col]), centre_crop(ex[key][0], AUDIT_CROP), title)
    failed = len(data.get("failures", []))
    warning = f"{failed} SANITY CHECK(S) FAILED (see audit.md). " if failed else ""
    fig.suptitle(
        f"{warning}Robustness audit: {data['images'][0]} crops ({AUDIT_CROP} px), PSNR of each "
        f"against the clean image",
        fontsize=11,
        color="red" if failed else "black",
    )
    return fig


# -- the main job: the pretrained model before and after its fine-tunes ----------------------
def before_after_figure(results: Mapping[str, Any]) -> Figure:
    """Mean PSNR of the pretrained model and of each fine-tune under clean / white-box /
    transfer, one panel each on its own scale (error bars: sd over seeds); the white-box panel
    also marks the pass-through reference. ``results``: the main job's record
    (:func:`ts_defense.app.hardening.run_hardening`)."""
    cfg, summary = results["config"], results["summary"]
    eps = f"{cfg['eps'] * 255:g}/255"
    names = {"pretrained": "pretrained"} | {r: f"{r}\nfine-tune" for r in list(summary)[1:]}
    colours = ["C7", "C0", "C3"]
    titles = {
        "clean": "clean: Gaussian noise only",
        "white_box": f"white-box PGD {eps} on each model",
        "transfer": f"PGD {eps} crafted on {cfg['source']}",
    }
    fig = Figure(figsize=(12, 4.4), dpi=110, layout="constrained")
    for ax, (cond, title) in zip(fig.subplots(1, len(titles)), titles.items(), strict=True):
        for key in [cond, "pass_through"] if cond == "white_box" else [cond]:
            shown = key == cond
            for k, (row, colour) in enumerate(zip(summary.values(), colours, strict=False)):
                x = k if shown else k + 0.3  # the pass-through reference beside its model
                m, sd = row[key]["mean"], row[key]["sd"] or 0.0
                ax.errorbar(x, m, yerr=sd, fmt="o" if shown else "x", ms=8, capsize=4, color=colour)
                if shown:  # the value left of its point (the reference's are in the table)
                    ax.annotate(
                        f"{m:.2f}",
                        (x, m),
                        xytext=(-9, 0),
                        textcoords="offset points",
                        ha="right",
                        va="center",
                        fontsize=8,
                    )
        ax.set_xticks(range(len(names)), list(names.values()))
        ax.set_xlim(-0.6, len(names) - 0.2)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("mean PSNR (dB)")
        ax.grid(alpha=0.3)
    marks = [  # which points are the pass-through reference (beside each model)
        Line2D([], [], ls="", marker="o", color="0.3", label="PSNR of the denoised picture"),
        Line2D(
            [],
            [],
            ls="",
            marker="x",
            color="0.3",
            label="f(y)+delta: the denoised picture "
            "plus the white-box perturbation, passed through unchanged",
        ),
    ]
    fig.legend(handles=marks, loc="outside lower center", ncols=2, fontsize=8)
    seeds = len(results["runs"])
    bars = f"error bars: sd over {seeds} seeds" if seeds > 1 else "one seed: no error bars"
    fig.suptitle(
        f"{cfg['model']} before and after {cfg['steps']}-step fine-tunes, sigma "
        f"{cfg['sigma'] * 255:g}/255: mean over {len(cfg['test'])} test pictures ({bars})",
        fontsize=10,
    )
    return fig


def paired_gain_figure(results: Mapping[str, Any]) -> Figure:
    """The robust fine-tune minus the baseline one under clean / white-box / transfer: each
    seed and picture left of each tick, the mean ± spread right of it."""
    cfg, diff = results["config"], results["paired"]
    eps = f"{cfg['eps'] * 255:g}/255"
    ticks = {
        "clean": "clean",
        "white_box": f"white-box PGD {eps}",
        "transfer": f"transfer from\n{cfg['source']}",
    }
    fig = Figure(figsize=(7.5, 4.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0, color="k", lw=0.8)
    for x, cond in enumerate(ticks):
        d = diff[cond]
        seeds = d["per_seed_and_picture"]
        for k, (seed, values) in enumerate(seeds.items()):
            where = x - 0.3 + 0.25 * k / max(len(seeds) - 1, 1)
            for j, v in enumerate(values):
                label = f"seed {seed}, {cfg['test'][j]}" if x == 0 else None
                ax.plot(where, v, "os^dv"[j % 5], color=f"C{k}", ms=6, alpha=0.8, label=label)
        spread = d["spread"]
        ax.errorbar(
            x + 0.1,
            d["mean"],
            yerr=spread or 0.0,
            fmt="D",
            color="k",
            ms=9,
            capsize=6,
            label=f"mean ± sd over {d['spread_over']}" if x == 0 else None,
        )
        text = f"{d['mean']:+.2f}" + ("" if spread is None else f" ± {spread:.2f}")
        ax.annotate(
            f"{text} dB",
            (x + 0.1, d["mean"]),
            xytext=(12, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    ax.set_xticks(range(len(ticks)), list(ticks.values()))
    ax.set_xlim(-0.6, len(ticks) - 0.1)
    ax.set_ylabel(f"PSNR, {cfg['robust']} minus {cfg['baseline']} fine-tune (dB)")
    ax.set_title(
        f"{cfg['robust']} against {cfg['baseline']} fine-tuning of {cfg['model']}, paired\n"
        f"(same weights, seed, patches, test noise and attack starts; above 0: {cfg['robust']} "
        f"better)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig
