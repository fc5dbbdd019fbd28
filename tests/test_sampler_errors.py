import math
import time

import pytest
import torch
from fuzz_support import EXOTIC, exotic_tensor

from ts_defense import TSConfig, TSSampler


@pytest.mark.parametrize(
    "options, match",
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": math.nan}, "sigma"),
        ({"sigma": math.inf}, "sigma"),
        ({"sigma": 25.0}, "data_range"),
        ({"sigma": (0.2, 0.1)}, "sigma"),
        ({"sigma": (0.0, 0.1)}, "sigma"),
        ({"p_ood": 1.5}, "p_ood"),
        ({"p_ood": -0.1}, "p_ood"),
        ({"families": {"radial": 1.0, "pink": 1.0}}, "unknown noise family 'pink'"),
        ({"families": {"radial": -1.0}}, "families"),
        ({"families": {"radial": 0.0}}, "weight > 0"),
        ({"families": {"radial": {"band": (0.3, 0.1)}}}, r"families\.radial\.band"),
        ({"families": {"local": {"band": (0.0, 0.1)}}}, r"families\.local\.band"),
        ({"families": {"radial": {"band": (-0.1, 0.1)}}}, r"families\.radial\.band"),
        ({"families": {"radial": {"band": (0.1, 0.6)}}}, "eps_out < 0.5"),
        ({"families": {"radial": {"sides": "left"}}}, r"families\.radial\.sides"),
        ({"families": {"local": {"window": 0}}}, r"families\.local\.window"),
        ({"families": {"local": {"window": 2.5}}}, r"families\.local\.window"),
        ({"families": {"local": {"fraction": 2.0}}}, r"families\.local\.fraction"),
        ({"families": {"structured": {"corr_scale": 0}}}, r"families\.structured\.corr_scale"),
        ({"families": {"structured": {"corr_mix": (0.5, 1.5)}}}, "corr_mix"),
        ({"band": (0.05, 0.35)}, r"unknown TS option.*give 'band' under families\.radial"),
        ({"clip": (1.0, 0.0)}, "clip"),
        ({"zero_mean": "yes"}, "zero_mean"),
        ({"colour": 1}, "unknown TS option"),
    ],
)
def test_bad_options_name_the_parameter(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TSConfig.from_dict(options)


def test_wide_band_allowed_above():
    cfg = TSConfig(families={"radial": {"band": (0.1, 1.5), "sides": "above"}})
    assert cfg.families.family("radial").band == (0.1, 1.5)


@pytest.mark.parametrize(
    "clean, match",
    [
        (torch.zeros(1, 8, 8), "4-D"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), "floating"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.complex64), "float"),
        (torch.full((1, 1, 8, 8), math.nan), "NaN"),
        (torch.full((1, 1, 8, 8), math.inf), "Inf"),
        (torch.zeros(0, 1, 8, 8), "empty"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_batches_are_refused(clean, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TSSampler().draw(clean)


@pytest.fixture(params=EXOTIC, ids=str)
def exotic(request):
    return exotic_tensor(request.param), EXOTIC[request.param][1]


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("check_finite", [True, False])
def test_exotic_tensors_are_refused_at_the_entry_naming_clean(exotic, check_finite, compile):
    """Issue 27.4: a meta-device batch took 9 s to fail inside torch (``Tensor.item()``)."""
    clean, message = exotic
    sampler = TSSampler(TSConfig(p_ood=0.5), compile=compile)
    start = time.perf_counter()
    with pytest.raises(TypeError, match=f"^clean must .*{message}") as err:
        sampler.draw(clean, check_finite=check_finite)
    assert time.perf_counter() - start < 1.0 and "\n" not in str(err.value)
    assert sampler.state_dict()["generators"] == {}  # refused before any generator was made


@pytest.mark.parametrize("kind", ["meta", "sparse", "nested", "quantized", "mkldnn", "complex"])
def test_exotic_sigma_overrides_are_refused_naming_sigma(kind):
    message = "must be real" if kind == "complex" else EXOTIC[kind][1]
    with pytest.raises(TypeError, match=f"^sigma .*{message}"):
        TSSampler().draw(torch.zeros(2, 1, 8, 8), sigma=exotic_tensor(kind))


def test_a_device_without_a_generator_is_refused_by_name():
    with pytest.raises(ValueError, match="^the sampler cannot draw on device 'meta'"):
        TSSampler().generator("meta")


def test_one_nan_in_a_large_finite_batch_is_found():
    x = torch.rand(4, 1, 64, 64)
    x[2, 0, 5, 7] = math.nan
    with pytest.raises(ValueError, match="clean contains NaN"):
        TSSampler().draw(x)


def test_huge_finite_values_are_refused_not_mistaken_for_inf():
    x = torch.full((2, 1, 8, 8), 3e38)  # the sum overflows, the values are finite
    with pytest.raises(ValueError, match="too large"):
        TSSampler(TSConfig(p_ood=0.0)).draw(x)


def test_large_half_precision_batches_pass_the_finite_check():
    x = torch.full((4, 3, 128, 128), 0.9, dtype=torch.float16)  # its float16 sum would overflow
    assert TSSampler().draw(x).noisy.dtype == torch.float16


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        TSSampler(seed=seed)


def test_bad_sigma_override_and_state():
    s = TSSampler()
    with pytest.raises(ValueError, match="sigma"):
        s.draw(torch.zeros(2, 1, 4, 4), sigma=torch.ones(3))
    with pytest.raises(ValueError, match="sigma"):
        s.draw(torch.zeros(2, 1, 4, 4), sigma=-1.0)
    with pytest.raises(ValueError, match="state"):
        s.load_state_dict({"nonsense": 1})
    with pytest.raises(TypeError, match="either"):
        TSSampler(TSConfig(), p_ood=0.5)
