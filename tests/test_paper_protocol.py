"""The paper-protocol benchmark (issue 12): its smoke run end to end on the CPU, the time
budget's sizing and the tables (pure functions over the JSON lines)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.paper import tables
from benchmarks.paper.plan import PRESETS, Plan, Variant, job_seconds, sized

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_writes_every_recipe_and_resumes(tmp_path, shared_data):
    cmd = [sys.executable, "-m", "benchmarks.paper", "--preset", "smoke", "--device", "cpu"]
    cmd += ["--out", str(tmp_path)]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").open()]
    models = [r for r in rows if r["part"] == "model"]
    assert [r["recipe"] for r in models] == [tables.PUBLIC_ROW, *PRESETS["smoke"].recipes]
    for r in models:
        for key in ("clean", "pgd8", "pass8", "gain8", "obsatk", "ref3", "from-kair-dncnn-25"):
            assert math.isfinite(r[key]), (r["recipe"], key)
        assert r["pgd8"] < r["clean"] and r["ref3"] < r["ref_clean"]
        # the worst case: no weaker than its strongest member, on both test sets
        for prefix in ("", "set12:"):
            members = r[prefix + "auto_members"]
            assert r[prefix + "auto"] <= min(members.values()) + 1e-9
            assert sum(r[prefix + "auto_wins"].values()) == 2  # one winner per image
            assert r[prefix + "auto"] < r[prefix + "clean"]
    report = (tmp_path / "report.md").read_text()
    assert all(f"| {name} |" in report for name in PRESETS["smoke"].recipes)
    assert "## PSNR (dB) on set12" in report and "| worst case (auto) |" in report
    assert (tmp_path / "budget.png").stat().st_size > 0
    assert (tmp_path / "frontier.png").stat().st_size > 0
    # a second run finds every model evaluated and trains nothing
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    rows2 = [json.loads(line) for line in (tmp_path / "results.jsonl").open()]
    assert [r for r in rows2 if r["part"] == "model"] == models


def test_time_budget_keeps_full_length_when_one_seed_fits_else_cuts_steps():
    plan = Plan(seeds=(0, 1, 2), steps=1000, min_steps=100)
    # weight: gaussian, ts, free-hat, ts-free-hat 1 each + hat, ts-hat 1.5 each = 7; eval 6 x 10 s
    one_seed = 7 * 1000 * 0.01 + 60
    assert sum(job_seconds(plan, r, 0.01, 10) for r in plan.recipes) == pytest.approx(one_seed)
    assert job_seconds(plan, "hat", 0.01, 10) == pytest.approx(25)
    assert sized(plan, 1.5 * one_seed, 0.01, 10) == plan
    short = sized(plan, 0.5 * one_seed, 0.01, 10)
    assert short.seeds == plan.seeds and 100 <= short.steps < 1000
    assert sized(plan, 1.0, 0.01, 10).steps == 100  # never under min_steps


def test_variants_name_a_recipe_its_strength_and_the_weight_average():
    v = Variant.parse("free-hat@4+ema")
    assert (v.recipe, v.strength, v.ema) == ("free-hat", 4.0, True)
    assert v.strength_value() == pytest.approx(4 / 255)  # budgets are given in 1/255
    assert Variant.parse("trades@2").strength_value() == 2.0  # weights as they are
    assert Variant.parse("gaussian") == Variant("gaussian")
    for bad, match in [("gaussian@3", "no knob"), ("free-hat@x", "number"), ("pgd-at", "recipe")]:
        with pytest.raises(ValueError, match=match):
            Variant.parse(bad)


def test_frontier_points_pair_each_variant_with_gaussian_of_its_seed():
    rows = [
        {**row("gaussian", s, 29.0 + s, 25.0, 25.5), "auto": 24.0 + s, "set12:clean": 30.0,
         "set12:auto": 25.0} for s in (0, 1)
    ] + [
        {**row("trades@4", 0, 28.9, 25.6, 25.7), "auto": 24.5, "set12:clean": 29.8,
         "set12:auto": 25.6},
        {**row("trades@4", 1, 29.8, 25.6, 25.7), "auto": 25.3, "set12:clean": 29.9,
         "set12:auto": 25.4},
        {**row("trades", 0, 28.95, 25.6, 25.7), "auto": 24.2},
    ]  # fmt: skip
    points = tables.frontier_points(rows)
    # sorted by strength; trades' default weight is 1; deltas -0.10/-0.20 and +0.5/+0.3
    assert [p[0] for p in points["trades"]] == [1.0, 4.0]
    strength, dc, sc, da, sa, n = points["trades"][1]
    assert (dc, da, n) == (pytest.approx(-0.15), pytest.approx(0.4), 2)
    assert sc == pytest.approx(0.0707, abs=1e-3) and sa == pytest.approx(0.1414, abs=1e-3)
    # the second test set has only the pairs it measured
    assert [p[5] for p in tables.frontier_points(rows, "set12:")["trades"]] == [2]
    assert tables.test_sets(rows) == ["", "set12:"]


def test_plan_refuses_unknown_recipes_and_modes():
    with pytest.raises(ValueError, match="recipe"):
        Plan(recipes=("adversarial",))
    with pytest.raises(ValueError, match="mode"):
        Plan(mode="distill")


def row(recipe, seed, clean, pgd8, pass8, step_ms=10.0):
    metrics = {"clean": clean, "pgd8": pgd8, "pass8": pass8, "gain8": 0.9, "obsatk": 25.0}
    return {"part": "model", "recipe": recipe, "seed": seed, "ref3": 28.0, "step_ms": step_ms,
            **metrics}  # fmt: skip


def test_tables_pair_by_seed_and_split_the_drop():
    rows = [
        row("gaussian", 0, 29.0, 25.0, 25.5, 10.0),
        row("gaussian", 1, 29.2, 25.2, 25.6, 10.0),
        row("hat", 0, 28.9, 25.6, 25.7, 13.0),
        row("hat", 1, 29.1, 25.4, 25.5, 14.0),
    ]
    paired = tables.paired_table(rows)
    # hat - gaussian at PGD 8/255: +0.6 (seed 0) and +0.2 (seed 1): mean 0.40, sd 0.28
    assert "| hat | 2 | -0.10 ± 0.00 | 0.40 ± 0.28 |" in paired
    assert tables.step_ratios(rows) == {"gaussian": 1.0, "hat": 1.35}
    drops = tables.drop_table(rows)
    # gaussian: drop 4.00, pass-through drop (clean - pass) 3.55, beyond it 0.45
    assert "| gaussian | 8/255 | 4.00 | 3.55 | 0.45 | 0.90 |" in drops
    curves = tables.budget_curves(rows)
    assert curves["hat"]["psnr"] == pytest.approx([29.0, 25.5])


def test_tables_never_average_models_of_different_lengths():
    rows = [row("gaussian", 0, 29.0, 25.0, 25.5), row("hat", 0, 28.9, 25.6, 25.7)]
    rows += [{**row("hat", 1, 28.8, 25.9, 25.7), "steps": 500}]
    rows += [{**r, "steps": 2000} for r in rows[:2]]
    rows = rows[2:]  # the two seed-0 rows at 2000 steps, the seed-1 hat row at 500
    table = tables.results_table(rows)
    assert "| hat (2000 steps) | 1 |" in table and "| hat (500 steps) | 1 |" in table
    paired = tables.paired_table(rows)
    assert "hat (2000 steps) | 1 |" in paired and "500 steps" not in paired  # no same-length pair
    public = {"part": "model", "recipe": tables.PUBLIC_ROW, "seed": None, "clean": 29.2,
              "pgd8": 24.7, "pass8": 25.0, "gain8": 1.1, "obsatk": 25.6, "ref3": 28.2}  # fmt: skip
    assert f"| {tables.PUBLIC_ROW} | 1 |" in tables.results_table([public, public, *rows])
