"""The audit's report: ``audit.md`` (failed checks and NaN outputs first, then a leaderboard, a
table per model, per image and in the mean, and the evidence of convergence), ``audit.json``
(every number) and ``audit.png`` (one page: budget curves, the transfer heatmap, attacked PSNR
against iterations and restarts, and per model a strip of crops with their PSNR)."""

from __future__ import annotations

import math
from pathlib import Path

from ...evaluation.transfer import TransferResult
from ..output import Content, json_text, write_set
from ..plots import audit_figure
from .run import AuditResult
from .worst import TABLE, describe


def _f(v: float | None, digits: int = 2) -> str:
    return "NaN" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _auto(data: dict) -> bool:
    return data["config"].get("attack", "pgd") == "auto"


def _key(data: dict) -> str:
    return TABLE[data["config"].get("attack", "pgd")]


def _show(config: dict, value: float) -> str:
    return f"{value * 255:g}" if config["units"] == "grey levels" else f"{value:.4g}"


def _header(data: dict) -> str:
    c = data["config"]
    u = c["units"]
    attack = describe(c.get("attack", "pgd"), c["steps"], c.get("restarts", 1))
    obsatk = "APGD-ObsAtk" if _auto(data) else "ObsAtk"
    text = (
        f"sigma {_show(c, c['sigma'])} ({u}); white-box {attack} at eps "
        f"{', '.join(c['budgets_as_typed'])} ({u}); {obsatk} (zero-mean L2) at eps "
        f"{_show(c, c['obsatk_eps'])} ({u}, RMS per pixel); {len(data['images'])} images; "
        f"seed {c['seed']}."
    )
    if _auto(data):
        text += (
            f" Worst case per image over: {', '.join(c['members'])} (APGD-L-inf with the noisy "
            f"objective at the largest budget; transfer: APGD crafted on the public DnCNN-25s)."
        )
    else:
        text += (
            " Fast path (--attack pgd): PGD with a fixed step size overstates robustness; "
            "--attack auto measures the worst case."
        )
    return text


def alerts(data: dict) -> list[str]:
    """The lines a report starts with: each failed sanity check and each NaN/Inf output."""
    return [*data.get("failures", []), *data.get("nonfinite", [])]


def _alert_block(data: dict) -> list[str]:
    lines = alerts(data)
    if not lines:
        checks = {len(m.get("checks", [])) for m in data["models"].values()}
        return [f"All sanity checks passed ({max(checks, default=0)} per model); no NaN output."]
    return [
        f"**Read first: {len(data.get('failures', []))} sanity check(s) FAILED, "
        f"{len(data.get('nonfinite', []))} NaN/Inf output(s).**",
        "",
        *(f"- {line}" for line in lines),
    ]


def _worst_mean(model: dict) -> str:
    w = model["worst"]
    if not math.isnan(w["mean"]):
        return _f(w["mean"])
    return f"NaN ({_f(w['mean_finite'])} over the finite images)"


def wins_line(name: str, model: dict) -> str:
    """Which member won how many images of one model."""
    wins = ", ".join(f"{m} {n}" for m, n in model["worst"]["wins"].items())
    return f"{name}: worst case {_worst_mean(model)} dB; images won: {wins}"


