"""Launch-count proxy for issue 13: the ATen operations one TS draw runs, counted on the CPU.

    python benchmarks/bench_ops.py                 # Markdown table of op counts per draw
    python benchmarks/bench_ops.py --list radial   # also the op names of one case
    python benchmarks/bench_ops.py --json ops.json # the counts as JSON (for a before/after diff)
    python benchmarks/bench_ops.py --smoke         # tiny shapes, checks the script runs
    python benchmarks/bench_ops.py --compiled      # also TSSampler(compile=True) (compiles)

On a GPU the draw is bound by kernel launches, and nearly every elementwise, reduction, random
or copy op is one launch. Two counts per draw, after a warm-up draw (constants cached per
device are then built):

- ``computing ops``: ops seen by a ``TorchDispatchMode`` (below autograd, after composite ops
  are decomposed) that compute something: views, ``empty`` and CPU scalar wrapping are left
  out. This is the launch proxy.
- ``top-level``: aten ops at the top of the profiler's tree, views included (what
  ``tests/test_cuda.py`` bounds).

``--compiled`` also counts, for ``TSSampler(compile=True)``, the ops run outside the compiled
graph (random draws, ``clean + noise``) and inside it the fused kernels and library calls that
inductor made on the CPU (Triton on a GPU fuses differently: a proxy again).

``--train-step`` also counts one DnCNN-17 step at 128x1x40x40 (run once each on the CPU): the
default ``TrainStep`` against a plain loop step, and what it adds besides the draw.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from ts_defense import TSConfig, TSSampler
from ts_defense.app.output import json_text

NOT_KERNELS = {"_unsafe_view", "scalar_tensor", "empty", "empty_strided", "lift_fresh"}
SHAPES = ((128, 1, 64, 64), (16, 3, 256, 256))
SMOKE_SHAPES = ((2, 1, 16, 16), (1, 3, 20, 24))


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NOT_KERNELS:
            self.names.append(name)
        return func(*args, **(kwargs or {}))


def kernel_ops(fn: Callable[[], object]) -> list[str]:
    """Names of the computing aten ops (launch proxy) that ``fn()`` runs."""
    with _Ops() as mode:
        fn()
    return mode.names


def top_level_ops(fn: Callable[[], object]) -> list[str]:
    """Names of the top-level aten ops (views included) in the profile of ``fn()``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    return [
        e.name for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten")
    ]


def cases() -> dict[str, TSConfig]:
    return {
        "gaussian": TSConfig(p_ood=0.0),
        "radial": TSConfig(p_ood=1.0, families={"radial": 1.0}),
        "local": TSConfig(p_ood=1.0, families={"local": 1.0}),
        "structured": TSConfig(p_ood=1.0, families={"structured": 1.0}),
        "default (p_ood 0.2)": TSConfig(),
        "default, zero_mean": TSConfig(zero_mean=True),
        "blind sigma": TSConfig(sigma=(5 / 255, 50 / 255)),
    }


def draw_fn(config: TSConfig, shape: tuple[int, ...]) -> Callable[[], object]:
    sampler, clean = TSSampler(config, seed=0), torch.rand(shape)
    fn = lambda: sampler.draw(clean, check_finite=False)  # noqa: E731
    fn()  # warm-up: per-device constants
    return fn


def count_draws(shapes=SHAPES) -> dict[str, dict[str, tuple[int, int]]]:
    """{shape: {case: (computing ops, top-level ops)}}."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for shape in shapes:
        key = "x".join(map(str, shape))
        out[key] = {}
        for name, cfg in cases().items():
            fn = draw_fn(cfg, shape)
            out[key][name] = (len(kernel_ops(fn)), len(top_level_ops(fn)))
    return out


LIBRARY_SKIP = {"aten::empty", "aten::resolve_conj", "aten::alias"}  # no kernel behind them


def compiled_launches(config: TSConfig, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(ops outside the graph, fused kernels, library calls in it) of one compiled draw."""
    import torch._inductor.config as inductor

    torch._dynamo.reset()  # a fresh compile per case: torch recompiles a function 8 times at most
    with inductor.patch({"cpp.enable_kernel_profile": True}):  # fused kernels in the profile
        sampler, clean = TSSampler(config, seed=0, compile=True), torch.rand(shape)
        sampler.draw(clean, check_finite=False)  # compiles
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            sampler.draw(clean, check_finite=False)
    outside = fused = library = 0
    for e in prof.events():
        parent = e.cpu_parent
        if parent is None and e.name.startswith("aten::") and e.name != "aten::to":  # same dtype
            outside += 1
        elif parent is not None and parent.name.startswith("## Call CompiledFxGraph"):
            fused += "_cpp_fused_" in e.name
            library += e.name.startswith("aten::") and e.name not in LIBRARY_SKIP
    return outside, fused, library


