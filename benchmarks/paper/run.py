"""The command: validate the public weights, train every (recipe, seed), evaluate, report.

Results are appended to ``OUT/results.jsonl`` as they come; a rerun with the same ``--out``
skips every model already evaluated (and ``--checkpoint-every`` resumes a model mid-training).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ts_defense import Denoiser, fit
from ts_defense.app.output import json_text
from ts_defense.data import bsd68, bsd400, set12, shared_data_dir
from ts_defense.evaluation.metrics import denoise, psnr
from ts_defense.models import DnCNN, load_dncnn

from . import tables
from .evaluation import evaluate, test_batches, transfer_inputs, worst_case_transfer
from .plan import (
    PRESETS,
    PUBLIC,
    REFERENCE_PSNR,
    SIGMA,
    TOLERANCE,
    Plan,
    Variant,
    job_seconds,
    sized,
)
from .plot import budget_figure, frontier_figure


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.paper",
        description="DnCNN-17 on BSD400 -> BSD68 for each training recipe (see BENCHMARKS.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("runs/paper"), help="results folder")
    p.add_argument("--minutes", type=float, help="wall-clock budget: seeds (then steps) to fit")
    p.add_argument(
        "--recipes", nargs="+", help="override the preset's variants: recipe[@strength][+ema]"
    )
    p.add_argument("--seeds", nargs="+", type=int, help="override the preset's seeds")
    p.add_argument("--steps", type=int, help="override the preset's training steps")
    p.add_argument("--checkpoint-every", type=int, default=0, help="0: resume per model only")
    p.add_argument("--no-validate", action="store_true", help="skip the 29.2 dB check")
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    overrides = {
        "recipes": tuple(args.recipes) if args.recipes else None,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "steps": args.steps,
        "validate": False if args.no_validate else None,
    }
    return dataclasses.replace(
        PRESETS[args.preset], **{k: v for k, v in overrides.items() if v is not None}
    )


class Log:
    """The JSON lines of a run: read back on resume, appended as results come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = [json.loads(line) for line in path.open()] if path.is_file() else []

    def find(self, **keys: object) -> dict | None:
        return next((r for r in self.rows if all(r.get(k) == v for k, v in keys.items())), None)

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json_text(row, indent=None))
        tqdm.write(json_text(row, indent=None).rstrip())
        return row


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, TF32 on"
    return f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"


def validate(den: Denoiser, images: list[torch.Tensor], device: torch.device) -> float:
    """Mean PSNR of ``den`` on the full test images (test noise seed 0, as every evaluation)."""
    full = dataclasses.replace(PRESETS["gpu"], test_crop=None, test_images=len(images), chunk=4)
    clean, noisy = test_batches(images, full, device)
    pairs = zip(clean, noisy, strict=True)
    return float(np.mean([v for x, y in pairs for v in psnr(x, denoise(den, y, SIGMA))]))


def new_model(plan: Plan, seed: int, weights: Path, device: torch.device) -> torch.nn.Module:
    if plan.mode == "finetune":
        return load_dncnn(weights).to(device).train()
    torch.manual_seed(seed)
    return DnCNN(depth=17, features=64).to(device).train()


