"""Smoke-sized runs of the benchmark scripts: they must keep working (figures live in
BENCHMARKS.md; no timing is asserted here)."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The header row each script's smoke run must print (a prefix of it).
HEADERS = {
    "bench_attacks": [
        "| attack | ms | / bare loop |",
        "| sources | targets | crafting s |",
        "| --attack | steps | estimate s | s | / pgd |",
    ],
    "defense": [
        "| variant | seeds | clean | PGD 3/255 | PGD 8/255 |",
        "| model | seeds | clean | PGD 3/255 | PGD 8/255 |",
        "| training step | ms | / Gaussian |",
        "| model | attack | tiles | AUC global | AUC window |",
    ],
    "bench_gpu": ["| draw | ms | / plain |"],
    "bench_memory": ["| phase | iterations | RSS start MB |"],
    "bench_ops": ["| draw | computing ops | top-level aten ops |"],
    "bench_sampler": ["| draw | ms | / torch.randn |"],
    "bench_training": ["| step | ms | / plain loop |", "| recipe | ms per step | / gaussian |"],
}


def markdown_tables(text: str) -> list[list[str]]:
    """The Markdown tables in ``text``, each as its lines."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


# name -> command line of its smoke run (from the repository root)
COMMANDS = {
    **{p.stem: [str(p)] for p in sorted((ROOT / "benchmarks").glob("bench_*.py"))},
    "defense": ["-m", "benchmarks.defense"],
}


def run_benchmark(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_benchmark_smoke(name):
    out = run_benchmark([*COMMANDS[name], "--smoke"])
    assert out.returncode == 0, out.stderr[-2000:]
    tables = markdown_tables(out.stdout)
    headers = [t[0] for t in tables]
    for want in HEADERS[name]:
        assert any(h.startswith(want) for h in headers), f"no table headed {want!r}"
    for table in tables:
        width = len(cells(table[0]))
        assert all(re.fullmatch(r":?-+:?", c) for c in cells(table[1])), table[:2]
        assert len(table) > 2, f"table {table[0]!r} has no rows"
        for row in table[2:]:
            values = cells(row)
            assert len(values) == width, row
            for value in values:
                number = re.fullmatch(r"[+-]?(\d+\.?\d*|nan|inf)", value.lower())
                assert number is None or math.isfinite(float(value)), row


def test_gpu_benchmark_runs_on_the_cpu_and_writes_json_lines(tmp_path):
    out = tmp_path / "gpu.jsonl"
    script = ROOT / "benchmarks" / "bench_gpu.py"
    run = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["part"] for r in records} == {"draw", "step"}
    assert {r["case"] for r in records if r["part"] == "draw"} >= {
        "plain",
        "default mix (p_ood 0.2)",
        "default mix (p_ood 0.2), compiled",
    }
    assert all(r["ratio"] > 0 for r in records) and "| TrainStep |" in run.stdout


@pytest.mark.parametrize(
    "results, parts",
    [
        ("defense-issue5.jsonl", 9),  # the first runs: every part, the zoo, detector and cost too
        ("defense.jsonl", 6),  # the re-measurement: scratch, fine-tune, transfer, protocol...
    ],
)
def test_defense_tables_of_the_committed_results(results, parts):
    """``--table`` prints a section per part of the committed results, from the JSON lines."""
    path = f"benchmarks/results/{results}"
    run = run_benchmark(["-m", "benchmarks.defense", "--table", path])
    assert run.returncode == 0, run.stderr[-2000:]
    sections = [line for line in run.stdout.splitlines() if line.startswith("### ")]
    assert sections[0] == "### From scratch (small DnCNN)" and len(sections) == parts
    assert "| gaussian (1000 steps) | 0,1,2 |" in run.stdout


def test_defense_refuses_to_run_nothing():
    run = run_benchmark(["-m", "benchmarks.defense"])
    assert run.returncode == 2 and "give --part, --smoke or --table" in run.stderr


def test_compiled_draw_launch_count_sees_the_graph_and_what_runs_around_it():
    from benchmarks.bench_ops import compiled_launches
    from ts_defense import TSConfig

    outside, fused, library = compiled_launches(
        TSConfig(p_ood=1.0, families={"radial": 1.0}), (2, 1, 8, 8)
    )
    # rand (family), randn (shared noise), rand (radial), add (clean + noise); the rest fused
    assert outside == 4 and fused >= 1 and library >= 1
