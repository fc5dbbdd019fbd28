"""Long runs: resident memory (VmRSS) at the start and the end of thousands of sampler draws,
hundreds of attack steps and hundreds of training steps — growth means a leak.

    python benchmarks/bench_memory.py            # full: 5000 draws, 500 attack steps, 500 steps
    python benchmarks/bench_memory.py --smoke    # a few iterations, checks the script runs

Each phase warms up first (allocator pools, lazy initialisation), then reads VmRSS from
``/proc/self/status`` at the start, at the middle and at the end. A leak grows linearly, so the
second half is compared with the first: steady memory shows ~0 MB in both halves.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ts_defense import Denoiser, TrainStep, TSConfig, TSSampler  # noqa: E402
from ts_defense.attacks import make_attack  # noqa: E402
from ts_defense.models import DnCNN  # noqa: E402


def rss_mb() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not in /proc/self/status")


def measure(name: str, unit: str, n: int, once) -> dict:
    for _ in range(max(1, n // 20)):  # warm-up
        once()
    start = rss_mb()
    for _ in range(n // 2):
        once()
    middle = rss_mb()
    for _ in range(n - n // 2):
        once()
    end = rss_mb()
    return {"phase": name, "n": n, "unit": unit, "start": start, "middle": middle, "end": end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run (checks the script)")
    parser.add_argument("--draws", type=int, default=5000)
    parser.add_argument("--attack-steps", type=int, default=500)
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--attacks", nargs="+", default=["pgd", "pgd-l2", "obsatk"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (memory only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, side = 16, 40
    if args.smoke:
        args.draws, args.attack_steps, args.train_steps = 20, 10, 10
        batch, side = 2, 16
    torch.manual_seed(0)
    clean = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(0))
    sampler = TSSampler(TSConfig(p_ood=0.5), seed=0)
    model = DnCNN(depth=8, features=32)
    den = Denoiser(model, predicts="noise")
    noisy = sampler.draw(clean).noisy
    attacks = {n: make_attack(n, den, 25 / 255, steps=10) for n in args.attacks}
    step = TrainStep(model, torch.optim.Adam(model.parameters(), 1e-4), sampler, predicts="noise")
    rows = [
        measure(
            "TSSampler.draw (16x1x40x40, p_ood=0.5)",
            "draws",
            args.draws,
            lambda: sampler.draw(clean),
        ),
    ]
    for name, attack in attacks.items():
        n = max(1, args.attack_steps // 10)  # 10 steps per call
        rows.append(
            measure(
                f"{name} (10 steps per call, DnCNN-8x32)",
                "calls",
                n,
                lambda a=attack: a(noisy, clean),
            )
        )
        rows[-1]["n"] = n * 10
        rows[-1]["unit"] = "attack steps"
    rows.append(
        measure(
            "TrainStep (DnCNN-8x32, Adam)", "training steps", args.train_steps, lambda: step(clean)
        )
    )
    print(f"Machine: {machine()}\n")
    print(
        "| phase | iterations | RSS start MB | RSS middle MB | RSS end MB | growth 1st half "
        "| growth 2nd half |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['phase']} | {r['n']} {r['unit']} | {r['start']:.1f} | {r['middle']:.1f} | "
            f"{r['end']:.1f} | {r['middle'] - r['start']:+.1f} | {r['end'] - r['middle']:+.1f} |"
        )


if __name__ == "__main__":
    main()
