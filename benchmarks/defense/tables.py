"""The Markdown tables of a results file: pure functions over its JSON lines (``parse``)."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np

from .config import SMOKE, Sizes


def parse(text: str) -> list[dict]:
    """The rows of a results file's text, one JSON object a line (blank lines skipped)."""
    return [json.loads(line) for line in text.splitlines() if line]


METRICS = ("clean", "pgd3", "pgd8", "l2", "obsatk", "pass8", "gain8")


def _cell(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    half = (max(values) - min(values)) / 2
    return f"{np.mean(values):.{digits}f} ± {half:.{digits}f}"


def model_key(r: dict) -> str:
    """The row's model name in weight files and transfer records: the variant (scratch),
    ``finetune-<variant>``, ``<arch>[-<variant>]`` (zoo); training lengths other than the
    full or smoke default prefix the part (``scratch3000-ts``, ``finetune300-ts``)."""
    if r["part"] == "zoo":
        return r["arch"] + ("" if r["variant"] == "gaussian" else f"-{r['variant']}")
    field = "steps" if r["part"] == "scratch" else "finetune_steps"
    default = {getattr(Sizes(), field), getattr(SMOKE, field)}
    steps = "" if r["steps"] in default else str(r["steps"])
    if r["part"] == "finetune" or steps:
        return f"{r['part']}{steps}-{r['variant']}"
    return r["variant"]


def training_table(rows: list[dict], part: str, transfer: dict | None) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("part") == part:
            arch = f"{r['arch']} " if "arch" in r else ""
            groups[f"{arch}{r['variant']} ({r.get('steps', '?')} steps)"].append(r)
    if not groups:
        return ""
    base = {  # the Gaussian baseline's CPU seconds per architecture and number of steps
        (rs[0].get("arch"), rs[0]["steps"]): np.mean([r["train_cpu_s"] for r in rs])
        for rs in groups.values()
        if rs[0]["variant"] == "gaussian"
    }
    lines = [
        f"| {'model' if part == 'zoo' else 'variant'} | seeds | clean | PGD 3/255 | PGD 8/255 "
        "| L2 rho 0.2 | ObsAtk 5/255 | f(y)+delta 8/255 | gain 8/255 | transfer 8/255 "
        "| train s | CPU ratio |",
        "|---|---|" + "---:|" * 10,
    ]
    source = "dncnn-s-25"  # public weights: a black-box source for every trained model
    for name, rs in groups.items():
        cells = [
            _cell([r[m] for r in rs], 3 if m == "gain8" else 2) if m in rs[0] else "-"
            for m in METRICS
        ]
        t = (transfer or {}).get(source, {})
        keys = [model_key(r) + (f"-s{r['seed']}" if r["seed"] else "") for r in rs]
        moved = [t[k] for k in keys if k in t]
        cells.append(_cell(moved) if moved else "-")
        cells.append(f"{np.mean([r['train_s'] for r in rs]):.0f}")
        cpu = np.mean([r["train_cpu_s"] for r in rs])
        ref = base.get((rs[0].get("arch"), rs[0]["steps"]))
        cells.append(f"{cpu / ref:.2f}" if ref and cpu else "-")
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(rows: list[dict]) -> str:
    """Each variant minus the Gaussian model of the same part, architecture, steps and seed:
    seed-to-seed spread cancels, so small effects show (mean ± half range over seeds)."""
    trained = [r for r in rows if r.get("part") in ("scratch", "finetune", "zoo")]
    index = {(r["part"], r.get("arch"), r["steps"], r["variant"], r["seed"]): r for r in trained}
    groups: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for (part, arch, steps, variant, seed), r in index.items():
        base = index.get((part, arch, steps, "gaussian", seed))
        if variant != "gaussian" and base is not None:
            groups[(part, arch, steps, variant)].append((r, base))
    if not groups:
        return ""
    metrics = ("clean", "pgd3", "pgd8", "obsatk")
    lines = ["| part | model | seeds | clean | PGD 3/255 | PGD 8/255 | ObsAtk 5/255 |",
             "|---|---|---:|" + "---:|" * len(metrics)]  # fmt: skip
    order = ("scratch", "finetune", "zoo")
    for (part, arch, steps, variant), pairs in sorted(
        groups.items(), key=lambda g: (order.index(g[0][0]), g[0][1] or "", g[0][2])
    ):
        cells = [_cell([r[m] - b[m] for r, b in pairs]) if m in pairs[0][0] else "-"
                 for m in metrics]  # fmt: skip
        model = f"{arch + ' ' if arch else ''}{variant} ({steps} steps)"
        lines.append(f"| {part} | {model} | {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r.get("part") == "cost"]
    if not rs:
        return ""
    r = rs[-1]
    lines = [f"Batch {r['batch']}, {r['rounds']} interleaved rounds, medians of CPU time.\n"]
    lines += ["| training step | ms | / Gaussian |", "|---|---:|---:|"]
    for name, ms in r["ms"].items():
        lines.append(f"| {name} | {ms:.1f} | {ms / r['ms']['gaussian']:.2f} |")
    return "\n".join(lines)


def detect_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r.get("part") == "detect"]
    if not rs:
        return ""
    lines = ["| model | attack | tiles | AUC global | AUC window |", "|---|---|---:|---:|---:|"]
    for r in rs:
        lines.append(
            f"| {r['model']} | {r['attack']} | {r['tiles']} | {r['global']:.3f} "
            f"| {r['window']:.3f} |"
        )
    return "\n".join(lines)


def _by_model(items, name=lambda item: item) -> dict[str, list]:
    """Group ``items`` by model name without its seed suffix (``ts-s1`` -> ``ts``)."""
    groups: dict[str, list] = defaultdict(list)
    for item in items:
        groups[re.sub(r"-s\d+$", "", name(item))].append(item)
    return groups


def _drop_row(name: str, clean: list[float], columns: list[list[float]]) -> str:
    """``| name | seeds | clean | attacked (drop) ... |`` over the seeds of one model."""
    cells = [_cell(clean)]
    cells += [f"{_cell(v)} ({np.mean(v) - np.mean(clean):+.2f})" for v in columns]
    return f"| {name} | {len(clean)} | " + " | ".join(cells) + " |"


def transfer_table(row: dict | None) -> str:
    """Attacked PSNR (drop from clean) per target and source; seeds of one model in one row."""
    if row is None:
        return ""
    sources = list(row["attacked"])
    lines = ["| target | seeds | clean | " + " | ".join(f"from {s}" for s in sources) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(sources))
    for name, ts in _by_model(row["clean"]).items():
        columns = [[row["attacked"][s][t] for t in ts] for s in sources]
        lines.append(_drop_row(name, [row["clean"][t] for t in ts], columns))
    return "\n".join(lines)


def curves_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r.get("part") == "curves"]
    if not rs:
        return ""
    curves = rs[-1]["curves"]
    budgets = next(iter(curves.values()))["budget"]
    head = " | ".join("clean" if b == 0 else f"{b * 255:.0f}/255" for b in budgets)
    lines = [f"| model | {head} |", "|---|" + "---:|" * len(budgets)]
    for name, c in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{p:.2f}" for p in c["psnr"]) + " |")
    return "\n".join(lines)


