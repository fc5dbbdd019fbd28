"""The TS hot path never waits for the device (issue 13); the compiled draw on CUDA too.

On the CPU (always run): the draw and a training step with a deferred non-finite check are
profiled; no op that reads a value back to the host may appear (``item``, ``nonzero``, ...),
and the number of aten ops per draw is bounded so that a regression shows. On CUDA (skipped
without a GPU): the same under ``torch.cuda.set_sync_debug_mode("error")``, the statistical
checks of tests/test_sampler.py on the device, same-seed determinism and state_dict resume.
"""

from contextlib import contextmanager

import pytest
import stat_checks as chk
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from ts_defense import Local, SigmaSchedule, TrainStep, TSConfig, TSSampler
from ts_defense.models import DnCNN
from ts_defense.training.recipes import make_recipe

SYNC_OPS = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero"}
SIGMA = 25 / 255

# config -> most (top-level aten ops, views included; computing ops, the launch proxy) one draw
# may run: measured after issue 13's op reduction (benchmarks/bench_ops.py), top-level + ~20%,
# computing ops + ~10%
CONFIGS = {
    "gaussian": (TSConfig(p_ood=0.0), 8, 6),
    "default": (TSConfig(), 105, 60),
    "blind": (TSConfig(sigma=(5 / 255, 50 / 255)), 106, 62),
    "every sample OOD": (TSConfig(p_ood=1.0), 105, 60),
    "radial": (TSConfig(p_ood=1.0, families={"radial": 1}), 40, 23),
    "local": (TSConfig(p_ood=1.0, families={"local": 1}), 53, 28),
    "structured": (TSConfig(p_ood=1.0, families={"structured": 1}), 57, 36),
    "zero mean": (TSConfig(p_ood=0.5, zero_mean=True), 151, 90),
    "window not tiling": (
        TSConfig(families={"radial": 1, "local": {"window": 5}, "structured": 1}),
        108,
        61,
    ),
    "choice sigma": (TSConfig(sigma=SigmaSchedule.choice(SIGMA, 2 * SIGMA)), 105, 61),
    "family objects": (TSConfig(families={Local(window=4): 1.0, "radial": 1.0}), 68, 36),
}
NOT_KERNELS = {"_unsafe_view", "scalar_tensor", "empty", "empty_strided", "lift_fresh"}


class ComputingOps(TorchDispatchMode):
    """Names of the aten ops that compute (no views, allocations or CPU scalars): about one
    kernel launch each on a GPU."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in NOT_KERNELS:
            self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def aten_ops(fn):
    """(top-level aten op names, all aten op names) that ``fn()`` runs on the CPU."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [
        e.name for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten")
    ]
    return top, {e.name for e in events}


@pytest.mark.parametrize("name", CONFIGS)
def test_cpu_draw_reads_nothing_back_and_runs_few_ops(name):
    config, bound, kernel_bound = CONFIGS[name]
    sampler, clean = TSSampler(config, seed=0), torch.rand(4, 3, 16, 16)
    sampler.draw(clean, check_finite=False)
    top, names = aten_ops(lambda: sampler.draw(clean, check_finite=False))
    assert not names & SYNC_OPS, sorted(names & SYNC_OPS)
    assert len(top) <= bound, f"{len(top)} aten ops per draw (bound {bound}): {top}"
    with ComputingOps() as ops:
        sampler.draw(clean, check_finite=False)
    assert len(ops.names) <= kernel_bound, (
        f"{len(ops.names)} computing ops per draw (bound {kernel_bound}): {ops.names}"
    )


def test_cpu_finite_check_is_the_only_read_back():
    sampler, clean = TSSampler(seed=0), torch.rand(4, 3, 16, 16)
    _, names = aten_ops(lambda: sampler.draw(clean))
    assert names & SYNC_OPS  # the default draw checks clean for NaN/Inf: that reads a number