def leaderboard(data: dict) -> str:
    """One row per model (the best worst case, or PGD at the largest budget, first)."""
    budgets = data["config"]["budgets_as_typed"]
    top, key, auto = budgets[-1], _key(data), _auto(data)
    sources = data["transfer"]["sources"] if data["transfer"] else []
    noisy = auto and any("apgd_noisy" in m["mean"] for m in data["models"].values())
    head = (
        ["model", "clean PSNR", "clean SSIM"]
        + [f"{key.upper()} {b}" for b in budgets]
        + (["APGD noisy"] if noisy else [])
        + ["ObsAtk"]
        + [f"from {s}" for s in sources]
        + (["**worst case**"] if auto else [])
        + [f"pass-through @{top}", f"gain @{top}", f"atypical windows @{top}"]
    )

    def score(name: str) -> float:
        m = data["models"][name]
        v = m["worst"]["mean"] if auto else m["mean"][key][top]["psnr"]
        return -math.inf if math.isnan(v) else v

    rows = []
    for name in sorted(data["models"], key=lambda n: -score(n)):
        model = data["models"][name]
        m = model["mean"]
        cells = [name, _f(m["psnr_clean"]), _f(m["ssim_clean"], 4)]
        cells += [_f(m[key][b]["psnr"]) for b in budgets]
        if noisy:
            cells.append(_f(m["apgd_noisy"]["psnr"]) if "apgd_noisy" in m else "n/a")
        cells.append(_f(m["obsatk"]["psnr"]))
        cells += [_f(m["transfer"][s]) if "transfer" in m else "n/a" for s in sources]
        if auto:
            cells.append(f"**{_worst_mean(model)}**")
        top_row = m[key][top]
        cells += [
            _f(top_row["pass_through"]),
            _f(top_row["gain"]),
            _f(top_row["atypical_windows"], 3),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    rule = "|---|" + "---:|" * (len(head) - 1)
    return "\n".join(["| " + " | ".join(head) + " |", rule, *rows])


def model_table(data: dict, name: str) -> str:
    """Per image and mean of one model: clean, attacked per budget, ObsAtk, transfer, the worst
    case and its member (``auto``), and at the largest budget SSIM, pass-through, gain and
    typicality."""
    budgets = data["config"]["budgets_as_typed"]
    top, key, auto = budgets[-1], _key(data), _auto(data)
    model = data["models"][name]
    sources = list(model["mean"].get("transfer", {}))
    noisy = "apgd_noisy" in model["mean"]
    head = (
        ["image", "clean PSNR", "clean SSIM"]
        + [f"{key.upper()} {b}" for b in budgets]
        + [f"SSIM @{top}"]
        + (["APGD noisy"] if noisy else [])
        + ["ObsAtk"]
        + [f"from {s}" for s in sources]
        + (["worst case", "won by"] if auto else [])
        + [f"pass-through @{top}", f"gain @{top}", f"d @{top}", "atypical windows noisy / attacked"]
    )

    def cells(r: dict, i: int | None) -> list[str]:
        pick = (lambda v: v) if i is None else (lambda v: v[i])
        t = r[key][top]
        out = [_f(pick(r["psnr_clean"])), _f(pick(r["ssim_clean"]), 4)]
        out += [_f(pick(r[key][b]["psnr"])) for b in budgets]
        out.append(_f(pick(t["ssim"]), 4))
        if noisy:
            out.append(_f(pick(r["apgd_noisy"]["psnr"])))
        out.append(_f(pick(r["obsatk"]["psnr"])))
        out += [_f(pick(r["transfer"][s])) for s in sources]
        if auto:
            w = model["worst"]
            if i is None:
                won = ", ".join(f"{m} {n}" for m, n in w["wins"].items() if n)
                out += [_worst_mean(model), won]
            else:
                out += [_f(w["psnr"][i]), w["winner"][i]]
        d = pick(t["d"])
        out += [_f(pick(t["pass_through"])), _f(pick(t["gain"]))]
        out.append(_f(d, 4) if math.isnan(d) else f"{d:+.4f}")
        out.append(f"{pick(r['atypical_windows_noisy']):.3f} / {pick(t['atypical_windows']):.3f}")
        return out

    rows = [
        "| " + " | ".join([img, *cells(model["per_image"], i)]) + " |"
        for i, img in enumerate(data["images"])
    ]
    rows.append("| **mean** | " + " | ".join(cells(model["mean"], None)) + " |")
    rule = "|---|" + "---:|" * (len(head) - 1)
    return "\n".join(["| " + " | ".join(head) + " |", rule, *rows])


def _curve_table(label: str, curve: dict) -> list[str]:
    counts, values = curve["count"], curve["psnr"]
    changes = [""] + [_f(b - a, 3) for a, b in zip(values, values[1:], strict=False)]
    return [
        f"| {label} | " + " | ".join(map(str, counts)) + " |",
        "|---|" + "---:|" * len(counts),
        "| mean PSNR (dB) | " + " | ".join(_f(v, 3) for v in values) + " |",
        "| change (dB) | " + " | ".join(changes) + " |",
    ]


def convergence_section(data: dict, name: str) -> list[str]:
    """The evidence for one model: PSNR against iterations and restarts (``auto``), and every
    sanity check with its numbers."""
    model = data["models"][name]
    lines = ["", f"### Convergence and sanity checks: {name}", ""]
    curves = model.get("curves")
    if curves:
        lines += [
            f"{curves['attack']} at eps {curves['budget']}, the table's attack at its largest "
            f"budget; each iteration count a run of its own (the last is the table's), the "
            f"restarts from one run and one restart more{curves['note']}.",
            "",
            *_curve_table("iterations", curves["iterations"]),
            "",
            *_curve_table("restarts", curves["restarts"]),
            "",
        ]
    elif _auto(data):
        lines += ["No curves: no image kept every output finite.", ""]
    else:
        lines += ["Iteration and restart curves: run --attack auto (APGD).", ""]
    lines += [
        f"- {'PASS' if c['passed'] else '**FAIL**'} {c['name']}: {c['detail']}"
        for c in model.get("checks", [])
    ]
    return lines


def to_markdown(data: dict) -> str:
    """The whole report as Markdown."""
    parts = [
        "# Robustness audit",
        "",
        *_alert_block(data),
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
    ]
    if _auto(data):
        parts += [*(f"- {wins_line(n, m)}" for n, m in data["models"].items()), ""]
    parts.append(f"{data['transfer_note']}.")
    for name, model in data["models"].items():
        parts += ["", f"## {name}", "", f"Source: {model['source']}.", "", model_table(data, name)]
        parts += convergence_section(data, name)
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