def train(plan: Plan, recipe: str, seed: int, images: list, out: Path, args, device) -> tuple:
    """Train one model of variant ``recipe``; returns it and the wall milliseconds per step
    (None when resumed)."""
    variant = Variant.parse(recipe)
    model = new_model(plan, seed, shared_data_dir() / "weights" / PUBLIC["dncnn-s-25"], device)
    opt = torch.optim.Adam(model.parameters(), lr=plan.lr)
    sched = (
        torch.optim.lr_scheduler.MultiStepLR(opt, list(plan.milestones), 0.1)
        if plan.milestones
        else None
    )
    name = recipe.replace("@", "-at-").replace("+", "-")
    ckpt = out / "models" / f"{plan.mode}-{name}-s{seed}-{plan.steps}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    resumed = ckpt.is_file()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fit(
        model,
        images,
        recipe=variant.recipe,
        strength=variant.strength_value(),
        ema=plan.ema if variant.ema else 0.0,
        config={"sigma": SIGMA},
        steps=plan.steps,
        batch_size=plan.batch_size,
        patch_size=plan.patch_size,
        seed=seed,
        predicts="noise",
        optimizer=opt,
        scheduler=sched,
        checkpoint=ckpt if args.checkpoint_every else None,
        checkpoint_every=args.checkpoint_every,
        log_every=plan.steps,
        progress=False,
    )
    sync()
    step_ms = None if resumed else (time.perf_counter() - t0) * 1000 / plan.steps
    return Denoiser(model.eval(), predicts="noise"), step_ms


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    plan = make_plan(args)
    device = torch.device(args.device)
    if device.type == "cuda":  # TF32 convolutions: PSNR moves by < 0.01 dB (validated below)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    log = Log(args.out / "results.jsonl")
    log.add({"part": "setup", "machine": machine(device), "plan": dataclasses.asdict(plan)})
    test = bsd68()
    train_images = bsd400()[: plan.train_images]
    weights = shared_data_dir() / "weights"
    public = {
        name: Denoiser(load_dncnn(weights / f), predicts="noise").to(device).eval()
        for name, f in PUBLIC.items()
    }
    if plan.validate and log.find(part="validate") is None:
        score = validate(public["dncnn-s-25"], test, device)
        ok = abs(score - REFERENCE_PSNR) <= TOLERANCE
        log.add({"part": "validate", "clean": score, "expected": REFERENCE_PSNR,
                 "tolerance": TOLERANCE, "ok": ok})  # fmt: skip
        if not ok:
            sys.exit(f"validation failed: public DnCNN-S-25 scores {score:.3f} dB on BSD68")
    sets = {"bsd68": test}
    if plan.second_test == "set12":
        sets["set12"] = set12()
    batches = {name: test_batches(images, plan, device) for name, images in sets.items()}
    cache: dict = {}

    def transfer(name: str) -> tuple:  # crafted once, and only when a model is to be evaluated
        if name not in cache:
            clean, noisy = batches[name]
            worst = worst_case_transfer(public, clean, plan) if plan.worst_case_steps else None
            cache[name] = (transfer_inputs(public, clean, noisy, plan), worst)
        return cache[name]

    def evaluated(den: Denoiser) -> dict:
        """Metrics on every test set: BSD68's plain, the others' as ``"<set>:<metric>"``."""
        row = {}
        for name, (clean, noisy) in batches.items():
            transferred, worst = transfer(name)
            got = evaluate(den, clean, noisy, transferred, plan, worst)
            row.update(got if name == "bsd68" else {f"{name}:{k}": v for k, v in got.items()})
        return row

    if log.find(part="model", recipe=tables.PUBLIC_ROW) is None:
        t0 = time.perf_counter()
        row = evaluated(public["dncnn-s-25"])
        log.add({"part": "model", "recipe": tables.PUBLIC_ROW, "seed": None, **row})
        eval_s = time.perf_counter() - t0
    else:
        eval_s = 60.0  # resumed: no fresh measurement (only used with --minutes)
    if args.minutes is not None:
        probe = dataclasses.replace(plan, steps=max(1, min(20, plan.steps)))
        warm = dataclasses.replace(probe, steps=max(1, min(5, plan.steps)))
        train(warm, "gaussian", 0, train_images, args.out / "probe", args, device)  # warm-up
        _, ms = train(probe, "gaussian", 0, train_images, args.out / "probe", args, device)
        step_s = ms / 1000
        left = args.minutes * 60 - (time.perf_counter() - start)
        plan = sized(plan, 0.9 * left, step_s, eval_s)
        log.add({"part": "sized", "seconds_left": left, "step_s": step_s, "eval_s": eval_s,
                 "steps": plan.steps})  # fmt: skip
        deadline = start + args.minutes * 60
    jobs = [(seed, recipe) for seed in plan.seeds for recipe in plan.recipes]
    for seed, recipe in tqdm(jobs, desc="recipes x seeds"):
        keys = {"part": "model", "recipe": recipe, "seed": seed, "steps": plan.steps}
        if log.find(**keys, mode=plan.mode) is not None:
            continue
        if args.minutes is not None:
            need = job_seconds(plan, recipe, step_s, eval_s)
            if time.perf_counter() + need > deadline:
                log.add({"part": "budget", "stopped_before": [seed, recipe], "needs_s": need})
                break
        den, step_ms = train(plan, recipe, seed, train_images, args.out, args, device)
        row = evaluated(den)
        log.add({**keys, "mode": plan.mode, "step_ms": step_ms, **row})
    write_report(log.rows, args.out, plan.attack_steps)
    print(f"done in {time.perf_counter() - start:.0f} s: {args.out / 'report.md'}")


def write_report(rows: list[dict], out: Path, attack_steps: int) -> None:
    (out / "report.md").write_text(tables.report(rows))
    budget_figure(rows, out / "budget.png", attack_steps)
    frontier_figure(rows, out / "frontier.png")
