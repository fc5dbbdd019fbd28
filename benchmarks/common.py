"""Timing helpers for the benchmarks: interleaved rounds and medians, so that the machine's
drift hits the baseline and the candidate alike; ratios are taken within one run."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved(
    cases: dict[str, Callable[[], object]],
    rounds: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Run every case once per round (rotating the order); return median seconds per case.

    ``clock=time.process_time`` (CPU seconds of this process) is steadier on a shared machine.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = clock()
            cases[name]()
            times[name].append(clock() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def machine() -> str:
    threads = torch.get_num_threads()
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, torch {torch.__version__}, {threads} threads"
