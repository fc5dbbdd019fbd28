"""Fuzzing the statistics, TSConfig, the sampler and its families (issue 7)."""

import pytest
from fuzz_support import outcome, sigmas, tensors, values
from hypothesis import given
from hypothesis import strategies as st

from ts_defense import TSConfig, TSSampler
from ts_defense.noise import typical
from ts_defense.noise.sampler import TSConfig as _Config

NOISE_PARAMS = ("noise", "sigma", "window", "stride", "eps")


@given(noise=tensors(), sigma=sigmas, eps=sigmas)
def test_fuzz_statistics(noise, sigma, eps):
    for name, call in [
        ("deviation", lambda: typical.deviation(noise, sigma)),
        ("nll_rate", lambda: typical.nll_rate(noise, sigma)),
        ("is_typical", lambda: typical.is_typical(noise, sigma, eps)),
    ]:
        out = outcome(name, call, NOISE_PARAMS)
        if out is not None:
            assert out.shape == (noise.shape[0],)


@given(noise=tensors(), window=st.integers(-2, 9), stride=st.one_of(st.none(), st.integers(-1, 9)))
def test_fuzz_window_deviation(noise, window, stride):
    out = outcome(
        "window_deviation",
        lambda: typical.window_deviation(noise, 0.1, window, stride),
        NOISE_PARAMS,
    )
    if out is not None:
        assert out.dim() == 3 and out.shape[0] == noise.shape[0]


@given(n_dims=st.integers(-5, 10**7), sigma=sigmas, eps=sigmas)
def test_fuzz_bounds(n_dims, sigma, eps):
    for name, call in [
        ("shell_radii", lambda: typical.shell_radii(n_dims, sigma, eps)),
        ("chebyshev_bound", lambda: typical.chebyshev_bound(n_dims, eps)),
        ("laurent_massart_bound", lambda: typical.laurent_massart_bound(n_dims, eps)),
        ("entropy_rate", lambda: typical.entropy_rate(sigma)),
    ]:
        outcome(name, call, ("n_dims", "sigma", "eps"))


option_names = st.sampled_from([*(f.name for f in _Config.__dataclass_fields__.values()), "bogus"])


@given(options=st.dictionaries(option_names, values, max_size=4))
def test_fuzz_config(options):
    params = (*_Config.__dataclass_fields__, "TS option", "noise family")
    outcome("TSConfig.from_dict", lambda: TSConfig.from_dict(options), params)


@given(clean=tensors(), p=st.floats(0, 1), sigma=st.one_of(st.none(), sigmas))
def test_fuzz_sampler_draw(clean, p, sigma):
    sampler = TSSampler(TSConfig(p_ood=p), seed=0)
    draw = outcome("TSSampler.draw", lambda: sampler.draw(clean, sigma=sigma), ("clean", "sigma"))
    if draw is not None:
        assert draw.noisy.shape == clean.shape and draw.noisy.dtype == clean.dtype
        assert draw.sigma.shape == (clean.shape[0],)
        outcome("TSDraw.deviation", lambda: draw.deviation, ("noise", "sigma"))


@given(clean=tensors(), window=st.integers(1, 9), fraction=st.floats(0, 1))
def test_fuzz_every_family(clean, window, fraction):
    for family in ("radial", "local", "structured"):
        params = {"window": window, "fraction": fraction} if family == "local" else {}
        cfg = TSConfig(p_ood=1.0, families={family: params})
        outcome(f"draw[{family}]", lambda cfg=cfg: TSSampler(cfg).draw(clean), ("clean",))


def test_outcome_rejects_non_finite_floats_as_well_as_tensors():
    with pytest.raises(AssertionError, match="non-finite float"):
        outcome("float", lambda: {"psnr": [1.0, float("nan")]}, ())
    assert outcome("finite", lambda: {"psnr": [1.0], "n": 2}, ()) == {"psnr": [1.0], "n": 2}
