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
