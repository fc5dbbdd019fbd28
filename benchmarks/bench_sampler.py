"""Sampler cost: each family against ``torch.randn`` of the same shape, in the same run.

    python benchmarks/bench_sampler.py            # full: 128x1x64x64 and 16x3x256x256
    python benchmarks/bench_sampler.py --smoke    # tiny shapes, checks the script runs
    python benchmarks/bench_sampler.py --clock cpu   # CPU seconds: steadier on a shared machine

Peak memory: growth of the peak resident set over three draws, per case in a fresh child
process (Linux: /proc/self/clear_refs resets the peak).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved, machine  # noqa: E402

from ts_defense import TSConfig, TSSampler  # noqa: E402

CASES = ("gaussian", "radial", "local", "structured", "mixed p=0.5", "default p=0.2")


def make_case(name: str, clean: torch.Tensor):
    if name == "torch.randn":
        return lambda: torch.randn(clean.shape)
    if name == "clean + sigma * randn":
        return lambda: clean + (25 / 255) * torch.randn_like(clean)
    if name == "gaussian":
        cfg = TSConfig(p_ood=0.0)
    elif name == "mixed p=0.5":
        cfg = TSConfig(p_ood=0.5)
    elif name == "default p=0.2":
        cfg = TSConfig()
    else:
        cfg = TSConfig(p_ood=1.0, families={name: 1.0})
    sampler = TSSampler(cfg, seed=0)
    return lambda: sampler.draw(clean)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak(name: str, shape: tuple[int, ...], queue) -> None:
    clean = torch.rand(shape)
    fn = make_case(name, clean)
    fn()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
    before = _status_kb("VmRSS")
    for _ in range(3):
        fn()
    queue.put((_status_kb("VmHWM") - before) / 1024)


def peak_mb(name: str, shape: tuple[int, ...]) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak, args=(name, shape, q))
    p.start()
    p.join()
    return q.get()


def run(shapes: list[tuple[int, ...]], rounds: int, clock: str = "wall") -> str:
    lines = [f"Machine: {machine()}; {rounds} interleaved rounds, medians of {clock} time.\n"]
    timer = time.process_time if clock == "cpu" else time.perf_counter
    for shape in shapes:
        clean = torch.rand(shape)
        names = ["torch.randn", "clean + sigma * randn", *CASES]
        t = interleaved({n: make_case(n, clean) for n in names}, rounds, clock=timer)
        mem = {n: peak_mb(n, shape) for n in names}
        lines += [
            f"\nShape {'x'.join(map(str, shape))}:\n",
            "| draw | ms | / torch.randn | / clean + sigma*randn | peak RSS growth MB |",
            "|---|---:|---:|---:|---:|",
        ]
        for n in names:
            lines.append(
                f"| {n} | {t[n] * 1e3:.2f} | {t[n] / t['torch.randn']:.2f} | "
                f"{t[n] / t['clean + sigma * randn']:.2f} | {mem[n]:.1f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=100)
    steadier = "cpu: this process's CPU seconds (steadier on a shared machine)"
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall", help=steadier)
    args = ap.parse_args()
    shapes = [(4, 1, 16, 16)] if args.smoke else [(128, 1, 64, 64), (16, 3, 256, 256)]
    print(run(shapes, 3 if args.smoke else args.rounds, args.clock))
