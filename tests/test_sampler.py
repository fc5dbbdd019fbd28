"""Property-based tests of the TS sampler's statistics (DESIGN.md §2-3), and wrong samplers
that each check must catch."""

import math

import pytest
import stat_checks as chk
import torch
from hypothesis import given
from hypothesis import strategies as st

from ts_defense import TSConfig, TSSampler
from ts_defense.noise import typical

seeds = st.integers(0, 2**31 - 1)
sigmas = st.floats(1 / 255, 100 / 255)
dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])


@st.composite
def bands(draw, sides=None):
    side = draw(st.sampled_from(["both", "above", "below"])) if sides is None else sides
    top = 0.49 if side != "above" else 2.0
    lo = draw(st.floats(0.01, top / 2))
    hi = draw(st.floats(lo + 0.01, top))
    return (lo, hi), side


@st.composite
def images(draw, batch=None, divisible_by=1):
    b = draw(st.integers(1, 6)) if batch is None else batch
    c = draw(st.sampled_from([1, 3]))
    k = divisible_by
    h = k * draw(st.integers(max(1, 4 // k), max(1, 24 // k)))
    w = k * draw(st.integers(max(1, 4 // k), max(1, 24 // k)))
    dtype = draw(dtypes)
    return torch.rand(b, c, h, w).to(dtype)


def only(family, seed=0, sigma=25 / 255, zero_mean=False, **params):
    """A sampler drawing ``family`` alone, with its ``params`` (``band``, ``window``, ...)."""
    cfg = TSConfig(sigma=sigma, p_ood=1.0, families={family: params}, zero_mean=zero_mean)
    return TSSampler(cfg, seed=seed)


# --- in-distribution ------------------------------------------------------------------------


@given(seed=seeds, sigma=sigmas, c=st.sampled_from([1, 3]), side=st.sampled_from([8, 16, 24]))
def test_gaussian_draws_obey_the_aep(seed, sigma, c, side):
    s = TSSampler(TSConfig(sigma=sigma, p_ood=0.0), seed=seed)
    draw = s.draw(torch.zeros(256, c, side, side))
    chk.aep(draw.noise, sigma)
    assert not bool(draw.ood.any())


def test_aep_check_catches_wrong_samplers():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(256, 1, 16, 16, generator=g)
    chk.aep(white, 1.0)
    with pytest.raises(AssertionError):
        chk.aep(1.05 * white, 1.0)  # biased power
    with pytest.raises(AssertionError):  # right mean, too wide a spread
        chk.aep(white * (1 + 0.2 * torch.randn(256, 1, 1, 1, generator=g)), 1.0)


# --- radial ---------------------------------------------------------------------------------


@given(seed=seeds, sigma=sigmas, band_side=bands(), clean=images())
def test_radial_draws_land_in_the_band(seed, sigma, band_side, clean):
    band, sides = band_side
    draw = only("radial", seed, sigma, band=band, sides=sides).draw(clean)
    chk.in_band(draw.noise, sigma, band, sides)
    assert not bool(typical.is_typical(draw.noise, sigma, band[0] * (1 - 1e-3)).any())


def test_band_check_catches_plain_gaussian_and_wrong_side():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(AssertionError):
        chk.in_band(torch.randn(64, 1, 16, 16, generator=g), 1.0, (0.05, 0.3), "both")
    up = only("radial", sides="above").draw(torch.zeros(32, 1, 16, 16)).noise
    chk.in_band(up, 25 / 255, (0.05, 0.35), "above")
    with pytest.raises(AssertionError):
        chk.in_band(up, 25 / 255, (0.05, 0.35), "below")


@given(seed=seeds, c=st.sampled_from([1, 3]))
def test_radial_and_gaussian_directions_are_isotropic(seed, c):
    for family in ("gaussian", "radial"):
        cfg = (
            TSConfig(p_ood=0.0)
            if family == "gaussian"
            else TSConfig(p_ood=1.0, families={"radial": 1})
        )
        chk.isotropic(TSSampler(cfg, seed=seed).draw(torch.zeros(512, c, 8, 8)).noise)


def test_isotropy_check_catches_biased_directions():
    g = torch.Generator().manual_seed(0)
    n = torch.randn(512, 1, 8, 8, generator=g)
    chk.isotropic(n)
    with pytest.raises(AssertionError):
        chk.isotropic(n + 0.3)  # a preferred direction (a mean offset)
    lopsided = n.clone()
    lopsided[..., :4, :] *= 1.3  # more energy in the first half
    with pytest.raises(AssertionError):
        chk.isotropic(lopsided)


# --- local ----------------------------------------------------------------------------------


@given(
    seed=seeds,
    sigma=sigmas,
    band_side=bands(),
    window=st.sampled_from([2, 4, 8]),
    fraction=st.floats(0.0, 1.0),
    zero_mean=st.booleans(),
    data=st.data(),
)
def test_local_draws_have_the_requested_share_of_atypical_windows(
    seed, sigma, band_side, window, fraction, zero_mean, data
):
    band, sides = band_side
    clean = data.draw(images(divisible_by=window))
    params = {"band": band, "sides": sides, "window": window, "fraction": fraction}
    draw = only("local", seed, sigma, zero_mean, **params).draw(clean)
    chk.local_windows(draw.noise, sigma, window, fraction, band)
    if zero_mean:
        assert draw.noise.flatten(1).mean(1).abs().max().item() <= 1e-5 * sigma * 10


@given(seed=seeds, h=st.integers(5, 30), w=st.integers(5, 30))
def test_local_handles_images_not_tiled_by_the_window(seed, h, w):
    draw = only("local", seed=seed, window=4).draw(torch.zeros(3, 1, h, w))
    dk = typical.window_deviation(draw.noise, 25 / 255, 4)
    assert bool(
        ((dk.abs() <= 1e-4) | ((dk.abs() >= 0.05 - 1e-4) & (dk.abs() <= 0.35 + 1e-4))).all()
    )
    assert bool(torch.isfinite(draw.noise).all())


def test_local_check_catches_plain_gaussian_and_wrong_fraction():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(AssertionError):
        chk.local_windows(torch.randn(4, 1, 32, 32, generator=g), 1.0, 8, 0.25, (0.05, 0.35))
    noise = only("local", fraction=0.5).draw(torch.zeros(4, 1, 32, 32)).noise
    chk.local_windows(noise, 25 / 255, 8, 0.5, (0.05, 0.35))
    with pytest.raises(AssertionError):
        chk.local_windows(noise, 25 / 255, 8, 0.25, (0.05, 0.35))


# --- structured -----------------------------------------------------------------------------


@given(seed=seeds, sigma=sigmas, clean=images(), zero_mean=st.booleans())
def test_structured_draws_keep_the_nominal_power(seed, sigma, clean, zero_mean):
    cfg = TSConfig(sigma=sigma, p_ood=1.0, families={"structured": 1}, zero_mean=zero_mean)
    draw = TSSampler(cfg, seed=seed).draw(clean)
    chk.nominal_power(draw.noise, sigma)


@given(seed=seeds)
def test_structured_draws_are_spatially_correlated(seed):
    chk.correlated(only("structured", seed=seed).draw(torch.zeros(16, 1, 32, 32)).noise)


def test_power_and_correlation_checks_catch_wrong_samplers():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(AssertionError):
        chk.nominal_power(1.1 * torch.randn(8, 1, 32, 32, generator=g), 1.0)
    white = torch.randn(16, 1, 32, 32, generator=g)
    with pytest.raises(AssertionError):
        chk.correlated(white)


# --- mixing, sigma, reproducibility ---------------------------------------------------------


@given(seed=seeds, p=st.floats(0.0, 1.0))
def test_mixing_ratio_is_binomial(seed, p):
    s = TSSampler(TSConfig(p_ood=p), seed=seed)
    chk.binomial_share(s.draw(torch.zeros(2000, 1, 4, 4)).ood, p)


@given(seed=seeds, weights=st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3))
def test_family_weights_are_followed(seed, weights):
    if sum(weights) < 1e-3:
        weights = [1.0, 1.0, 1.0]
    fams = dict(zip(["radial", "local", "structured"], weights, strict=True))
    draw = TSSampler(TSConfig(p_ood=1.0, families=fams), seed=seed).draw(torch.zeros(2000, 1, 8, 8))
    total = sum(weights)
    for k, w in enumerate(weights, start=1):
        chk.binomial_share(draw.family == k, w / total)


def test_binomial_check_catches_a_wrong_share():
    s = TSSampler(TSConfig(p_ood=0.7), seed=0)
    ood = s.draw(torch.zeros(4000, 1, 4, 4)).ood
    chk.binomial_share(ood, 0.7)
    with pytest.raises(AssertionError):
        chk.binomial_share(ood, 0.5)


@given(seed=seeds, clean=images(), p=st.floats(0, 1))
def test_same_seed_same_bits(seed, clean, p):
    a = TSSampler(TSConfig(p_ood=p), seed=seed).draw(clean)
    b = TSSampler(TSConfig(p_ood=p), seed=seed).draw(clean)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.family, b.family)
    assert torch.equal(a.noisy, b.noisy)


@given(seed=seeds, steps=st.integers(0, 4), p=st.floats(0, 1), blind=st.booleans())
def test_restored_state_continues_the_stream(seed, steps, p, blind):
    cfg = TSConfig(p_ood=p, sigma=(5 / 255, 50 / 255) if blind else 25 / 255)
    chk.resumes_exactly(cfg, torch.rand(5, 1, 12, 12), seed, steps)


SAME_SEED = {
    "default": {},
    "every sample OOD": {"p_ood": 1.0},
    "zero mean": {"p_ood": 0.7, "zero_mean": True},
    "family parameters": {
        "p_ood": 1.0,
        "families": {
            "radial": {"band": [0.1, 0.3], "sides": "below"},
            "local": {"window": 4, "fraction": 0.5, "sides": "above"},
            "structured": {"corr_scale": 3, "corr_mix": [0.2, 0.6]},
        },
    },
    "blind, windows not tiling": {
        "p_ood": 0.8,
        "sigma": [5 / 255, 50 / 255],
        "families": {"local": {"weight": 2.0, "window": 5}, "structured": 1.0},
        "zero_mean": True,
    },
    "choice of sigma, clipped": {
        "sigma": {"kind": "choice", "values": [5 / 255, 25 / 255]},
        "clip": [0.0, 1.0],
    },
}


@pytest.mark.parametrize("options", SAME_SEED.values(), ids=SAME_SEED.keys())
def test_same_seed_same_bits_draw_after_draw(options):
    """Within this version a seed fixes every bit of every draw: two samplers of one seed agree
    draw after draw (batch shapes, a half-precision batch, a sigma override), another seed
    does not."""
    cfg = TSConfig.from_dict(options)
    a, b = TSSampler(cfg, seed=11), TSSampler(cfg, seed=11)
    batches = [
        (torch.rand(6, 1, 16, 16), None),
        (torch.rand(5, 3, 13, 11).half(), None),
        (torch.rand(6, 1, 16, 16), torch.linspace(0.05, 0.2, 6)),
    ]
    for clean, sigma in batches:
        x, y = a.draw(clean, sigma), b.draw(clean, sigma)
        for field in ("noise", "noisy", "sigma", "family"):
            assert torch.equal(getattr(x, field), getattr(y, field)), field
    assert torch.equal(a.generator().get_state(), b.generator().get_state())
    clean = batches[0][0]
    other = TSSampler(cfg, seed=12).draw(clean).noise
    assert not torch.equal(TSSampler(cfg, seed=11).draw(clean).noise, other)


def test_different_seeds_differ():
    x = torch.zeros(2, 1, 8, 8)
    assert not torch.equal(TSSampler(seed=0).draw(x).noise, TSSampler(seed=1).draw(x).noise)


@given(
    seed=seeds, lo=st.floats(1 / 255, 40 / 255), width=st.floats(1 / 255, 40 / 255), clean=images()
)
def test_blind_sigma_and_noise_level_map(seed, lo, width, clean):
    hi = lo + width
    draw = TSSampler(TSConfig(sigma=(lo, hi), p_ood=0.5), seed=seed).draw(clean)
    b, _, h, w = clean.shape
    assert draw.sigma.shape == (b,) and draw.sigma.dtype == torch.float32
    assert bool(((draw.sigma >= lo) & (draw.sigma <= hi)).all())
    assert draw.sigma_map.shape == (b, 1, h, w)
    assert torch.equal(draw.sigma_map[:, 0, 0, 0], draw.sigma)
    assert bool((draw.sigma_map == draw.sigma.view(b, 1, 1, 1)).all())


def test_noise_level_map_check_catches_a_wrong_map():
    draw = TSSampler(TSConfig(sigma=(0.01, 0.2)), seed=0).draw(torch.zeros(4, 1, 8, 8))
    wrong = draw.sigma_map.flip(0)
    assert not bool((wrong == draw.sigma.view(4, 1, 1, 1)).all())


def test_sigma_override_per_sample():
    s = TSSampler(TSConfig(p_ood=0.0), seed=0)
    sig = torch.tensor([0.1, 0.2])
    draw = s.draw(torch.zeros(2, 1, 8, 8), sigma=sig)
    torch.testing.assert_close(draw.sigma, sig)


# --- dtypes, clipping, zero mean ------------------------------------------------------------


@given(seed=seeds, clean=images(), p=st.floats(0, 1))
def test_dtype_is_kept_and_statistics_are_float32(seed, clean, p):
    draw = TSSampler(TSConfig(p_ood=p), seed=seed).draw(clean)
    assert draw.noisy.dtype == clean.dtype and draw.noisy.shape == clean.shape
    assert draw.noise.dtype == torch.float32 and draw.deviation.dtype == torch.float32
    expected = (clean.float() + draw.noise).to(clean.dtype)
    assert torch.equal(draw.noisy, expected)


@given(seed=seeds, clean=images(), p=st.floats(0, 1))
def test_clipping_bounds_the_noisy_image(seed, clean, p):
    draw = TSSampler(TSConfig(p_ood=p, sigma=0.3, clip=(0.0, 1.0)), seed=seed).draw(clean)
    assert float(draw.noisy.min()) >= 0.0 and float(draw.noisy.max()) <= 1.0
    unclipped = TSSampler(TSConfig(p_ood=p, sigma=0.3), seed=seed).draw(clean)
    assert torch.equal(draw.noise, unclipped.noise)


@given(seed=seeds, clean=images(), p=st.floats(0, 1))
def test_zero_mean_noise(seed, clean, p):
    draw = TSSampler(TSConfig(p_ood=p, zero_mean=True), seed=seed).draw(clean)
    mean = draw.noise.double().flatten(1).mean(1).abs()
    assert mean.max().item() <= 1e-6


def test_gaussian_zero_mean_keeps_unit_power():
    draw = TSSampler(TSConfig(p_ood=0.0, zero_mean=True, sigma=1.0), seed=0).draw(
        torch.zeros(512, 1, 4, 4)
    )
    assert draw.deviation.mean().item() == pytest.approx(
        0.0, abs=5 * typical.deviation_std(16) / math.sqrt(512)
    )


def test_registered_family_is_drawn_for_its_samples_only():
    from ts_defense import register_family
    from ts_defense.noise.families import FAMILIES

    calls = []

    @register_family("test-ones")
    def ones(shape, generator, zero_mean):  # what Family.draw takes
        calls.append((shape, generator, zero_mean))
        return torch.ones(shape)

    try:
        for zero_mean in (False, True):
            cfg = TSConfig(
                sigma=0.1,
                p_ood=1.0,
                families={"test-ones": 1.0, "radial": 1.0},
                zero_mean=zero_mean,
            )
            sampler = TSSampler(cfg, seed=0)
            draw = sampler.draw(torch.zeros(64, 1, 4, 4))
            assert calls[-1] == ((64, 1, 4, 4), sampler.generator(), zero_mean)
            mine = draw.family == 1
            assert 0 < int(mine.sum()) < 64
            torch.testing.assert_close(draw.noise[mine], torch.full_like(draw.noise[mine], 0.1))
            chk.in_band(draw.noise[~mine], 0.1, (0.05, 0.35), "both")
        assert FAMILIES["test-ones"].draw((2, 1, 3, 3), torch.Generator(), True).shape == (
            2,
            1,
            3,
            3,
        )
        assert calls[-1][2] is True
    finally:
        FAMILIES.pop("test-ones")


def test_mixed_precision_leaves_the_noise_in_float32():
    cfg = TSConfig(p_ood=0.9, families={"structured": 1.0, "local": 1.0}, zero_mean=True)
    clean = torch.rand(6, 1, 24, 20)
    plain = TSSampler(cfg, seed=2).draw(clean)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the smooth field is a matmul
        mixed = TSSampler(cfg, seed=2).draw(clean)
        assert torch.is_autocast_enabled("cpu")  # the caller's setting is left as it was
    assert torch.equal(plain.noise, mixed.noise) and torch.equal(plain.noisy, mixed.noisy)