def compiled_table(shapes=SHAPES) -> str:
    lines = ["Compiled draws (CPU inductor), per draw after compiling:\n"]
    for shape in shapes:
        lines += [
            f"Shape {'x'.join(map(str, shape))}:\n",
            "| draw | eager ops | fused kernels | library calls | total |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, cfg in cases().items():
            out, fused, lib = compiled_launches(cfg, shape)
            lines.append(f"| {name} | {out} | {fused} | {lib} | {out + fused + lib} |")
        lines.append("")
    return "\n".join(lines)


def _plain_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Callable[[Tensor], None]:
    def step(clean: Tensor) -> None:
        noisy = clean + (25 / 255) * torch.randn_like(clean)
        loss = torch.nn.functional.mse_loss(model(noisy), noisy - clean)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def count_train_step() -> dict[str, Counter]:
    """Kernel ops of one DnCNN-17 step (128x1x40x40, SGD with momentum), by name: a plain loop
    step, ``TrainStep`` (checks every step, and every 100) and the default draw alone."""
    from ts_defense import TrainStep
    from ts_defense.models import DnCNN

    torch.manual_seed(0)
    clean = torch.rand(128, 1, 40, 40)
    steps: dict[str, Callable[[Tensor], object]] = {}
    for name, every in (("plain step", 0), ("TrainStep", 1), ("TrainStep check_every=100", 100)):
        model = DnCNN(depth=17, features=64)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        steps[name] = (
            _plain_step(model, opt)
            if not every
            else TrainStep(model, opt, TSSampler(seed=0), predicts="noise", check_every=every)
        )
    sampler = TSSampler(seed=0)
    steps["default draw"] = lambda c: sampler.draw(c, check_finite=False)
    out = {}
    for name, step in steps.items():
        step(clean)  # warm-up (optimizer state, constants)
        out[name] = Counter(kernel_ops(lambda step=step: step(clean)))
    return out


def table(counts: dict[str, dict[str, tuple[int, int]]]) -> str:
    lines = [f"torch {torch.__version__}, CPU; ops per draw after a warm-up draw.\n"]
    for shape, rows in counts.items():
        lines += [
            f"Shape {shape}:\n",
            "| draw | computing ops | top-level aten ops |",
            "|---|---:|---:|",
        ]
        lines += [f"| {n} | {k} | {t} |" for n, (k, t) in rows.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", metavar="CASE", help="print the computing ops of one case")
    parser.add_argument("--json", metavar="PATH", help="write the counts as JSON")
    parser.add_argument("--train-step", action="store_true", help="count a DnCNN-17 step too")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks the script")
    parser.add_argument("--compiled", action="store_true", help="count compiled draws too")
    args = parser.parse_args(argv)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    counts = count_draws(shapes)
    print(table(counts))
    if args.compiled:
        print(compiled_table(shapes))
    if args.list:
        fn = draw_fn(cases()[args.list], shapes[0])
        print(f"{args.list} at {shapes[0]}:", " ".join(kernel_ops(fn)))
    if args.train_step:
        step = count_train_step()
        plain, draw = step["plain step"], step["default draw"]
        print("DnCNN-17 step, 128x1x40x40, SGD momentum (computing ops):\n")
        for name, ops in step.items():
            line = f"- {name}: {ops.total()}"
            if name.startswith("TrainStep"):  # beyond the plain step's, less the draw's
                rest = ops - plain - draw
                line += f" (+{ops.total() - plain.total()} on the plain step; "
                line += f"besides the draw: {dict(rest)})"
            print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(json_text(counts, indent=1))


if __name__ == "__main__":
    sys.exit(main())
