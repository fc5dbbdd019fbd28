"""The run's figure: PSNR against the PGD budget per recipe, and each recipe's gain over
Gaussian training at every budget (means over seeds)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ts_defense.app.plots import budget_curves_figure, save_figure
from ts_defense.attacks.base import steps_text

from . import tables
from .plan import SIGMA


def budget_figure(rows: list[dict], path: Path, attack_steps: int) -> None:
    """Write the two-panel PNG at ``path`` (nothing when no model was evaluated)."""
    curves = tables.budget_curves(rows)
    if not curves:
        return
    fig = Figure(figsize=(11, 4.3), dpi=110)
    left, right = fig.subplots(1, 2)
    done = steps_text(attack_steps)
    title = f"White-box denoising-PGD ({done}, clean target), BSD68, sigma {SIGMA * 255:g}"
    budget_curves_figure(curves, pass_through=False, title=title, ax=left)
    base = next((c for name, c in curves.items() if name.startswith("gaussian")), None)
    for k, (name, c) in enumerate(curves.items()):
        if base is None or c is base or c["budget"] != base["budget"]:
            continue
        gain = [p - q for p, q in zip(c["psnr"], base["psnr"], strict=True)]
        right.plot([b * 255 for b in c["budget"]], gain, "o-", color=f"C{k}", label=name)
    right.axhline(0.0, color="grey", lw=0.8)
    right.set_xlabel("L-inf budget eps (x 1/255)")
    right.set_ylabel("PSNR minus Gaussian training (dB)")
    right.set_title("Recipe minus Gaussian fine-tuning (means over seeds; eps 0 = no attack)",
                    fontsize=9)  # fmt: skip
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


CLEAN_COST_SHOWN = -0.5  # dB: points costing more clean PSNR are named, not drawn


def frontier_figure(rows: list[dict], path: Path) -> None:
    """One panel per test set: each recipe's paired clean difference against its paired
    worst-case difference over Gaussian fine-tuning (means over seeds, sd bars), one line per
    recipe along its knob, the knob's value at each point (nothing without a worst case)."""
    sets = [p for p in tables.test_sets(rows) if tables.frontier_points(rows, p)]
    if not sets:
        return
    fig = Figure(figsize=(5.6 * len(sets), 4.8), dpi=110)
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, prefix in zip(axes, sets, strict=True):
        hidden = []
        for k, (name, every) in enumerate(tables.frontier_points(rows, prefix).items()):
            points = [p for p in every if p[1] >= CLEAN_COST_SHOWN]
            hidden += [f"{name} {p[0]:g}" for p in every if p[1] < CLEAN_COST_SHOWN]
            if not points:
                continue
            _, dc, sc, da, sa, _ = zip(*points, strict=True)
            ax.errorbar(dc, da, xerr=sc, yerr=sa, fmt="o-", color=f"C{k % 10}", label=name,
                        capsize=2, lw=1.2, ms=4)  # fmt: skip
            for strength, x, _, y, _, n in points:
                label = ("" if strength is None else f"{strength:g}") + (f" ({n})" if n > 1 else "")
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.plot([0], [0], "k*", ms=10, label="gaussian")
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("clean PSNR minus Gaussian fine-tune (dB)")
        ax.set_ylabel("worst-case PSNR minus Gaussian fine-tune (dB)")
        ax.set_title(
            f"{(prefix[:-1] or 'bsd68').upper()}: robustness-accuracy frontier", fontsize=9
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        if hidden:
            ax.text(0.99, 0.01, f"clean cost over {-CLEAN_COST_SHOWN:g} dB, not drawn: "
                    + ", ".join(hidden), transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=6)  # fmt: skip
    fig.suptitle(
        f"Worst case over the ensemble (L-inf 8/255 + ObsAtk 5/255 + transfer), sigma "
        f"{SIGMA * 255:g}; labels: knob (budget x 1/255 or weight), (n) seeds",
        fontsize=8,
    )
    fig.tight_layout()
    save_figure(fig, path)