def protocol_table(rows: list[dict]) -> str:
    """Reference-protocol PSNR per model, seeds of one variant in one row."""
    groups = _by_model([r for r in rows if r.get("part") == "protocol"], lambda r: r["model"])
    if not groups:
        return ""
    lines = ["| model | seeds | clean | PGD 3/255 (drop) | PGD 8/255 (drop) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, rs in groups.items():
        columns = [[r[key] for r in rs] for key in ("paper3", "paper8")]
        lines.append(_drop_row(name, [r["clean"] for r in rs], columns))
    return "\n".join(lines)


def tables(rows: list[dict]) -> str:
    transfers = [r for r in rows if r.get("part") == "transfer"]
    transfer = transfers[-1] if transfers else None
    attacked = transfer["attacked"] if transfer else None
    parts = [
        ("From scratch (small DnCNN)", training_table(rows, "scratch", attacked)),
        ("Fine-tuned DnCNN-S-25", training_table(rows, "finetune", attacked)),
        ("Other architectures (zoo)", training_table(rows, "zoo", attacked)),
        ("Paired differences against Gaussian training (same seed, dB)", paired_table(rows)),
        ("Training step cost", cost_table(rows)),
        ("Detector ROC AUC", detect_table(rows)),
        ("Transfer, PGD 8/255 (attacked PSNR, dB)", transfer_table(transfer)),
        ("PSNR against the PGD budget (white-box, dB)", curves_table(rows)),
        ("Reference protocol (clamped, objective noisy)", protocol_table(rows)),
    ]
    return "\n\n".join(f"### {title}\n\n{t}" for title, t in parts if t)
