"""Command line: ``ts-defense demo`` (the main job), ``ts-defense sampler-report``,
``ts-defense attack`` and ``ts-defense transfer``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._checks import check_positive
from .sampler import TSConfig


def _sampler_report(args: argparse.Namespace) -> int:
    from .report import sampler_report

    cfg = TSConfig(sigma=args.sigma / 255, band=(args.eps_in, args.eps_out), window=args.window)
    table = sampler_report(args.out, cfg, seed=args.seed)
    print(table)
    print(f"\nreport written to {Path(args.out).resolve()}/sampler.{{md,json,png}}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, format_families, format_table, recommendation, run_demo

    check_positive("--steps", args.steps, integer=True)
    cfg = DemoConfig(
        sigma=args.sigma / 255, steps=args.steps, bm3d=not args.no_bm3d, seed=args.seed
    )
    results = run_demo(args.out, cfg)
    print(format_table(results))
    print("\n" + recommendation(results))
    print("\nPSNR under each noise family alone (no attack):")
    print(format_families(results))
    print(f"\nreport written to {Path(args.out).resolve()}/report.md")
    return 0


def _attack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--images",
        nargs="*",
        default=["bundled"],
        help="'bundled' (default), 'set12', bundled image names or image files",
    )
    p.add_argument(
        "--size",
        type=int,
        default=64,
        help="resize bundled / centre-crop other images to this (0: keep)",
    )
    p.add_argument("--sigma", type=float, default=25.0, help="noise level in 0..255 units")
    p.add_argument(
        "--eps",
        type=float,
        default=8.0,
        help="budget in 0..255 units (L-inf; obsatk: RMS per pixel)",
    )
    p.add_argument("--rho", type=float, default=0.1, help="pgd-l2 budget / noise norm")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--objective", default="clean", help="clean | output | noisy")
    p.add_argument("--data", type=Path, default=None, help="shared data folder (weights, Set12)")
    p.add_argument("--seed", type=int, default=0)


def _attack(args: argparse.Namespace) -> int:
    from .attacks.report import attack_options, attack_report, load_images

    images = load_images(args.images, args.size or None, args.data)
    opts = {
        a: attack_options(a, args.eps, args.rho, args.steps, args.objective, args.seed)
        for a in args.attacks
    }
    print(
        attack_report(
            args.model,
            args.attacks,
            images,
            args.sigma / 255,
            args.out,
            opts,
            seed=args.seed,
            data_dir=args.data,
        )
    )
    print(f"\nreport written to {Path(args.out).resolve()}/attack.{{md,json}}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from .attacks.report import attack_options, load_images, transfer_report

    images = load_images(args.images, args.size or None, args.data)
    opts = attack_options(args.attack, args.eps, args.rho, args.steps, args.objective, args.seed)
    result = transfer_report(
        args.models,
        args.attack,
        images,
        args.sigma / 255,
        args.out,
        opts,
        seed=args.seed,
        data_dir=args.data,
    )
    print(result.to_markdown())
    print(f"\nreport written to {Path(args.out).resolve()}/transfer.{{md,json,png}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix such as --step must not silently stand for --steps
    parser = argparse.ArgumentParser(prog="ts-defense", description=__doc__, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo", help="the main job: baseline vs TS, attacked, on bundled images", allow_abbrev=False
    )
    p.add_argument("--out", default="reports/demo", help="report folder")
    p.add_argument("--sigma", type=float, default=25.0, help="noise level in 0..255 units")
    p.add_argument("--steps", type=int, default=300, help="training steps per model")
    p.add_argument("--no-bm3d", action="store_true", help="leave BM3D out of the transfer")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    p = sub.add_parser(
        "sampler-report",
        help="draw every TS family, compare its statistics with the theory",
        allow_abbrev=False,
    )
    p.add_argument("--out", default="reports/sampler", help="report folder")
    p.add_argument("--sigma", type=float, default=25.0, help="noise level in 0..255 units")
    p.add_argument("--eps-in", type=float, default=0.05, help="inner edge of the OOD band")
    p.add_argument("--eps-out", type=float, default=0.35, help="outer edge of the OOD band")
    p.add_argument("--window", type=int, default=8, help="window size of local statistics")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_sampler_report)
    p = sub.add_parser(
        "attack", help="attack one named model, report PSNR/SSIM and typicality", allow_abbrev=False
    )
    p.add_argument("--model", default="dncnn-s-25", help="named model (ts_defense.attacks.zoo)")
    p.add_argument("--attacks", nargs="+", default=["pgd", "fgsm", "mifgsm", "pgd-l2", "obsatk"])
    p.add_argument("--out", default="reports/attack", help="report folder")
    _attack_args(p)
    p.set_defaults(func=_attack)
    p = sub.add_parser(
        "transfer", help="transfer matrix of one attack between named models", allow_abbrev=False
    )
    p.add_argument("--models", nargs="+", default=["dncnn-s-25", "kair-dncnn-25", "bm3d"])
    p.add_argument("--attack", default="pgd")
    p.add_argument("--out", default="reports/transfer", help="report folder")
    _attack_args(p)
    p.set_defaults(func=_transfer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, MemoryError) as err:  # bad input or a bad path
        print(f"ts-defense: error: {' '.join(str(err).split())}", file=sys.stderr)  # one line
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
