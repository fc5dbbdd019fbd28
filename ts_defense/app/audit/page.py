"""The audit's report: ``audit.md`` (a leaderboard, then a table per model, per image and in
the mean), ``audit.json`` (every number) and ``audit.png`` (one page: budget curves, the
transfer heatmap and, per model, a strip of crops with their PSNR)."""

from __future__ import annotations

from pathlib import Path

from ...attacks.base import steps_text
from ...evaluation.transfer import TransferResult
from ..output import Content, json_text, write_set
from ..plots import audit_figure
from .run import AuditResult


def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _header(data: dict) -> str:
    c = data["config"]
    u = c["units"]
    return (
        f"sigma {_show(c, c['sigma'])} ({u}); white-box denoising-PGD (L-inf, "
        f"{steps_text(c['steps'])}, clean target) at eps {', '.join(c['budgets_as_typed'])} "
        f"({u}); ObsAtk (zero-mean L2) at eps {_show(c, c['obsatk_eps'])} ({u}, RMS per "
        f"pixel); {len(data['images'])} images; seed {c['seed']}."
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


def audit_files(result: AuditResult) -> dict[str, Content]:
    """``audit.json`` (every number), ``audit.md`` and the page ``audit.png``."""
    return {
        "audit.json": json_text(result.data),
        "audit.md": to_markdown(result.data),
        "audit.png": audit_figure(result.data, result.examples),
    }


def write_report(result: AuditResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``audit.md``, ``audit.json`` and ``audit.png`` into ``out_dir`` as one unit (see
    :func:`~ts_defense.app.output.write_set`); return their paths by kind."""
    paths = write_set(out_dir, audit_files(result), what="audit report")
    return {name.rsplit(".", 1)[1]: path for name, path in paths.items()}
