"""Is the frontier's worst case converged and as strong as an independent attack? (issue 23)

For saved models of a ``benchmarks.paper`` run (its ``models/`` folder, written with
``--checkpoint-every``), on the run's BSD68 test crops and test noise: APGD-L-inf at 10 and 25
iterations (the library's), and an independent L-inf PGD written here from the textbook (sign
steps of fixed size, uniform random starts, several restarts, the best restart per image kept),
next to the run's recorded worst case.

    python -m benchmarks.paper.convergence --out runs/frontier --models gaussian free-hat
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ts_defense import Denoiser
from ts_defense.data import bsd68, shared_data_dir
from ts_defense.evaluation.convergence import iteration_curve
from ts_defense.models import load_dncnn
from ts_defense.training.checkpoint import read_checkpoint, restore_checkpoint

from .evaluation import test_batches
from .plan import PRESETS, PUBLIC, SIGMA, Plan


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paper.convergence")
    p.add_argument("--out", type=Path, required=True, help="the run's results folder")
    p.add_argument("--preset", default="cpu-frontier")
    p.add_argument("--models", nargs="+", required=True, help="variants of seed 0")
    p.add_argument("--steps", type=int, default=100, help="independent PGD steps")
    p.add_argument("--restarts", type=int, default=2, help="independent PGD restarts")
    args = p.parse_args(argv)
    plan: Plan = PRESETS[args.preset]
    rows = [json.loads(line) for line in (args.out / "results.jsonl").open()]
    clean, noisy = test_batches(bsd68(), plan, torch.device("cpu"))
    print("| model | worst case (run) | APGD-10 | APGD-25 | independent PGD | ensemble - PGD |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant in args.models:
        name = variant.replace("@", "-at-").replace("+", "-")
        path = args.out / "models" / f"{plan.mode}-{name}-s0-{plan.steps}.pt"
        net = load_dncnn(shared_data_dir() / "weights" / PUBLIC["dncnn-s-25"])
        state = read_checkpoint(path)
        extra = restore_checkpoint(state, net, path=path)
        if extra.get("ema"):
            with torch.no_grad():
                params = [q for q in net.parameters() if q.is_floating_point()]
                torch._foreach_copy_(params, extra["ema"]["shadow"])
        net.eval()
        den = Denoiser(net, predicts="noise")
        row = next(r for r in rows if r.get("recipe") == variant and r.get("seed") == 0)
        curve = iteration_curve(den, clean, SIGMA, iterations=(10, 25), seed=0)
        eps = max(plan.budgets) / 255
        pgd = [v for x, y in zip(clean, noisy, strict=True)
               for v in independent_psnr(net, x, y, eps, args.steps, args.restarts)]  # fmt: skip
        ind = float(np.mean(pgd))
        print(f"| {variant} | {row['auto']:.3f} | {curve['psnr'][0]:.3f} | {curve['psnr'][1]:.3f} "
              f"| {ind:.3f} | {row['auto'] - ind:+.3f} |", flush=True)  # fmt: skip


def independent_psnr(
    model: torch.nn.Module, clean: Tensor, noisy: Tensor, eps: float, steps: int, restarts: int
) -> list[float]:
    """Per image, the lowest PSNR over ``restarts`` runs of plain L-inf PGD on the residual
    network ``model`` (``f(y) = y - model(y)``, clean target, fixed step ``2.5 eps / steps``,
    uniform random starts from a stream of its own)."""
    gen = torch.Generator().manual_seed(12345)
    worst = torch.full((clean.shape[0],), float("inf"), dtype=torch.float64)
    for _ in range(restarts):
        delta = (torch.rand(noisy.shape, generator=gen) * 2 - 1) * eps
        for _ in range(steps):
            delta.requires_grad_(True)
            y = noisy + delta
            loss = ((y - model(y) - clean) ** 2).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
        with torch.no_grad():
            y = noisy + delta
            out = (y - model(y)).clamp(0, 1)
            mse = ((out.double() - clean.double()) ** 2).flatten(1).mean(1)
            worst = torch.minimum(worst, 10 * torch.log10(1 / mse))
    return worst.tolist()


if __name__ == "__main__":
    main()
