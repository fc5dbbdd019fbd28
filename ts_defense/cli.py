"""Command line: ``ts-defense demo`` (the main job) and ``ts-defense sampler-report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .sampler import TSConfig


def _sampler_report(args: argparse.Namespace) -> int:
    from .report import sampler_report

    cfg = TSConfig(sigma=args.sigma / 255, band=(args.eps_in, args.eps_out), window=args.window)
    table = sampler_report(args.out, cfg, seed=args.seed)
    print(table)
    print(f"\nreport written to {Path(args.out).resolve()}/sampler.{{md,json,png}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ts-defense", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in [
        ("demo", "run the main job on the bundled images"),
        ("sampler-report", "draw every TS family, compare its statistics with the theory"),
    ]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--out", default="reports/demo", help="report folder")
        p.add_argument("--sigma", type=float, default=25.0, help="noise level in 0..255 units")
        p.add_argument("--eps-in", type=float, default=0.05, help="inner edge of the OOD band")
        p.add_argument("--eps-out", type=float, default=0.35, help="outer edge of the OOD band")
        p.add_argument("--window", type=int, default=8, help="window size of local statistics")
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=_sampler_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"ts-defense: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
