"""Smoke-sized runs of the benchmark scripts: they must keep working (figures live in
BENCHMARKS.md; no timing is asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("bench_*.py")))
def test_benchmark_smoke(script):
    out = subprocess.run(
        [sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "|" in out.stdout


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
    }
    assert all(r["ratio"] > 0 for r in records) and "| TrainStep |" in run.stdout
