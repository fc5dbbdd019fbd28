"""The audit's report: ``audit.md`` (a leaderboard, then a table per model, per image and in
the mean), ``audit.json`` (every number) and ``audit.png`` (one page: budget curves, the
transfer heatmap and, per model, a strip of crops with their PSNR)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from ..attacks.evaluate import psnr
from ..attacks.transfer import TransferResult, draw_transfer
from ..robustness import draw_budget_curves
from .run import AuditResult

STRIP = ("clean", "noisy", "attacked", "output", "output_attacked")
CROP = 64


def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _header(data: dict) -> str:
    c = data["config"]
    u = c["units"]
    return (
        f"sigma {_show(c, c['sigma'])} ({u}); white-box denoising-PGD (L-inf, {c['steps']} steps, "
        f"clean target) at eps {', '.join(c['budgets_as_typed'])} ({u}); ObsAtk (zero-mean L2) "
        f"at eps {_show(c, c['obsatk_eps'])} ({u}, RMS per pixel); {len(data['images'])} images; "
        f"seed {c['seed']}."
    )


def _show(config: dict, value: float) -> str:
    return f"{value * 255:g}" if config["units"] == "grey levels" else f"{value:.4g}"


def leaderboard(data: dict) -> str:
    """One row per model (best attacked PSNR at the largest budget first)."""
    budgets = data["config"]["budgets_as_typed"]
    top = budgets[-1]
    sources = data["transfer"]["sources"] if data["transfer"] else []
    head = (
        ["model", "clean PSNR", "clean SSIM"]
        + [f"PGD {b}" for b in budgets]
        + ["ObsAtk"]
        + [f"from {s}" for s in sources]
        + [f"pass-through @{top}", f"gain @{top}", f"atypical windows @{top}"]
    )
    rows = []
    order = sorted(data["models"], key=lambda n: -data["models"][n]["mean"]["pgd"][top]["psnr"])
    for name in order:
        m = data["models"][name]["mean"]
        cells = [name, _f(m["psnr_clean"]), _f(m["ssim_clean"], 4)]
        cells += [_f(m["pgd"][b]["psnr"]) for b in budgets] + [_f(m["obsatk"]["psnr"])]
        cells += [_f(m["transfer"][s]) if "transfer" in m else "n/a" for s in sources]
        top_row = m["pgd"][top]
        cells += [
            _f(top_row["pass_through"]),
            _f(top_row["gain"]),
            _f(top_row["atypical_windows"], 3),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    rule = "|---|" + "---:|" * (len(head) - 1)
    return "\n".join(["| " + " | ".join(head) + " |", rule, *rows])


def model_table(data: dict, name: str) -> str:
    """Per image and mean of one model: clean, attacked per budget, ObsAtk, transfer, and at
    the largest budget SSIM, pass-through, gain and typicality."""
    budgets = data["config"]["budgets_as_typed"]
    top = budgets[-1]
    model = data["models"][name]
    sources = list(model["mean"].get("transfer", {}))
    head = (
        ["image", "clean PSNR", "clean SSIM"]
        + [f"PGD {b}" for b in budgets]
        + [f"SSIM @{top}", "ObsAtk"]
        + [f"from {s}" for s in sources]
        + [f"pass-through @{top}", f"gain @{top}", f"d @{top}", "atypical windows noisy / attacked"]
    )

    def cells(r: dict, i: int | None) -> list[str]:
        pick = (lambda v: v) if i is None else (lambda v: v[i])
        t = r["pgd"][top]
        out = [_f(pick(r["psnr_clean"])), _f(pick(r["ssim_clean"]), 4)]
        out += [_f(pick(r["pgd"][b]["psnr"])) for b in budgets]
        out += [_f(pick(t["ssim"]), 4), _f(pick(r["obsatk"]["psnr"]))]
        out += [_f(pick(r["transfer"][s])) for s in sources]
        out += [_f(pick(t["pass_through"])), _f(pick(t["gain"])), f"{pick(t['d']):+.4f}"]
        out.append(f"{pick(r['atypical_windows_noisy']):.3f} / {pick(t['atypical_windows']):.3f}")
        return out

    rows = [
        "| " + " | ".join([img, *cells(model["per_image"], i)]) + " |"
        for i, img in enumerate(data["images"])
    ]
    rows.append("| **mean** | " + " | ".join(cells(model["mean"], None)) + " |")
    rule = "|---|" + "---:|" * (len(head) - 1)
    return "\n".join(["| " + " | ".join(head) + " |", rule, *rows])


def to_markdown(data: dict) -> str:
    """The whole report as Markdown."""
    parts = [
        "# Robustness audit",
        "",
        _header(data),
        "",
        "PSNR in dB of the denoised image against the clean one. Pass-through: the PSNR of "
        "f(y) + delta, what a model that passed the perturbation through unchanged would score; "
        "gain: |f(y + delta) - f(y)| / |delta|. d: deviation of the attacked noise from the "
        "Gaussian typical set (0 for typical noise); atypical windows: share of 8x8 windows "
        "beyond three standard deviations.",
        "",
        "## Leaderboard",
        "",
        leaderboard(data),
        "",
        f"{data['transfer_note']}.",
    ]
    for name, model in data["models"].items():
        parts += ["", f"## {name}", "", f"Source: {model['source']}.", "", model_table(data, name)]
    if data["transfer"]:
        parts += ["", "## Transfer", "", TransferResult(**data["transfer"]).to_markdown()]
    parts += ["", "![audit](audit.png)", ""]
    return "\n".join(parts)


def _crop(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    s_h, s_w = min(CROP, h), min(CROP, w)
    return x[..., (h - s_h) // 2 : (h - s_h) // 2 + s_h, (w - s_w) // 2 : (w - s_w) // 2 + s_w]


def plot_page(result: AuditResult, path: Path) -> Path:
    """One page: budget curves and transfer heatmap on top, a strip of crops per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = result.data
    c = data["config"]
    unit = 255.0 if c["units"] == "grey levels" else 1.0
    n = len(result.examples)
    fig = plt.figure(figsize=(15, 4.6 + 2.7 * n))
    grid = fig.add_gridspec(1 + n, 5, height_ratios=[1.5] + [1] * n)
    curves = {
        name: {
            "budget": [0.0, *c["budgets"]],
            "psnr": [m["mean"]["psnr_clean"]] + [v["psnr"] for v in m["mean"]["pgd"].values()],
            "pass_through": [m["mean"]["psnr_clean"]]
            + [v["pass_through"] for v in m["mean"]["pgd"].values()],
        }
        for name, m in data["models"].items()
    }
    ax = fig.add_subplot(grid[0, :3] if data["transfer"] else grid[0, :])
    title = (
        f"White-box PGD ({c['steps']} steps) on {', '.join(data['models'])}; sigma "
        f"{_show(c, c['sigma'])}; mean of {len(data['images'])} images"
    )
    draw_budget_curves(ax, curves, unit, title=title)
    if data["transfer"]:
        ax = fig.add_subplot(grid[0, 3:])
        im = draw_transfer(ax, TransferResult(**data["transfer"]), from_zero=False)
        fig.colorbar(im, ax=ax, label="PSNR drop (dB)")
    top = c["budgets_as_typed"][-1]
    for row, (name, ex) in enumerate(result.examples.items(), start=1):
        for col, key in enumerate(STRIP):
            ax = fig.add_subplot(grid[row, col])
            img = _crop(ex[key][0]).clamp(0, 1)
            shown = ax.imshow(
                (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(),
                cmap="gray",
                vmin=0,
                vmax=1,
            )
            label = {
                "attacked": f"attacked input (eps {top})",
                "output_attacked": "output on attacked",
            }.get(key, key)
            score = "" if key == "clean" else f"\n{psnr(ex['clean'], ex[key])[0]:.2f} dB"
            ax.set_title(f"{name}: {label}{score}" if col == 0 else f"{label}{score}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == len(STRIP) - 1:
                fig.colorbar(shown, ax=ax, fraction=0.046, label="intensity")
    fig.suptitle(
        f"Robustness audit: {data['images'][0]} crops ({CROP} px), PSNR of each against the clean "
        f"image",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(result: AuditResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``audit.md``, ``audit.json`` and ``audit.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "audit.md", "json": out / "audit.json", "png": out / "audit.png"}
    paths["json"].write_text(json.dumps(result.data, indent=2))
    paths["md"].write_text(to_markdown(result.data))
    plot_page(result, paths["png"])
    return paths