def test_cpu_train_step_with_deferred_check_reads_nothing_back():
    torch.manual_seed(0)
    model = DnCNN(depth=3, features=8)  # batch norm included
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    step = TrainStep(model, opt, TSSampler(seed=0), predicts="noise", check_every=100,
                     max_grad_norm=1.0)  # fmt: skip
    clean = torch.rand(4, 1, 16, 16)
    step(clean)
    _, names = aten_ops(lambda: step(clean))
    assert not names & SYNC_OPS, sorted(names & SYNC_OPS)


def test_cpu_train_step_checking_every_step_reads_back_once():
    torch.manual_seed(0)
    model = DnCNN(depth=3, features=8)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for clip in (None, 1.0):  # the loss and the gradient norm are checked in one read
        step = TrainStep(model, opt, TSSampler(seed=0), predicts="noise", max_grad_norm=clip)
        clean = torch.rand(4, 1, 16, 16)
        step(clean)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(clean)
        reads = [e.name for e in prof.events() if e.name == "aten::_local_scalar_dense"]
        assert len(reads) == 1, reads


def free_hat_step(device="cpu"):
    torch.manual_seed(0)
    model = DnCNN(depth=3, features=8).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)  # CPU Adam reads its step
    recipe = make_recipe("ts-free-hat")
    step = TrainStep(model, opt, recipe.sampler(0), perturbation=recipe.perturbation(0),
                     predicts="noise", check_every=100)  # fmt: skip
    clean = torch.rand(4, 1, 16, 16, device=device)
    step(clean)
    step(clean)  # from here on half of each batch is replayed along its input gradient
    return step, clean


def test_cpu_amortised_adversarial_step_reads_nothing_back():
    step, clean = free_hat_step()
    _, names = aten_ops(lambda: step(clean))
    assert not names & SYNC_OPS, sorted(names & SYNC_OPS)


