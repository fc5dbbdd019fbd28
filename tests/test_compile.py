"""``TSSampler(compile=True)``: the draw's arithmetic as one ``torch.compile`` graph (issue 13).

The random tensors are drawn eagerly from the sampler's generator (same stream as the eager
draw); only the pure part after them is compiled. These tests run inductor on the CPU: the
compiled draw must agree with the eager one to float32 rounding, keep every family's
statistics, run nothing but random draws outside the compiled region, and stay reproducible.
Each new (families, shape) compiles once (10-40 s here), so the cases are few and small.
"""

import pytest
import stat_checks as chk
import torch
from torch.profiler import ProfilerActivity, profile

from ts_defense import TrainStep, TSConfig, TSSampler, register_family
from ts_defense.models import DnCNN
from ts_defense.noise.families import FAMILIES

SIGMA = 25 / 255
RANDOM_OPS = {"aten::rand", "aten::randn", "aten::randint"}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test starts with empty compile caches (torch recompiles a function at most 8 times
    before falling back to eager, which would hide a failure to compile)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def both(config, clean, seed=3, **kwargs):
    eager = TSSampler(config, seed=seed).draw(clean, **kwargs)
    compiled = TSSampler(config, seed=seed, compile=True).draw(clean, **kwargs)
    return eager, compiled


@pytest.mark.parametrize(
    "config",
    [
        TSConfig(),
        TSConfig(
            p_ood=0.8,
            sigma=(5 / 255, 50 / 255),
            families={"radial": 1.0, "local": {"window": 5}, "structured": 1.0},
            zero_mean=True,
            clip=(0, 1),
        ),
    ],
    ids=["default", "blind zero-mean, windows not tiling, clipped"],
)
def test_compiled_draw_matches_the_eager_draw(config):
    clean = torch.rand(12, 3, 21, 18)
    for _ in range(2):  # the second draw runs the cached graph
        eager, compiled = both(config, clean)
        assert torch.equal(eager.family, compiled.family)
        assert torch.equal(eager.sigma, compiled.sigma)
        assert eager.family.bool().any() and not eager.family.bool().all()
        torch.testing.assert_close(compiled.noise, eager.noise, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled.noisy, eager.noisy, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [SIGMA, (5 / 255, 50 / 255)], ids=["fixed", "range"])
def test_only_random_draws_run_outside_the_compiled_graph(sigma):
    sampler = TSSampler(TSConfig(p_ood=0.5, sigma=sigma), seed=0, compile=True)
    clean = torch.rand(8, 1, 16, 16)
    sampler.draw(clean, check_finite=False)  # compiles
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sampler.draw(clean, check_finite=False)
    top = [e.name for e in prof.events() if e.cpu_parent is None]
    regions = [n for n in top if n.startswith("Torch-Compiled Region")]
    assert len(regions) == 1, top
    eager = [n for n in top if n.startswith("aten::") and n not in RANDOM_OPS]
    assert set(eager) <= {"aten::add", "aten::to"}, eager  # clean + noise, the dtype cast
    assert len([n for n in top if n in RANDOM_OPS]) == 6 + isinstance(sigma, tuple), top
    eager_draw = TSSampler(TSConfig(p_ood=0.5, sigma=sigma), seed=0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        eager_draw.draw(clean, check_finite=False)
    many = [e.name for e in prof.events() if e.cpu_parent is None]
    assert len([n for n in many if n.startswith("aten::")]) > 4 * len(top)  # what it fuses


def test_compiled_draws_keep_the_statistics():
    def draw(config, batch, shape):
        return TSSampler(config, seed=1, compile=True).draw(torch.zeros(batch, *shape))

    cfg = TSConfig(p_ood=1.0, families={"radial": {"band": (0.05, 0.3)}})
    chk.in_band(draw(cfg, 64, (3, 16, 16)).noise, SIGMA, (0.05, 0.3), "both")
    cfg = TSConfig(p_ood=1.0, families={"local": {"fraction": 0.3}}, zero_mean=True)
    chk.local_windows(draw(cfg, 16, (3, 32, 32)).noise, SIGMA, 8, 0.3, (0.05, 0.35))
    cfg = TSConfig(p_ood=1.0, families={"structured": 1})
    noise = draw(cfg, 16, (1, 32, 32)).noise
    chk.nominal_power(noise, SIGMA)
    chk.correlated(noise)
    mix = draw(TSConfig(p_ood=0.3), 4000, (1, 4, 4))
    chk.binomial_share(mix.ood, 0.3)
    chk.aep(mix.noise[~mix.ood], SIGMA)


def test_compiled_draws_are_reproducible_and_resume_exactly():
    cfg = TSConfig(sigma=(5 / 255, 50 / 255), p_ood=0.5)
    clean = torch.rand(6, 1, 16, 16)
    first, second = TSSampler(cfg, seed=3, compile=True), TSSampler(cfg, seed=3, compile=True)
    for _ in range(2):  # draw after draw, the same bits
        a, b = first.draw(clean), second.draw(clean)
        assert torch.equal(a.noise, b.noise) and torch.equal(a.family, b.family)
        assert torch.equal(a.sigma, b.sigma) and torch.equal(a.noisy, b.noisy)
    chk.resumes_exactly(cfg, clean, seed=3, compile=True)


def test_families_drawn_by_themselves_still_come_eagerly():
    @register_family("compile-test-uniform")
    def uniform(shape, generator, zero_mean):
        return (torch.rand(shape, generator=generator) - 0.5) * 12**0.5

    try:
        cfg = TSConfig(p_ood=1.0, families={"radial": 1.0, "compile-test-uniform": 1.0})
        eager, compiled = both(cfg, torch.rand(16, 1, 8, 8))
        assert torch.equal(eager.family, compiled.family) and (eager.family == 2).any()
        torch.testing.assert_close(compiled.noise, eager.noise, rtol=1e-5, atol=1e-6)
    finally:
        del FAMILIES["compile-test-uniform"]


def test_train_step_with_a_compiled_model_and_sampler():
    def run(compile):
        torch.manual_seed(0)
        model = DnCNN(channels=1, depth=3, features=8)
        if compile:
            model = torch.compile(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        sampler = TSSampler(TSConfig(p_ood=0.5), seed=0, compile=compile)
        step = TrainStep(model, opt, sampler, predicts="noise")
        clean = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        return [float(step(clean).loss) for _ in range(4)]

    eager, compiled = run(False), run(True)
    assert compiled[-1] < compiled[0]
    assert compiled == pytest.approx(eager, rel=1e-3)


def test_compile_must_be_a_bool():
    with pytest.raises(TypeError, match="compile must be True or False"):
        TSSampler(TSConfig(), compile="max-autotune")


def test_a_compiled_sampler_pickles_and_continues_its_stream():
    import pickle

    sampler = TSSampler(TSConfig(p_ood=0.5), seed=4, compile=True)
    clean = torch.rand(4, 1, 8, 8)
    sampler.draw(clean)
    copy = pickle.loads(pickle.dumps(sampler))  # e.g. into a spawned data-loader worker
    assert copy.compile
    a, b = sampler.draw(clean), copy.draw(clean)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.family, b.family)


def test_more_batch_shapes_than_the_recompile_limit_still_draw():
    sampler = TSSampler(TSConfig(p_ood=1.0, families={"radial": 1}), seed=0, compile=True)
    with torch._dynamo.config.patch(recompile_limit=2):
        for batch in (1, 2, 3, 4):  # the last two run eagerly
            draw = sampler.draw(torch.rand(batch, 1, 8, 8))
            chk.in_band(draw.noise, SIGMA, (0.05, 0.35), "both")
