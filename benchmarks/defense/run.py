"""The command: parse the options, run a part (or every part at smoke sizes), print the
tables of the results file."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..common import machine
from . import runs
from .config import HAT, PARTS, SMOKE, VARIANTS, Sizes
from .tables import parse, tables


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.defense",
        description="Does TS training make denoisers robust? (see BENCHMARKS.md)",
    )
    ap.add_argument("--smoke", action="store_true", help="every part at toy sizes")
    ap.add_argument("--part", choices=PARTS)
    ap.add_argument("--rounds", type=int, default=30, help="timing rounds of --part cost")
    ap.add_argument("--variants", nargs="+", default=["gaussian", "ts"], choices=list(VARIANTS))
    ap.add_argument("--detect", nargs="+", default=["pretrained", "small"],
                    choices=["pretrained", "small"], help="models for --part detect")  # fmt: skip
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, help="training steps (scratch; default 1000)")
    ap.add_argument("--finetune-steps", type=int, help="fine-tuning steps (default 100)")
    ap.add_argument("--out", type=Path, default=Path("runs/defense.jsonl"),
                    help="results file, appended to (benchmarks/results/defense.jsonl: the "
                    "committed results)")  # fmt: skip
    ap.add_argument("--models-dir", type=Path, default=Path("/tmp/ts_defense_bench/models"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--table", type=Path, help="print the Markdown tables of a results file")
    args = ap.parse_args(argv)
    if not (args.smoke or args.part or args.table):
        ap.error("give --part, --smoke or --table")
    return args


def smoke(sizes: Sizes) -> Path:
    """Every part at toy sizes into a temporary folder; returns its results file."""
    tmp = Path(tempfile.mkdtemp())
    out, models_dir = tmp / "smoke.jsonl", tmp / "models"
    runs.run_training("scratch", ["gaussian", "ts", HAT], [0], sizes, out, models_dir)
    runs.run_training("finetune", ["ts"], [0], sizes, out, models_dir)
    runs.run_zoo(["gaussian", "ts"], [0], sizes, out, models_dir)
    runs.run_detect(sizes, out, models_dir, ("pretrained", "small"))
    runs.run_transfer(sizes, out, models_dir)
    runs.run_curves(sizes, out, models_dir, tmp / "budget_curves.png")
    runs.run_protocol(sizes, out, models_dir)
    runs.run_cost(sizes, out, rounds=2)
    return out


def run_part(args: argparse.Namespace, sizes: Sizes) -> None:
    out, models_dir = args.out, args.models_dir
    if args.part in ("scratch", "finetune"):
        runs.run_training(args.part, args.variants, args.seeds, sizes, out, models_dir)
    elif args.part == "zoo":
        runs.run_zoo(args.variants, args.seeds, sizes, out, models_dir)
    elif args.part == "detect":
        runs.run_detect(sizes, out, models_dir, tuple(args.detect))
    elif args.part == "transfer":
        runs.run_transfer(sizes, out, models_dir)
    elif args.part == "protocol":
        runs.run_protocol(sizes, out, models_dir)
    elif args.part == "curves":
        runs.run_curves(sizes, out, models_dir, out.parent / "budget_curves.png")
    elif args.part == "cost":
        runs.run_cost(sizes, out, args.rounds)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table:
        print(tables(parse(args.table.read_text())))
        return
    sizes = SMOKE if args.smoke else Sizes()
    if args.steps:
        sizes = replace(sizes, steps=args.steps)
    if args.finetune_steps:
        sizes = replace(sizes, finetune_steps=args.finetune_steps)
    t0 = time.perf_counter()
    if args.smoke:
        out = smoke(sizes)
    else:
        run_part(args, sizes)
        out = args.out
    print(f"\nMachine: {machine()}; wall time {time.perf_counter() - t0:.0f} s\n")
    print(tables(parse(out.read_text())))
