"""Markdown tables from the JSON lines of a run (pure functions: rows in, text out)."""

from __future__ import annotations

import statistics
from collections import defaultdict

PUBLIC_ROW = "public DnCNN-S-25"


def test_sets(rows: list[dict]) -> list[str]:
    """The key prefixes of the test sets in ``rows``: ``""`` (BSD68), then ``"set12:"``..."""
    return ["", *sorted({k.split(":")[0] + ":" for r in rows for k in r if ":" in k})]


def _metrics(rows: list[dict], prefix: str = "") -> list[str]:
    keys = {
        k[len(prefix) :]
        for r in rows
        for k in r
        if k.startswith(prefix) and ":" not in k[len(prefix) :]
    }
    budgets = sorted({int(k[3:]) for k in keys if k.startswith("pgd")})
    transfer = sorted(k for k in keys if k.startswith("from-"))
    found = ["clean", *(f"pgd{b}" for b in budgets), "auto", "obsatk", "ref3", *transfer]
    return [prefix + m for m in found if m in keys]


def _header(metric: str) -> str:
    metric = metric.split(":")[-1]
    if metric.startswith("pgd"):
        return f"PGD {metric[3:]}/255"
    if metric.startswith("from-"):
        return f"transfer from {metric[5:]}"
    named = {"clean": "clean", "obsatk": "ObsAtk", "ref3": "ref. protocol 3/255"}
    return named.get(metric, "worst case (auto)")


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


def results_table(rows: list[dict], prefix: str = "") -> str:
    """Mean ± standard deviation over seeds, per recipe; the public weights first (the test
    set of key ``prefix``)."""
    groups = _by_recipe(rows)
    metrics = _metrics([r for rs in groups.values() for r in rs], prefix)
    ratios = step_ratios(rows)
    head = ["recipe", "seeds", *map(_header, metrics), "step time"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, rs in groups.items():
        cells = [_cell([r[m] for r in rs if m in r]) for m in metrics]
        ratio = f"{ratios[name]:.2f}x" if name in ratios else "-"
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def paired_table(rows: list[dict], baseline: str = "gaussian", prefix: str = "") -> str:
    """Each recipe minus the baseline recipe trained with the same seed and length (mean ± sd,
    dB; the test set of key ``prefix``)."""
    groups = _by_recipe(rows)
    base = {(r["seed"], r.get("steps")): r for rs in groups.values() for r in rs
            if r["recipe"] == baseline}  # fmt: skip
    metrics = _metrics([r for rs in groups.values() for r in rs], prefix)
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
    """Per recipe and budget: the drop, the pass-through reference's drop (clean minus
    pass-through PSNR: a reference, not a bound), the drop beyond it and the gain (means over
    seeds)."""
    groups = _by_recipe(rows)
    keys = {k for rs in groups.values() for r in rs for k in r}
    budgets = sorted(int(k[4:]) for k in keys if k.startswith("pass"))
    lines = [
        "| recipe | budget | drop | pass-through drop | drop beyond it | gain |",
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


def frontier_points(rows: list[dict], prefix: str = "", robust: str = "auto") -> dict:
    """Per recipe (its variants along the knob, ``+ema`` apart): ``(strength, paired clean
    difference, its sd, paired robust difference, its sd, pairs)`` against Gaussian training of
    the same seed, sorted by strength (differences in dB; sd 0 for one pair)."""
    from .plan import Variant

    groups = _by_recipe(rows)
    base = {(r["seed"], r.get("steps")): r for rs in groups.values() for r in rs
            if r["recipe"] == "gaussian"}  # fmt: skip
    clean, attacked = prefix + "clean", prefix + robust
    curves: dict[str, list[tuple]] = defaultdict(list)
    for name, rs in groups.items():
        if name in ("gaussian", PUBLIC_ROW) or " (" in name:
            continue
        pairs = [
            (r, base[r["seed"], r.get("steps")]) for r in rs if (r["seed"], r.get("steps")) in base
        ]
        pairs = [(r, b) for r, b in pairs if attacked in r and attacked in b]
        if not pairs:
            continue
        v = Variant.parse(name)
        strength = v.strength if v.strength is not None else _default_strength(v.recipe)
        dc = [r[clean] - b[clean] for r, b in pairs]
        da = [r[attacked] - b[attacked] for r, b in pairs]
        key = v.recipe + (" + EMA" if v.ema else "")
        curves[key].append(
            (strength, statistics.mean(dc), _sd(dc), statistics.mean(da), _sd(da), len(pairs))
        )
    return {k: sorted(v, key=lambda p: -1.0 if p[0] is None else p[0]) for k, v in curves.items()}


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _default_strength(recipe: str) -> float | None:
    from ts_defense.training.recipes import make_recipe

    r = make_recipe(recipe)
    return None if r.strength is None else r.strength * (255 if r.knob == "eps" else 1)


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


def _wins(rows: list[dict]) -> str:
    """Images won by each member of the worst-case ensemble, summed over models and sets."""
    total: dict[str, int] = defaultdict(int)
    for rs in _by_recipe(rows).values():
        for r in rs:
            for k, v in r.items():
                if k.split(":")[-1] == "auto_wins":
                    for member, n in v.items():
                        total[member] += n
    return ", ".join(f"{m} {n}" for m, n in total.items())


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
    for prefix in test_sets(rows):
        name = prefix[:-1] or "bsd68"
        parts += [
            f"## PSNR (dB) on {name}, mean ± sd over seeds",
            results_table(rows, prefix),
            f"## Paired differences against Gaussian training on {name} (same seed)",
            paired_table(rows, prefix=prefix),
        ]
    wins = _wins(rows)
    if wins:
        parts += ["## Which member of the worst case won (images, all models)", wins]
    parts += ["## Where the white-box drop comes from", drop_table(rows)]
    return "\n\n".join(parts) + "\n"
