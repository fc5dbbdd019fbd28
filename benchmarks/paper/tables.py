"""Markdown tables from the JSON lines of a run (pure functions: rows in, text out)."""

from __future__ import annotations

import statistics
from collections import defaultdict

PUBLIC_ROW = "public DnCNN-S-25"


def _metrics(rows: list[dict]) -> list[str]:
    budgets = sorted({int(k[3:]) for r in rows for k in r if k.startswith("pgd")})
    transfer = sorted({k for r in rows for k in r if k.startswith("from-")})
    return ["clean", *(f"pgd{b}" for b in budgets), "obsatk", "ref3", *transfer]


def _header(metric: str) -> str:
    if metric.startswith("pgd"):
        return f"PGD {metric[3:]}/255"
    if metric.startswith("from-"):
        return f"transfer from {metric[5:]}"
    return {"clean": "clean", "obsatk": "ObsAtk", "ref3": "ref. protocol 3/255"}[metric]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _by_recipe(rows: list[dict]) -> dict[str, list[dict]]:
    """Model rows per recipe; where runs of several lengths are mixed, per recipe and length
    (``"hat (1379 steps)"``): models trained for different lengths are never averaged."""
    models, seen = [], set()
    for r in rows:  # a resumed or repeated run evaluates the public weights again: count once
        key = (r.get("recipe"), r.get("seed"), r.get("steps"))
        if r.get("part") == "model" and key not in seen:
            seen.add(key)
            models.append(r)
    mixed = len({r["steps"] for r in models if "steps" in r}) > 1
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in models:
        key = f"{r['recipe']} ({r['steps']} steps)" if mixed and "steps" in r else r["recipe"]
        groups[key].append(r)
    return groups


def step_ratios(rows: list[dict]) -> dict[str, float]:
    """Median over seeds of each recipe's step time over the Gaussian step of the same seed."""
    groups = _by_recipe(rows)
    base = {r["seed"]: r["step_ms"] for rs in groups.values() for r in rs
            if r["recipe"] == "gaussian" and r.get("step_ms")}  # fmt: skip
    return {
        name: statistics.median(r["step_ms"] / base[r["seed"]] for r in timed)
        for name, rs in groups.items()
        if (timed := [r for r in rs if r["seed"] in base and r.get("step_ms")])
    }


def results_table(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds, per recipe; the public weights first."""
    groups = _by_recipe(rows)
    metrics = _metrics([r for rs in groups.values() for r in rs])
    ratios = step_ratios(rows)
    head = ["recipe", "seeds", *map(_header, metrics), "step time"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, rs in groups.items():
        cells = [_cell([r[m] for r in rs if m in r]) for m in metrics]
        ratio = f"{ratios[name]:.2f}x" if name in ratios else "-"
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def paired_table(rows: list[dict], baseline: str = "gaussian") -> str:
    """Each recipe minus the baseline recipe trained with the same seed and length (mean ± sd,
    dB)."""
    groups = _by_recipe(rows)
    base = {(r["seed"], r.get("steps")): r for rs in groups.values() for r in rs
            if r["recipe"] == baseline}  # fmt: skip
    metrics = _metrics([r for rs in groups.values() for r in rs])
    head = ["recipe - " + baseline, "pairs", *map(_header, metrics)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, rs in groups.items():
        pairs = [
            (r, base[r["seed"], r.get("steps")])
            for r in rs
            if (r["seed"], r.get("steps")) in base and r["recipe"] != baseline
        ]
        if not pairs:
            continue
        cells = [_cell([r[m] - b[m] for r, b in pairs if m in r and m in b]) for m in metrics]
        lines.append(f"| {name} | {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def drop_table(rows: list[dict]) -> str:
    """Per recipe and budget: the drop, its irreducible part (clean minus pass-through PSNR),
    its reducible part (pass-through minus attacked) and the gain (means over seeds)."""
    groups = _by_recipe(rows)
    keys = {k for rs in groups.values() for r in rs for k in r}
    budgets = sorted(int(k[4:]) for k in keys if k.startswith("pass"))
    lines = [
        "| recipe | budget | drop | irreducible | reducible | gain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rs in groups.items():
        for b in budgets:
            drop = statistics.mean(r["clean"] - r[f"pgd{b}"] for r in rs)
            irreducible = statistics.mean(r["clean"] - r[f"pass{b}"] for r in rs)
            gain = statistics.mean(r[f"gain{b}"] for r in rs)
            lines.append(
                f"| {name} | {b}/255 | {drop:.2f} | {irreducible:.2f} | "
                f"{drop - irreducible:.2f} | {gain:.2f} |"
            )
    return "\n".join(lines)


def budget_curves(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """Mean PSNR against the PGD budget per recipe (budget 0: clean), with pass-through."""
    curves = {}
    for name, rs in _by_recipe(rows).items():
        budgets = sorted({int(k[3:]) for r in rs for k in r if k.startswith("pgd")})
        curves[name] = {
            "budget": [0.0, *(b / 255 for b in budgets)],
            "psnr": [statistics.mean(r["clean"] for r in rs)]
            + [statistics.mean(r[f"pgd{b}"] for r in rs) for b in budgets],
            "pass_through": [statistics.mean(r["clean"] for r in rs)]
            + [statistics.mean(r[f"pass{b}"] for r in rs) for b in budgets],
        }
    return curves


def report(rows: list[dict]) -> str:
    """The whole Markdown report of a run."""
    meta = next((r for r in rows if r.get("part") == "setup"), {})
    check = next((r for r in rows if r.get("part") == "validate"), None)
    parts = [
        "# Paper protocol: BSD400 -> BSD68, sigma 25",
        f"Machine: {meta.get('machine', '?')}; plan: {meta.get('plan', '?')}",
    ]
    if check is not None:
        verdict = "passed" if check["ok"] else "FAILED"
        parts.append(
            f"Validation: public DnCNN-S-25 scores {check['clean']:.3f} dB on BSD68 "
            f"(expected {check['expected']} ± {check['tolerance']}): {verdict}."
        )
    parts += [
        "## PSNR (dB), mean ± sd over seeds",
        results_table(rows),
        "## Paired differences against Gaussian training (same seed)",
        paired_table(rows),
        "## Where the white-box drop comes from",
        drop_table(rows),
    ]
    return "\n\n".join(parts) + "\n"