# ---- CUDA ----------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@contextmanager
def no_sync():
    """Any host-device synchronisation inside raises RuntimeError."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
@pytest.mark.parametrize("name", CONFIGS)
def test_cuda_draw_never_syncs(name):
    sampler = TSSampler(CONFIGS[name][0], seed=0)
    clean = torch.rand(8, 3, 32, 32, device="cuda")
    sampler.draw(clean, check_finite=False)  # the first draw on a device sets it up
    with no_sync():
        for _ in range(3):
            draw = sampler.draw(clean, check_finite=False)
            _ = draw.deviation, draw.ood, draw.sigma_map
    assert draw.noise.is_cuda and draw.family.is_cuda


@cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_train_step_never_syncs(optimizer):
    torch.manual_seed(0)
    model = DnCNN(depth=3, features=8).cuda()
    opt = (torch.optim.SGD(model.parameters(), lr=1e-3) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-4))  # fmt: skip
    sampler = TSSampler(TSConfig(sigma=(5 / 255, 50 / 255)), seed=0)
    step = TrainStep(model, opt, sampler, predicts="noise", check_every=10, max_grad_norm=1.0)
    clean = torch.rand(8, 1, 32, 32, device="cuda")
    step(clean)
    with no_sync():
        results = [step(clean) for _ in range(3)]
        _ = results[-1].n_ood, results[-1].loss_id, results[-1].deviation
    step.check()
    assert all(torch.isfinite(r.loss) for r in results)


@cuda
def test_cuda_amortised_adversarial_step_never_syncs():
    step, clean = free_hat_step("cuda")
    with no_sync():
        results = [step(clean) for _ in range(3)]
        _ = results[-1].n_adv, results[-1].loss_adv
    step.check()
    assert int(results[-1].n_adv) == 2 and all(torch.isfinite(r.loss) for r in results)


@cuda
@pytest.mark.parametrize("recipe", ["hat", "free-hat"])
def test_cuda_recipes_resume_exactly(tmp_path, recipe):
    from ts_defense import fit

    images = torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(5))

    def run(steps, ckpt=None):
        torch.manual_seed(0)
        model = DnCNN(depth=3, features=8, batch_norm=False).cuda()
        fit(model, images, recipe=recipe, steps=steps, batch_size=4, patch_size=12,
            checkpoint=ckpt, progress=False, predicts="noise")  # fmt: skip
        return model

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    whole = run(4)
    run(2, tmp_path / "c.pt")
    part = run(4, tmp_path / "c.pt")
    for a, b in zip(whole.state_dict().values(), part.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def draw_cuda(config, batch, shape=(1, 16, 16), seed=0):
    return TSSampler(config, seed=seed).draw(torch.zeros(batch, *shape, device="cuda"))


@cuda
def test_cuda_statistics():
    gauss = draw_cuda(TSConfig(sigma=SIGMA, p_ood=0.0), 256)
    chk.aep(gauss.noise, SIGMA)
    for sides in ("both", "above", "below"):
        cfg = TSConfig(p_ood=1.0, families={"radial": {"band": (0.05, 0.3), "sides": sides}})
        chk.in_band(draw_cuda(cfg, 64, (3, 16, 16)).noise, SIGMA, (0.05, 0.3), sides)
    chk.isotropic(draw_cuda(TSConfig(p_ood=1.0, families={"radial": 1}), 512, (1, 8, 8)).noise)
    for zero_mean in (False, True):
        cfg = TSConfig(p_ood=1.0, families={"local": {"fraction": 0.3}}, zero_mean=zero_mean)
        chk.local_windows(draw_cuda(cfg, 16, (3, 32, 32)).noise, SIGMA, 8, 0.3, (0.05, 0.35))
        cfg = TSConfig(p_ood=1.0, families={"structured": 1}, zero_mean=zero_mean)
        chk.nominal_power(draw_cuda(cfg, 16, (3, 24, 20)).noise, SIGMA)
    chk.correlated(
        draw_cuda(TSConfig(p_ood=1.0, families={"structured": 1}), 16, (1, 32, 32)).noise
    )
    chk.binomial_share(draw_cuda(TSConfig(p_ood=0.3), 4000, (1, 4, 4)).ood, 0.3)
    weights = {"radial": 1.0, "local": 0.0, "structured": 3.0}
    family = draw_cuda(TSConfig(p_ood=1.0, families=weights), 4000, (1, 8, 8)).family
    for k, w in enumerate(weights.values(), start=1):
        chk.binomial_share(family == k, w / 4)


@cuda
def test_cuda_same_seed_same_bits_and_resume():
    clean = torch.rand(6, 3, 24, 24, device="cuda")
    cfg = TSConfig(sigma=(5 / 255, 50 / 255), p_ood=0.5)
    a, b = TSSampler(cfg, seed=3).draw(clean), TSSampler(cfg, seed=3).draw(clean)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.family, b.family)
    chk.resumes_exactly(cfg, clean, seed=3)


@cuda
@pytest.mark.parametrize("name", ["default", "zero mean", "window not tiling"])
def test_cuda_compiled_draw_never_syncs_and_matches_the_eager_draw(name):
    config = CONFIGS[name][0]
    clean = torch.rand(8, 3, 32, 32, device="cuda")
    compiled = TSSampler(config, seed=2, compile=True)
    eager = TSSampler(config, seed=2)
    first = compiled.draw(clean, check_finite=False)  # compiles
    want = eager.draw(clean, check_finite=False)
    torch.testing.assert_close(first.noise, want.noise, rtol=1e-5, atol=1e-6)
    assert torch.equal(first.family, want.family)
    with no_sync():
        for _ in range(3):
            draw = compiled.draw(clean, check_finite=False)
    assert draw.noise.is_cuda and torch.isfinite(draw.noise).all()
    with profile(activities=[ProfilerActivity.CPU]) as prof:  # one graph: no break on CUDA
        compiled.draw(clean, check_finite=False)
    top = [e.name for e in prof.events() if e.cpu_parent is None]
    assert sum(n.startswith("Torch-Compiled Region") for n in top) == 1, top


@cuda
def test_cuda_noise_is_float32_under_autocast():
    cfg = TSConfig(p_ood=1.0, families={"structured": 1.0})
    clean = torch.rand(4, 1, 32, 32, device="cuda")
    plain = TSSampler(cfg, seed=1).draw(clean)
    with torch.autocast("cuda", dtype=torch.float16):
        mixed = TSSampler(cfg, seed=1).draw(clean)
    assert torch.equal(plain.noise, mixed.noise)
