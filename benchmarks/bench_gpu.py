"""TS at GPU speed (issue 13): sampler draws and training steps against their plain baselines.

    python benchmarks/bench_gpu.py --out gpu.jsonl          # CUDA, default sizes, < 90 s
    python benchmarks/bench_gpu.py --device cpu --smoke     # tiny sizes, checks the script runs

Draws: each family and the default mix against ``clean + sigma * randn_like(clean)``, at
128x1x64x64 and 16x3x256x256; the default mix also with ``TSSampler(compile=True)`` (compiled
on the first call, not timed) and, on CUDA, as an experiment: the eager draw captured in a CUDA
graph with the sampler's generator registered (one replay per draw), with a check that its
replays give the eager draws' bits. Steps: DnCNN-17 on 128x1x40x40 and a small SwinIR (if
spandrel is installed), fp32 and bf16 autocast, Adam: the plain loop step against
``TrainStep`` with the default TS draw, checking every step (the default) and every 100 steps
(``check_every=100``), and the latter with the compiled sampler.
Timing: CUDA events (wall clock on the CPU), interleaved rounds, medians after warm-up; the
whole run stops adding rounds at ``--max-seconds``. Prints Markdown; ``--out`` appends JSON lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_training import swinir  # noqa: E402

from ts_defense import TrainStep, TSConfig, TSSampler  # noqa: E402
from ts_defense.app.output import json_text  # noqa: E402
from ts_defense.models import DnCNN  # noqa: E402

SIGMA = 25 / 255
FAMILIES = {
    "gaussian": TSConfig(p_ood=0.0),
    "radial": TSConfig(p_ood=1.0, families={"radial": 1.0}),
    "local": TSConfig(p_ood=1.0, families={"local": 1.0}),
    "structured": TSConfig(p_ood=1.0, families={"structured": 1.0}),
    "default mix (p_ood 0.2)": TSConfig(),
}


class Timer:
    """Median time per call of each case, interleaved rounds, until the rounds or the deadline
    run out (at least ``min_rounds``)."""

    def __init__(self, device: torch.device, deadline: float) -> None:
        self.device, self.deadline = device, deadline

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(
        self, cases: dict[str, Callable[[], object]], rounds: int, reps: int, min_rounds: int = 3
    ) -> dict[str, float]:
        names = list(cases)
        for name in names:  # warm-up: allocator, cuDNN, first draw per device
            for _ in range(2):
                cases[name]()
        self._sync()
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            if r >= min_rounds and time.perf_counter() > self.deadline:
                break
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(self._time(cases[name], reps))
        return {n: statistics.median(v) for n, v in times.items()}

    def _time(self, fn: Callable[[], object], reps: int) -> float:
        if self.device.type != "cuda":
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - t0) / reps
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / reps


MIX = "default mix (p_ood 0.2)"


def graphed_draw(sampler: TSSampler, clean: torch.Tensor) -> tuple[Callable[[], object], object]:
    """The eager draw of ``clean`` captured in a CUDA graph, the sampler's generator registered
    so that each replay advances it: (replay, the draw whose tensors each replay refills)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: cached constants, the allocator
        for _ in range(2):
            sampler.draw(clean, check_finite=False)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(sampler.generator(clean.device))
    with torch.cuda.graph(graph):
        out = sampler.draw(clean, check_finite=False)
    return graph.replay, out


def graph_matches_eager(clean: torch.Tensor, draws: int = 3) -> bool:
    """Whether graph replays give the same noise, bit for bit, as eager draws of the same seed
    after the same number of draws (the capture's warm-up and the capture itself each count)."""
    eager = TSSampler(TSConfig(), seed=5)
    for _ in range(3):
        eager.draw(clean, check_finite=False)
    want = [eager.draw(clean, check_finite=False).noise.clone() for _ in range(draws)]
    replay, out = graphed_draw(TSSampler(TSConfig(), seed=5), clean)
    got = []
    for _ in range(draws):
        replay()
        got.append(out.noise.clone())
    return all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


def draw_cases(shape: tuple[int, ...], device: torch.device) -> dict[str, Callable[[], object]]:
    clean = torch.rand(shape, device=device)
    cases: dict[str, Callable[[], object]] = {
        "plain": lambda: clean + SIGMA * torch.randn_like(clean)
    }
    for name, cfg in FAMILIES.items():
        sampler = TSSampler(cfg, seed=0)
        cases[name] = lambda s=sampler: s.draw(clean, check_finite=False)
    compiled = TSSampler(TSConfig(), seed=0, compile=True)
    cases[f"{MIX}, compiled"] = lambda: compiled.draw(clean, check_finite=False)
    if device.type == "cuda" and hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        cases[f"{MIX}, CUDA graph (experiment)"] = graphed_draw(TSSampler(seed=0), clean)[0]
    return cases


