"""Noise families that own their parameters, nested options and the shared sigma schedule
(issue 15.2): nested blocks and family objects draw the same bits, errors name the nested key,
a family's parameter at the top level is refused with where it goes, custom families carry
parameters, :meth:`Family.draw` is the sampler's pipeline, and the adapters draw sigma with the
same schedule."""

import ast
import dataclasses
import io

import pytest
import stat_checks as chk
import torch

from ts_defense import (
    FAMILIES,
    Family,
    Local,
    Radial,
    SigmaSchedule,
    Structured,
    TSConfig,
    TSSampler,
    register_family,
)

NESTED = {
    "radial": {"weight": 1.0, "band": [0.1, 0.3], "sides": "below"},
    "local": {"weight": 1.0, "band": [0.1, 0.3], "sides": "below", "window": 4, "fraction": 0.5},
    "structured": {"weight": 1.0, "corr_scale": 3, "corr_mix": [0.2, 0.6]},
}


def draws(cfg, seed=3):
    s = TSSampler(cfg, seed=seed)
    out = []
    for shape in [(6, 1, 16, 16), (5, 3, 13, 11)]:
        d = s.draw(torch.zeros(shape))
        out += [d.noise, d.sigma, d.family]
    return out


@pytest.mark.parametrize("zero_mean", [False, True])
def test_nested_options_and_family_objects_draw_identical_bits(zero_mean):
    nested = TSConfig.from_dict({"p_ood": 0.9, "zero_mean": zero_mean, "families": NESTED})
    objects = TSConfig(
        p_ood=0.9,
        zero_mean=zero_mean,
        families={
            Radial(band=(0.1, 0.3), sides="below"): 1.0,
            Local(band=(0.1, 0.3), sides="below", window=4, fraction=0.5): 1.0,
            Structured(corr_scale=3, corr_mix=(0.2, 0.6)): 1.0,
        },
    )
    assert nested == objects
    assert nested.families.family("local") == Local(
        band=(0.1, 0.3), sides="below", window=4, fraction=0.5
    )
    for a, b in zip(draws(nested), draws(objects), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(draws(nested)[0], draws(TSConfig(p_ood=0.9, zero_mean=zero_mean))[0])


def test_nested_round_trip_through_a_weights_only_file():
    cfg = TSConfig(
        sigma=SigmaSchedule.choice(15 / 255, 25 / 255),
        families={Local(window=4): 2.0, "radial": {"band": [0.1, 0.2]}},
        zero_mean=True,
    )
    saved = cfg.to_dict()
    assert saved["families"]["local"] == {
        "weight": 2.0,
        "band": [0.05, 0.35],
        "sides": "both",
        "window": 4,
        "fraction": 0.25,
    }
    assert saved["families"]["radial"]["weight"] == 1.0  # a block without weight weighs 1
    buf = io.BytesIO()
    torch.save(TSSampler(cfg).state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert TSConfig.from_dict(state["config"]) == cfg == TSConfig(**cfg.to_dict())
    TSSampler(cfg, seed=5).load_state_dict(state)  # strict: recognised as the same


def test_family_objects_as_keys_read_back_as_names():
    cfg = TSConfig(families={Local(window=2): 3.0, "structured": 1.0})
    assert list(cfg.families) == ["local", "structured"]
    assert cfg.family_names == ("gaussian", "local", "structured")
    assert cfg.families["local"] == 3.0 and dict(cfg.families) == {"local": 3.0, "structured": 1.0}
    assert cfg.families.family("local") == Local(window=2)
    with pytest.raises(ValueError, match="'local' is given twice"):
        TSConfig(families={Local(window=2): 1.0, "local": 1.0})


@pytest.mark.parametrize(
    "families, match",
    [
        ({"local": {"window": 0}}, r"families\.local\.window must be finite and > 0"),
        ({"local": {"window": 2.5}}, r"families\.local\.window must be an int"),
        ({"local": {"fraction": 1.5}}, r"families\.local\.fraction"),
        ({"radial": {"band": [0.1, 0.7]}}, r"families\.radial\.band=.*eps_out < 0\.5"),
        ({"radial": {"sides": "left"}}, r"families\.radial\.sides"),
        ({"structured": {"corr_mix": [0.5, 1.5]}}, r"families\.structured\.corr_mix"),
        ({"structured": {"corr_scale": 10**9}}, r"families\.structured\.corr_scale"),
        ({"local": {"weight": -1}}, r"families\['local'\] must be a finite weight"),
        ({"local": {"windw": 4}}, r"unknown option\(s\) 'windw' in families\.local; known:"),
        ({"structured": {"band": [0.1, 0.2]}}, r"'band' in families\.structured"),
    ],
)
def test_bad_nested_options_name_the_nested_key(families, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TSConfig.from_dict({"families": families})


def test_family_objects_check_their_own_fields():
    with pytest.raises(ValueError, match=r"families\.local\.window must be at most 4096"):
        Local(window=5000)
    with pytest.raises(ValueError, match=r"families\.radial\.band\[1\]"):
        Radial(band=(0.1, 1e37), sides="above")
    assert Radial(band=[0.1, 1.5], sides="above").band == (0.1, 1.5)


@pytest.mark.parametrize(
    "options, where",
    [
        ({"band": [0.1, 0.2]}, r"give 'band' under families\.radial, families\.local, e\.g\. "),
        ({"window": 4}, r"give 'window' under families\.local, e\.g\. .*'window': 8"),
        ({"local_fraction": 0.5}, r"give 'local_fraction' under families\.local, .*'fraction'"),
        ({"corr_mix": [0.1, 0.2]}, r"give 'corr_mix' under families\.structured"),
    ],
)
def test_a_family_parameter_at_the_top_level_is_refused_with_where_it_goes(options, where):
    with pytest.raises(
        ValueError, match=r"^unknown TS option\(s\) '\w+'; known: .*" + where
    ) as err:
        TSConfig.from_dict(options)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=where):
        TSSampler(**options)  # keyword options go through from_dict
    with pytest.raises(TypeError, match=repr(next(iter(options)))):
        TSConfig(**options)
    example = ast.literal_eval(str(err.value).rsplit("e.g. ", 1)[1])  # a valid config
    TSConfig.from_dict(example)


def test_a_state_saved_with_top_level_family_parameters_is_refused_by_name():
    saved = {**TSConfig().to_dict(), "band": (0.05, 0.35), "window": 8}
    state = {**TSSampler(seed=1).state_dict(), "config": saved}
    with pytest.raises(
        ValueError, match=r"^state\['config'\]: unknown TS option\(s\) 'band', 'window'"
    ):
        TSSampler().load_state_dict(state)
    TSSampler().load_state_dict(state, strict=False)  # the stream alone still continues


def test_registered_family_with_parameters_is_drawn_with_them():
    register_family("test-coarse", Local(window=2, fraction=1.0, band=(0.2, 0.3)))
    try:
        cfg = TSConfig(sigma=0.1, p_ood=1.0, families={"test-coarse": 1.0})
        assert cfg.families.family("test-coarse").window == 2
        noise = TSSampler(cfg, seed=0).draw(torch.zeros(8, 1, 8, 8)).noise
        chk.local_windows(noise, 0.1, 2, 1.0, (0.2, 0.3))
        again = TSConfig.from_dict(cfg.to_dict())  # the name resolves to the registered object
        assert again == cfg
    finally:
        FAMILIES.pop("test-coarse")


def test_two_local_families_with_different_windows():
    register_family("test-fine", Local(window=2, fraction=1.0))
    try:
        cfg = TSConfig(sigma=0.1, p_ood=1.0, families={"local": 1.0, "test-fine": 1.0})
        draw = TSSampler(cfg, seed=0).draw(torch.zeros(64, 1, 8, 8))
        fine = draw.family == 2
        assert 0 < int(fine.sum()) < 64
        chk.local_windows(draw.noise[fine], 0.1, 2, 1.0, (0.05, 0.35))
        chk.local_windows(draw.noise[~fine], 0.1, 8, 0.25, (0.05, 0.35))
    finally:
        FAMILIES.pop("test-fine")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Constant(Family):
    level: float = 1.0
    name = "test-constant"

    def draw(self, shape, gen, zero_mean=False):
        return torch.full(shape, self.level)


def test_registered_family_class_carries_parameters_through_options():
    register_family("test-constant", Constant)
    try:
        cfg = TSConfig.from_dict(
            {"sigma": 0.1, "p_ood": 1.0, "families": {"test-constant": {"level": 2.0}}}
        )
        noise = TSSampler(cfg, seed=0).draw(torch.zeros(3, 1, 4, 4)).noise
        torch.testing.assert_close(noise, torch.full_like(noise, 0.2))
        assert TSConfig(families={Constant(level=2.0): 1.0}).to_dict()["families"] == {
            "test-constant": {"weight": 1.0, "level": 2.0}
        }
        with pytest.raises(ValueError, match="already registered"):
            register_family("test-constant", Constant)
    finally:
        FAMILIES.pop("test-constant")
    with pytest.raises(ValueError, match="not registered"):
        TSConfig(families={Constant(): 1.0})


@pytest.mark.parametrize("zero_mean", [False, True])
@pytest.mark.parametrize("name", ["radial", "local", "structured", "test-coarse"])
def test_family_draw_is_the_sampler_draw_of_that_family_alone(name, zero_mean):
    """One pipeline: ``Family.draw`` gives the bits the sampler draws for that family at sigma 1
    (after the sampler's family choice, the one random draw before the noise)."""
    register_family("test-coarse", Local(window=3, fraction=0.5))  # windows not tiling 8x10
    try:
        cfg = TSConfig(sigma=1.0, p_ood=1.0, families={name: 1.0}, zero_mean=zero_mean)
        sampler = TSSampler(cfg, seed=5)
        gen = torch.Generator()
        gen.set_state(sampler.generator().get_state())
        drawn = sampler.draw(torch.zeros(4, 2, 8, 10))
        assert bool((drawn.family == 1).all())
        torch.rand(4, generator=gen)  # the family choice
        alone = FAMILIES[name].draw((4, 2, 8, 10), gen, zero_mean)
        assert alone.dtype == torch.float32 and torch.equal(alone, drawn.noise)
        assert torch.equal(gen.get_state(), sampler.generator().get_state())
    finally:
        FAMILIES.pop("test-coarse")


def test_first_gives_the_first_listed_family_of_a_kind_else_its_defaults():
    cfg = TSConfig(families={"structured": 1.0, Local(window=4, band=(0.1, 0.2)): 1.0})
    assert cfg.families.first(Radial, Local) == Local(window=4, band=(0.1, 0.2))
    assert cfg.families.first(Radial) == Radial() and cfg.families.first(Structured) == Structured()


def test_only_keeps_the_family_parameters():
    cfg = TSConfig(families={Local(window=4): 1.0, "radial": 2.0}, p_ood=0.1)
    alone = cfg.only("local")
    assert alone.p_ood == 1.0 and alone.families.family("local") == Local(window=4)
    assert list(alone.families) == ["local"] and cfg.only("gaussian").p_ood == 0.0


# --- the sigma schedule ---------------------------------------------------------------------


def test_choice_schedule_draws_only_its_values_equally_often():
    values = (5 / 255, 15 / 255, 50 / 255)
    cfg = TSConfig(sigma=SigmaSchedule.choice(*values), p_ood=0.5)
    sigma = TSSampler(cfg, seed=2).draw(torch.zeros(3000, 1, 4, 4)).sigma
    table = torch.tensor(values)
    assert bool((sigma[:, None] == table).any(1).all())
    for v in table:
        chk.binomial_share(sigma == v, 1 / 3)


def test_schedule_forms_and_checks():
    assert TSConfig(sigma=SigmaSchedule.fixed(0.1)) == TSConfig(sigma=0.1)
    assert TSConfig(sigma=SigmaSchedule.uniform(0.1, 0.2)).sigma == (0.1, 0.2)
    floored = SigmaSchedule.uniform(0.0, 0.2, floor=1e-5)
    assert TSConfig(sigma=floored).sigma == floored
    assert SigmaSchedule.parse(floored.to_dict()) == floored
    gen = torch.Generator().manual_seed(0)
    assert bool((floored.draw(1000, gen) >= 1e-5).all())
    for bad, match in [
        (SigmaSchedule.choice, "sigma values must be a non-empty list"),
        (lambda: SigmaSchedule.choice(0.1, 0.0), "sigma must be finite and > 0"),
        (lambda: SigmaSchedule("steps", (0.1,)), "sigma kind"),
        (lambda: TSConfig(sigma=SigmaSchedule.choice(0.1, 2.0)), "exceeds data_range"),
        (lambda: TSConfig.from_dict({"sigma": {"kind": "choice"}}), "sigma as a mapping"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            bad()


@pytest.mark.parametrize(
    "block",
    [
        {"sigma": 25},
        {"sigma": [0, 50]},
        {"sigma": [0, 15, 50], "sigma_type": "choice"},
        {"sigma": [15, 25], "sigma_type": "choice"},
    ],
)
def test_adapters_draw_sigma_with_the_shared_schedule(block):
    from ts_defense.adapters._options import MIN_SIGMA, draw_noisy, grey_sigma, sampler_from_options

    grey = grey_sigma("ts.sigma", block["sigma"], block.get("sigma_type"))
    values = block["sigma"] if isinstance(block["sigma"], list) else [block["sigma"]]
    kind = "choice" if "sigma_type" in block else "range" if len(values) == 2 else "fixed"
    assert (grey.kind, grey.values) == (kind, tuple(v / 255 for v in values))
    assert grey.floor == (MIN_SIGMA if 0 in values else 0.0)  # draws of 0 are raised
    sampler = sampler_from_options({**block, "p_ood": 0.5}, seed=4)
    assert sampler.config.sigma_schedule == grey
    state = sampler.generator("cpu").get_state()
    _, sigma, _ = draw_noisy(sampler, torch.zeros(64, 1, 4, 4))
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    assert torch.equal(sigma, grey.draw(64, gen))
    assert float(sigma.min()) >= MIN_SIGMA


# --- fewer ops (issue 13), the plain formula's bits -----------------------------------------


def band_deviation(shape, family, gen):
    """The plain formula: deviations uniform in the band, the sign from a second uniform."""
    lo, hi = family.band
    d = torch.rand(shape, generator=gen).mul_(hi - lo).add_(lo)
    if family.sides == "below":
        return d.neg_()
    if family.sides == "both":  # -1 below 1/2, +1 above
        return d.mul_(torch.rand(shape, generator=gen).ge_(0.5).mul_(2).sub_(1))
    return d


@pytest.mark.parametrize(
    "family",
    [
        Radial(),
        Radial(band=(0.1, 0.3), sides="below"),
        Radial(band=(0.2, 7.5), sides="above"),
        Local(band=(1e-3, 0.499), sides="both"),
        Local(band=(0.3, 1e5), sides="above"),
    ],
)
def test_power_factor_is_one_plus_twice_the_band_deviation_bit_for_bit(family):
    from ts_defense.noise._fused import power_factor, rand, uniforms

    for shape in [(1,), (257,), (9, 5)]:
        a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        want = band_deviation(shape, family, a).mul_(2).add_(1)
        got = power_factor(rand((uniforms(family), *shape), b), family)
        assert torch.equal(got, want) and torch.equal(a.get_state(), b.get_state())


def test_cached_constants_are_never_written():
    from ts_defense.noise._fused import const

    cpu = torch.device("cpu")
    for zero_mean in (False, True):
        sampler = TSSampler(TSConfig(p_ood=0.9, zero_mean=zero_mean), seed=1)
        for _ in range(3):
            sampler.draw(torch.rand(6, 2, 16, 12))  # 8x8 windows: a 2x2 grid of cells
    hits = const.cache_info().hits
    one, zero = const(cpu, (1.0,), (6, 2, 2)), const(cpu, (0.0,), (6, 2, 2))
    assert const.cache_info().hits == hits + 2  # the ones the draws used
    assert bool((one == 1).all()) and bool((zero == 0).all())


def test_family_draws_take_a_list_shape():  # the cached window counts key on the shape
    gen = torch.Generator().manual_seed(0)
    for zero_mean in (False, True):
        noise = FAMILIES["local"].draw([2, 1, 12, 12], gen, zero_mean)
        assert noise.shape == (2, 1, 12, 12)
