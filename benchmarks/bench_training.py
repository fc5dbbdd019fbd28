"""Cost of a TS training step against the same step with plain Gaussian noise, same run.

    python benchmarks/bench_training.py            # DnCNN-17 on 64x1x40x40, a small SwinIR
    python benchmarks/bench_training.py --smoke    # tiny shapes, checks the script runs
    python benchmarks/bench_training.py --recipes  # every recipe's step over the Gaussian one

Cases (same model, same batch, interleaved rounds): the plain loop step
``noisy = clean + sigma * randn_like(clean)`` -> residual model -> MSE -> backward -> SGD step;
``TrainStep`` with ``p_ood=0`` (wrapper overhead only: checks, loss parts, gradient norm);
``TrainStep`` with the default TS mix (``p_ood=0.5``, all three families).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved, machine  # noqa: E402

from ts_defense import TrainStep, TSConfig, TSSampler  # noqa: E402
from ts_defense.models import DnCNN  # noqa: E402
from ts_defense.training.recipes import make_recipe  # noqa: E402

SIGMA = 25 / 255


def swinir(size: int, smoke: bool):
    from spandrel.architectures.SwinIR import SwinIR

    dim, depths = (12, [1]) if smoke else (48, [2, 2])
    return SwinIR(
        img_size=size,
        in_chans=1,
        embed_dim=dim,
        depths=depths,
        num_heads=[4] * len(depths) if not smoke else [2],
        window_size=8 if not smoke else 4,
        mlp_ratio=2.0,
        drop_path_rate=0.0,
    )


def cases(model, predicts: str, clean: torch.Tensor) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(0)

    def plain():
        noisy = clean + SIGMA * torch.randn(clean.shape, generator=gen)
        out = model(noisy)
        pred = noisy - out if predicts == "noise" else out
        loss = F.mse_loss(pred, clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    gauss = TrainStep(model, opt, TSSampler(TSConfig(p_ood=0.0), seed=0), predicts=predicts)
    ts = TrainStep(model, opt, TSSampler(TSConfig(p_ood=0.5), seed=0), predicts=predicts)
    return {
        "plain loop, Gaussian": plain,
        "TrainStep, p_ood=0": lambda: gauss(clean),
        "TrainStep, TS p_ood=0.5": lambda: ts(clean),
    }


def run(smoke: bool, rounds: int, clock: str = "wall") -> str:
    torch.manual_seed(0)
    if smoke:
        setups = [("DnCNN-3x8", DnCNN(depth=3, features=8), "noise", (4, 1, 16, 16))]
        setups.append(("SwinIR tiny", swinir(16, True), "clean", (2, 1, 16, 16)))
    else:
        setups = [("DnCNN-17", DnCNN(depth=17), "noise", (64, 1, 40, 40))]
        setups.append(("SwinIR (48 dim, 2x2 blocks, window 8)", swinir(40, False), "clean",
                       (16, 1, 40, 40)))  # fmt: skip
    timer = time.process_time if clock == "cpu" else time.perf_counter
    lines = [f"Machine: {machine()}; {rounds} interleaved rounds, medians of {clock} time.\n"]
    for name, model, predicts, shape in setups:
        model.train()
        clean = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        t = interleaved(cases(model, predicts, clean), rounds, warmup=1, clock=timer)
        base = t["plain loop, Gaussian"]
        lines += [
            f"\n{name}, batch {'x'.join(map(str, shape))}:\n",
            "| step | ms | / plain loop |",
            "|---|---:|---:|",
        ]
        lines += [f"| {k} | {v * 1e3:.1f} | {v / base:.3f} |" for k, v in t.items()]
    return "\n".join(lines)


def recipe_costs(smoke: bool, rounds: int, names: list[str], clock: str = "cpu") -> str:
    """Each recipe's ``TrainStep`` (draw, attack or pair rows, update) against the ``gaussian``
    recipe's, interleaved on one model and batch (DnCNN-17 on 16x1x40x40, the CPU preset's)."""
    torch.manual_seed(0)
    if smoke:
        label, net, shape = "DnCNN-3x8", DnCNN(depth=3, features=8), (4, 1, 16, 16)
    else:
        label, net, shape = "DnCNN-17", DnCNN(depth=17), (16, 1, 40, 40)
    net.train()
    clean = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(net.parameters(), lr=1e-6)
    steps = {}
    for name in ["gaussian", *[n for n in names if n != "gaussian"]]:
        r = make_recipe(name, config={"sigma": SIGMA})
        step = TrainStep(net, opt, r.sampler(0), perturbation=r.perturbation(0), predicts="noise")
        steps[name] = lambda step=step: step(clean)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    t = interleaved(steps, rounds, warmup=1, clock=timer)
    lines = [
        f"Machine: {machine()}; {label} batch {'x'.join(map(str, shape))}; {rounds} interleaved "
        f"rounds, medians of {clock} time.\n",
        "| recipe | ms per step | / gaussian |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v * 1e3:.0f} | {v / t['gaussian']:.2f}x |" for k, v in t.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=15)
    steadier = "cpu: this process's CPU seconds (steadier on a shared machine)"
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help=steadier)
    ap.add_argument("--recipes", nargs="*", help="time these recipes' steps (none: all)")
    args = ap.parse_args()
    rounds = 2 if args.smoke else args.rounds
    if args.recipes is None or args.smoke:
        print(run(args.smoke, rounds, args.clock))
    if args.recipes is not None or args.smoke:
        from ts_defense.training.recipes import RECIPES

        print(recipe_costs(args.smoke, rounds, args.recipes or list(RECIPES), args.clock))