def step_cases(model: torch.nn.Module, predicts: str, clean: torch.Tensor, bf16: bool) -> dict:
    device = clean.device
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext

    def plain() -> None:
        noisy = clean + SIGMA * torch.randn_like(clean)
        with autocast():
            out = model(noisy)
        pred = noisy - out.float() if predicts == "noise" else out.float()
        loss = F.mse_loss(pred, clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def ts_step(check_every: int, compile: bool = False) -> Callable[[], object]:
        sampler = TSSampler(seed=0, compile=compile)
        step = TrainStep(model, opt, sampler, predicts=predicts, check_every=check_every)

        def run() -> None:
            with autocast():
                step(clean)

        return run

    return {
        "plain step": plain,
        "TrainStep": ts_step(1),
        "TrainStep check_every=100": ts_step(100),
        "TrainStep check_every=100, compiled sampler": ts_step(100, compile=True),
    }


def models(smoke: bool) -> list[tuple[str, Callable[[], torch.nn.Module], str, tuple]]:
    if smoke:
        return [("DnCNN-3x8", lambda: DnCNN(depth=3, features=8), "noise", (4, 1, 16, 16))]
    out = [("DnCNN-17", lambda: DnCNN(depth=17), "noise", (128, 1, 40, 40))]
    out.append(("SwinIR (48 dim, 2x2 blocks, window 8)", lambda: swinir(40, False), "clean",
                (16, 1, 40, 40)))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and rounds")
    ap.add_argument("--max-seconds", type=float, default=75.0, help="stop adding rounds after")
    ap.add_argument("--out", type=Path, help="append one JSON line per figure")
    args = ap.parse_args()
    start = time.perf_counter()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    meta = {"device": name, "torch": torch.__version__}

    def record(row: dict) -> None:  # appended as measured: a run cut short keeps what it had
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json_text({**row, **meta}, indent=None))

    print(f"Device: {name}, torch {torch.__version__}; medians of interleaved rounds.\n")
    shapes = [(4, 1, 16, 16)] if args.smoke else [(128, 1, 64, 64), (16, 3, 256, 256)]
    rounds, reps = (3, 2) if args.smoke else (30, 10)
    # share of the budget: draws a third, steps the rest
    timer = Timer(device, start + args.max_seconds / 3)
    for shape in shapes:
        t = timer.run(draw_cases(shape, device), rounds, reps)
        label = "x".join(map(str, shape))
        print(f"Draw {label}:\n\n| draw | ms | / plain |\n|---|---:|---:|")
        for case, sec in t.items():
            ratio = sec / t["plain"]
            print(f"| {case} | {sec * 1e3:.3f} | {ratio:.2f} |")
            record({"part": "draw", "shape": label, "case": case, "ms": sec * 1e3, "ratio": ratio})
        if f"{MIX}, CUDA graph (experiment)" in t:
            same = graph_matches_eager(torch.rand(shape, device=device))
            print(f"\nCUDA graph replays give the eager draws' bits: {same}")
            record({"part": "check", "shape": label, "case": "graph matches eager", "value": same})
        print()
    timer.deadline = start + args.max_seconds
    for model_name, make, predicts, shape in models(args.smoke):
        try:
            model = make().to(device).train()
        except ImportError as err:
            print(f"{model_name}: skipped ({err}; install spandrel to run it)\n")
            continue
        clean = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(device)
        for bf16 in (False, True):
            precision = "bf16 autocast" if bf16 else "fp32"
            t = timer.run(step_cases(model, predicts, clean, bf16), 3 if args.smoke else 15, 1)
            label = "x".join(map(str, shape))
            print(f"{model_name}, batch {label}, {precision}:\n")
            print("| step | ms | / plain step |\n|---|---:|---:|")
            for case, sec in t.items():
                ratio = sec / t["plain step"]
                print(f"| {case} | {sec * 1e3:.2f} | {ratio:.3f} |")
                record({"part": "step", "model": model_name, "shape": label,
                        "precision": precision, "case": case, "ms": sec * 1e3,
                        "ratio": ratio})  # fmt: skip
            print()
    print(f"Total {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
