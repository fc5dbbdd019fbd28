"""Command line: ``ts-defense demo`` (the main job; ``--from-scratch``: the toy study),
``ts-defense sampler-report``, ``ts-defense attack``, ``ts-defense transfer``, and
``ts-defense evaluate`` / ``compare`` (audit your own denoiser). Noise levels and budgets are in
grey levels (0..255) here.

Every command checks its options and its ``--out`` folder before it computes anything, and
writes its report as one unit (:mod:`ts_defense.app.output`); a mistake is one line on stderr
and exit code 2."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .._checks import MissingDependency, check_positive
from ..noise.sampler import TSConfig
from .output import check_out

DESCRIPTION = (
    "Robust image denoisers by typical-set (TS) training: demo (the main job), sampler-report, "
    "attack, transfer, and evaluate / compare (audit your own denoiser). Noise levels and "
    "budgets are in grey levels (0..255)."
)
DATA_HELP = (
    "shared data folder, searched first (default: weights from $TS_DEFENSE_CACHE, else "
    "~/.cache/ts-defense, then $TS_DEFENSE_DATA/weights; sets from $TS_DEFENSE_DATA; "
    "$TS_DEFENSE_DATA defaults to shared/data beside the checkout)"
)
OUT_HELP = "report folder (new, or holding only files; its report files are replaced as one set)"


def _sampler_report(args: argparse.Namespace) -> int:
    from .report import sampler_report

    band = [args.eps_in, args.eps_out]
    families = {"radial": {"band": band}, "local": {"band": band, "window": args.window}}
    cfg = TSConfig(sigma=args.sigma / 255, families={**families, "structured": 1.0})
    table = sampler_report(args.out, cfg, seed=args.seed)
    print(table)
    print(f"\nreport written to {Path(args.out).resolve()}/sampler.{{md,json,png}}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.steps is not None:
        check_positive("--steps", args.steps, integer=True)
    if not args.from_scratch:
        from .hardening import main_job

        return main_job(args.out, args.steps, args.seeds or args.seed, args.sigma, args.no_bm3d)
    from .demo import DemoConfig, format_families, format_table, recommendation, run_demo

    if args.seeds is not None:
        raise ValueError("--seeds is for the fine-tunes; --from-scratch takes one --seed")
    cfg = DemoConfig(
        sigma=(args.sigma or 25.0) / 255,
        steps=args.steps or DemoConfig.steps,
        bm3d=not args.no_bm3d,
        seed=args.seed or 0,
    )
    results = run_demo(args.out, cfg)
    print(format_table(results))
    print("\n" + recommendation(results))
    print("\nPSNR under each noise family alone (no attack):")
    print(format_families(results))
    print(f"\nreport written to {Path(args.out).resolve()}/report.md")
    return 0


def _attack_args(p: argparse.ArgumentParser) -> None:
    images = "'bundled', 'set12', bundled image names or image files"
    p.add_argument("--images", nargs="*", default=["bundled"], help=images)
    size = "resize bundled / centre-crop other images to this (0: keep)"
    p.add_argument("--size", type=int, default=64, help=size)
    p.add_argument("--sigma", type=float, default=25.0, help="noise level in 0..255 units")
    eps = "budget in 0..255 units (L-inf; obsatk: RMS per pixel)"
    p.add_argument("--eps", type=float, default=8.0, help=eps)
    p.add_argument("--rho", type=float, default=0.1, help="pgd-l2 budget / noise norm")
    p.add_argument("--steps", type=int, default=10, help="attack steps")
    p.add_argument("--objective", default="clean", help="choices: clean, output, noisy")
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and attack starts")


def _attack(args: argparse.Namespace) -> int:
    from .audit.images import image_batches
    from .report import attack_options, attack_report

    images = image_batches(args.images, args.size or None, args.data)
    opts = {
        a: attack_options(a, args.eps, args.rho, args.steps, args.objective, args.seed)
        for a in args.attacks
    }
    where = {"seed": args.seed, "data_dir": args.data}
    sigma = args.sigma / 255
    print(attack_report(args.model, args.attacks, images, sigma, args.out, opts, **where))
    print(f"\nreport written to {Path(args.out).resolve()}/attack.{{md,json}}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    from .audit.images import image_batches
    from .report import attack_options, transfer_report

    images = image_batches(args.images, args.size or None, args.data)
    opts = attack_options(args.attack, args.eps, args.rho, args.steps, args.objective, args.seed)
    where = {"seed": args.seed, "data_dir": args.data}
    sigma = args.sigma / 255
    result = transfer_report(args.models, args.attack, images, sigma, args.out, opts, **where)
    print(result.to_markdown())
    print(f"\nreport written to {Path(args.out).resolve()}/transfer.{{md,json,png}}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .audit import (
        AuditConfig,
        estimate_text,
        resolve_images,
        resolve_model,
        run_audit,
        worst,
        write_report,
    )
    from .audit.page import alerts, leaderboard, wins_line

    if args.command == "compare" and len(args.models) < 2:
        raise ValueError("compare needs at least two models (evaluate takes one or more)")
    flag = "--{}".format
    attack, steps, restarts, members = worst.options(
        args.attack, args.steps, args.restarts, args.members, flag
    )
    config = AuditConfig(
        sigma=args.sigma / 255,
        budgets=tuple(e / 255 for e in args.eps),
        steps=steps,
        obsatk_eps=args.obsatk_eps / 255,
        transfer=not args.no_transfer,
        tile=args.tile,
        tiles=args.tiles,
        seed=args.seed,
        attack=attack,
        restarts=restarts,
        members=members,
    )
    models = [resolve_model(m, args.data) for m in args.models]
    worst.check_models([m.channels for m in models], config, flag)
    images = resolve_images(args.images, args.data)
    print(estimate_text(models, images, config), flush=True)
    result = run_audit(models, images, config, args.data)
    write_report(result, args.out)
    for line in alerts(result.data):  # failed checks and NaN outputs first, never buried
        print(line)
    print(leaderboard(result.data))
    if attack == "auto":
        print("\n" + "\n".join(wins_line(n, m) for n, m in result.data["models"].items()))
    print(f"\n{result.data['transfer_note']}")
    print(f"\nreport written to {Path(args.out).resolve()}/audit.{{md,json,png}}")
    return 0


def _tiles(text: str) -> int | str:
    """``--tiles``: a positive count or ``all``."""
    if text == "all":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count or 'all', got {text!r}")
    return int(text)


def _evaluate_args(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument(
        "models",
        nargs="+",
        metavar="WEIGHTS_OR_NAME",
        help="weights file (architecture detected by spandrel), named model or module:function",
    )
    p.add_argument(
        "--images",
        default="bundled",
        help="image folder (PNG/JPEG/TIFF), or one of: bundled, set12, bsd68",
    )
    p.add_argument("--sigma", type=float, default=25.0, help="noise level in grey levels (0..255)")
    p.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[2.0, 4.0, 8.0],
        help="white-box L-inf budgets in grey levels (APGD, or PGD under --attack pgd)",
    )
    p.add_argument(
        "--obsatk-eps",
        type=float,
        default=5.0,
        help="zero-mean L2 (ObsAtk) budget in grey levels (RMS per pixel)",
    )
    p.add_argument(
        "--attack",
        default="auto",
        help="auto: per image the worst case over APGD (L-inf clean and noisy objectives, "
        "zero-mean L2) and transfer from the public DnCNN-25s, with the evidence of its "
        "convergence; pgd: the fast path (10-step PGD, ObsAtk, PGD transfer); choices: auto, pgd",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="attack iterations (default: 100 under --attack auto, 10 under pgd)",
    )
    p.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="random restarts of every APGD attack, --attack auto only (default: 1)",
    )
    p.add_argument(
        "--members",
        nargs="*",
        default=None,
        help="the ensemble of --attack auto, one or more of: apgd-linf, apgd-linf-noisy, "
        "apgd-obsatk, transfer (default: all four)",
    )
    p.add_argument("--tile", type=int, default=64, help="cut larger images into tiles (0: never)")
    p.add_argument(
        "--tiles",
        type=_tiles,
        default=4,
        help="tiles scored per larger image, drawn at random (seeded); 'all': every tile",
    )
    p.add_argument(
        "--no-transfer", action="store_true", help="leave out transfer from the public DnCNN-25s"
    )
    p.add_argument("--data", type=Path, default=None, help=DATA_HELP)
    p.add_argument("--out", default=f"reports/{name}", help=OUT_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and attack starts")
    p.set_defaults(func=_evaluate)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (or says it, where it is a search)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        return text if "(default: " in text else super()._get_help_string(action)


def _grey_levels(flag: str, v: float) -> None:
    """Refuse a noise level or budget that is not a number of grey levels in (0, 255], as typed:
    a value in (0, 1) is almost surely in image units."""
    if not math.isfinite(v):
        raise ValueError(f"{flag} {v:g} must be a finite number of grey levels (0..255)")
    if v <= 0:
        raise ValueError(f"{flag} {v:g} must be > 0 (grey levels, 0..255)")
    if v < 1:
        raise ValueError(
            f"{flag} {v:g} looks like image units: the command line takes grey levels 0..255 "
            f"({v * 255:.3g}, not {v:g})"
        )
    if v > 255:
        raise ValueError(f"{flag} {v:g} is outside grey levels 0..255")


def _checked(func: object) -> object:
    """Wrap a command so that, before it computes anything, --sigma, --eps and --obsatk-eps are
    checked for sign and units and --out for a folder a report can be written to."""

    def checked(args: argparse.Namespace) -> int:
        for dest in ("sigma", "eps", "obsatk_eps"):
            values = getattr(args, dest, None)
            for v in values if isinstance(values, list) else [values]:
                if v is not None:
                    _grey_levels("--" + dest.replace("_", "-"), v)
        if getattr(args, "out", None) is not None:
            check_out(args.out, "--out")
        return func(args)

    return checked


def build_parser() -> argparse.ArgumentParser:
    from ..attacks import ATTACKS
    from ..models.zoo import MODELS
    from .hardening import HardeningConfig

    attacks, zoo = ", ".join(ATTACKS), ", ".join(MODELS)
    parser = argparse.ArgumentParser(prog="ts-defense", description=DESCRIPTION, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo", help="the main job: harden the public DnCNN-S-25 (free-hat vs Gaussian), audited"
    )
    p.add_argument("--out", default="reports/demo", help=OUT_HELP)
    scratch = "train small DnCNNs from scratch (Gaussian, TS, free-hat) instead: the toy study"
    p.add_argument("--from-scratch", action="store_true", help=scratch)
    steps = (
        f"training steps per model (default: {HardeningConfig.steps} per fine-tune; "
        f"--from-scratch: its own, 300)"
    )
    p.add_argument("--steps", type=int, default=None, help=steps)
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="one seed only (default: 0)")
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help=f"seeds of the fine-tunes (default: {' '.join(map(str, HardeningConfig.seeds))})",
    )
    sigma = "--from-scratch only: noise level, 0..255 (default: 25; the public models are 25)"
    p.add_argument("--sigma", type=float, default=None, help=sigma)
    p.add_argument("--no-bm3d", action="store_true", help="--from-scratch only: leave BM3D out")
    p.set_defaults(func=_demo)
    p = sub.add_parser(
        "sampler-report", help="draw every TS family, compare its statistics with the theory"
    )
    p.add_argument("--out", default="reports/sampler", help=OUT_HELP)
    p.add_argument("--sigma", type=float, default=25.0, help="noise level in 0..255 units")
    p.add_argument("--eps-in", type=float, default=0.05, help="inner edge of the OOD band")
    p.add_argument("--eps-out", type=float, default=0.35, help="outer edge of the OOD band")
    p.add_argument("--window", type=int, default=8, help="window size of local statistics")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.set_defaults(func=_sampler_report)
    p = sub.add_parser("attack", help="attack one named model, report PSNR/SSIM and typicality")
    p.add_argument("--model", default="dncnn-s-25", help=f"named model; choices: {zoo}")
    p.add_argument(
        "--attacks",
        nargs="+",
        default=["pgd", "fgsm", "mifgsm", "pgd-l2", "obsatk"],
        help=f"attacks to run; choices: {attacks}",
    )
    p.add_argument("--out", default="reports/attack", help=OUT_HELP)
    _attack_args(p)
    p.set_defaults(func=_attack)
    p = sub.add_parser("transfer", help="transfer matrix of one attack between named models")
    p.add_argument(
        "--models",
        nargs="+",
        default=["dncnn-s-25", "kair-dncnn-25", "bm3d"],
        help=f"named models; choices: {zoo}",
    )
    p.add_argument("--attack", default="pgd", help=f"choices: {attacks}")
    p.add_argument("--out", default="reports/transfer", help=OUT_HELP)
    _attack_args(p)
    p.set_defaults(func=_transfer)
    p = sub.add_parser("evaluate", help="audit one or more denoisers: attacks, transfer, plots")
    _evaluate_args(p, "audit")
    p = sub.add_parser("compare", help="audit several denoisers side by side (a leaderboard)")
    _evaluate_args(p, "compare")
    for p in [parser, *sub.choices.values()]:
        p.formatter_class = HelpFormatter
        p.allow_abbrev = False  # a prefix such as --step must not silently stand for --steps
        if p is not parser:
            p.set_defaults(func=_checked(p.get_default("func")))
    return parser


def _one_line(kind: str, message: object) -> None:
    print(f"ts-defense: {kind}: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # a warning (an animation's first frame...) is one line
        warnings.showwarning = lambda message, *_, **__: _one_line("warning", message)
        try:
            return args.func(args)
        except (ValueError, TypeError, OSError, MemoryError, MissingDependency) as err:  # bad input
            _one_line("error", err)
            return 2


if __name__ == "__main__":
    raise SystemExit(main())
