"""Hostile inputs found from outside (issue 16.5): each gives a one-line ValueError/TypeError
naming the parameter, or the right result — never an overflow, a raw torch error, a silent
NaN/Inf or a result that drops data."""

import math

import pytest
import torch
from torch import nn

from ts_defense import Denoiser, PatchSampler, TSConfig, TSSampler
from ts_defense.evaluation.detect import TypicalityDetector
from ts_defense.models import DnCNN, ProxGradUnfolded

HUGE = 10**400  # a 400-digit int: math.isfinite(HUGE) raises OverflowError


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 300, text
    return text


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"families": {"local": {"window": HUGE}}}, "window"),
        ({"families": {"local": {"window": 10**9}}}, "window"),  # window**2 tiles per image
        ({"families": {"structured": {"corr_scale": HUGE}}}, "corr_scale"),
        ({"sigma": HUGE}, "sigma"),
        ({"sigma": (1e-50, 1e-49)}, "sigma"),  # rounds to 0 in float32
        ({"sigma": 1e-45}, "sigma"),
        ({"families": {"radial": {"band": (0.1, 1e37), "sides": "above"}}}, r"band\[1\]"),
        ({"families": {"radial": {"band": (0.1, HUGE), "sides": "above"}}}, "band"),
        ({"families": {"radial": 1e39}}, "families"),
        ({"families": {"radial": 3e38, "local": 3e38}}, "families"),  # the sum overflows
        ({"families": {"radial": HUGE}}, "families"),
        ({"data_range": 1e308}, "data_range"),
        ({"clip": (-1e39, 1e39)}, "clip"),
    ],
)
def test_options_beyond_float32_are_refused_by_name(options, name):
    with pytest.raises(ValueError, match=name) as err:
        TSConfig(**options)
    one_line(err)


def test_draw_sigma_override_is_bounded():
    x = torch.rand(2, 1, 8, 8)
    sampler = TSSampler(seed=0)
    for sigma in (1e308, 1e-50, 2.0, torch.tensor(1e38), torch.tensor([0.1, 1e30])):
        with pytest.raises(ValueError, match="sigma") as err:
            sampler.draw(x, sigma=sigma)
        one_line(err)
    assert bool(torch.isfinite(sampler.draw(x, sigma=1.0).noisy).all())  # data_range itself


def test_sampler_refuses_a_positional_non_config():
    with pytest.raises(TypeError, match="config must be a TSConfig, got float"):
        TSSampler(0.1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DnCNN(depth=2**63),
        lambda: DnCNN(depth=2**40),
        lambda: DnCNN(features=10**6),
        lambda: DnCNN(depth=HUGE),
        lambda: ProxGradUnfolded(steps=2**63),
        lambda: ProxGradUnfolded(steps=2**40),
        lambda: ProxGradUnfolded(steps=3, depth=2**40),
    ],
)
def test_absurd_network_sizes_are_refused_before_allocating(make):
    with pytest.raises(ValueError, match="steps|depth|features") as err:
        make()
    one_line(err)


def test_denoiser_misuse_is_a_clear_error():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="model output"):
        Denoiser(lambda y: ())(x)
    with pytest.raises(TypeError, match="noise_level='argument'.*Conv2d takes no sigma"):
        Denoiser(nn.Conv2d(1, 1, 3, padding=1), noise_level="argument")
    with pytest.raises(TypeError, match="noise_level='argument'"):
        Denoiser(lambda y: y, noise_level="argument")
    out = Denoiser(lambda y, sigma=None: y, noise_level="argument")(x, 0.1)  # still works
    assert torch.equal(out, x)


def test_detector_refuses_a_nan_centre():
    den = Denoiser(nn.Identity())
    for bad in (math.nan, math.inf, HUGE):
        with pytest.raises(ValueError, match="centre"):
            TypicalityDetector(den, 0.1, centre=bad, threshold=0.1)


def test_patch_sampler_keeps_every_image_of_a_batch_in_a_list():
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 16, 16).contiguous()
    sampler = PatchSampler([images, torch.full((1, 16, 16), 5.0)], 8, gen)
    assert len(sampler.images) == 6
    seen = {int(p[0, 0, 0]) for p in sampler(200)}
    assert seen == set(range(6))


def test_int_options_too_large_are_value_errors_not_overflow():
    from ts_defense import fit

    with pytest.raises(ValueError, match="steps") as err:
        fit(DnCNN(depth=3, features=4), torch.rand(1, 1, 16, 16), steps=HUGE, patch_size=8)
    one_line(err)


class LateNaN(nn.Module):
    """Finite at the first two calls (references, first step), NaN from then on."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, y):
        self.calls += 1
        return self.w * y * (1.0 if self.calls < 3 else math.nan)


def test_attacks_never_return_nan_and_misuse_is_named():
    from ts_defense.attacks import DenoisingPGD, L2DenoisingPGD

    x = torch.rand(2, 1, 8, 8)
    y = x + 0.1 * torch.randn_like(x)
    with pytest.raises(ValueError, match="not finite") as err:
        L2DenoisingPGD(Denoiser(LateNaN()), 0.1, steps=4)(y, x)
    one_line(err)
    with pytest.raises(ValueError, match="alpha"):
        DenoisingPGD(Denoiser(nn.Identity()), 0.1, alpha=3.5e38)
    conv = Denoiser(nn.Conv2d(1, 1, 3, padding=1))
    with pytest.raises(ValueError, match="loss .* must return a scalar"):
        DenoisingPGD(conv, 0.1, loss=lambda out, ref: (out - ref) ** 2)(y, x)
    with pytest.raises(ValueError, match="model: its output carries no gradient"):
        DenoisingPGD(Denoiser(lambda t: t.detach()), 0.1)(y, x)
