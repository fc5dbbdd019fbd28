import math

import pytest
import torch
from torch import nn

from ts_defense import Denoiser, TSConfig
from ts_defense.evaluation.budget import budget_curve, family_psnr
from ts_defense.models import DnCNN


class Smooth(nn.Module):
    """A fixed 3x3 box blur: differentiable, damps high frequencies."""

    def forward(self, y):
        return nn.functional.avg_pool2d(nn.functional.pad(y, (1, 1, 1, 1), mode="replicate"), 3, 1)


def test_identity_passes_the_perturbation_through_with_gain_one():
    clean = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    den = Denoiser(nn.Identity())
    curve = budget_curve({"id": den}, clean, 25 / 255, [0.0, 4 / 255], steps=3)["id"]
    assert curve["gain"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert curve["psnr"] == pytest.approx(curve["pass_through"], abs=1e-4)
    assert curve["psnr"][1] < curve["psnr"][0]


def test_a_smoothing_denoiser_damps_the_perturbation():
    clean = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    curve = budget_curve({"blur": Denoiser(Smooth())}, clean, 25 / 255, [8 / 255], steps=5)["blur"]
    assert 0 < curve["gain"][0] < 1
    assert curve["budget"] == [8 / 255]


def test_family_psnr_sees_the_noise_power_of_each_family():
    clean = torch.full((4, 1, 32, 32), 0.5)
    sigma = 10 / 255  # |noise| never reaches 0.5 (12 sigma): the metric's clamp to [0, 1] is idle
    table = family_psnr({"id": Denoiser(nn.Identity())}, clean, TSConfig(sigma=sigma), seed=0)["id"]
    nominal = -10 * math.log10(sigma**2)
    assert table["structured"] == pytest.approx(nominal, abs=1e-3)  # exact nominal power
    assert table["gaussian"] == pytest.approx(nominal, abs=0.3)
    assert set(table) == {"gaussian", "radial", "local", "structured"}
    model = Denoiser(DnCNN(depth=3, features=4), predicts="noise")
    assert set(family_psnr({"m": model}, clean, TSConfig(sigma=sigma))["m"]) == set(table)


def test_l2_budgets_reach_l2_attacks_with_a_useful_default_step():
    from ts_defense.attacks import L2DenoisingPGD, ObsAtk

    den = Denoiser(Smooth())
    assert L2DenoisingPGD(den, 0.1, rho=0.2, steps=5).alpha == pytest.approx(0.5)
    assert ObsAtk(den, 0.1, steps=10).alpha == pytest.approx(0.25)
    clean = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    curve = budget_curve({"blur": den}, clean, 25 / 255, [0.2], attack="pgd-l2", steps=5)["blur"]
    assert curve["psnr"][0] < curve["pass_through"][0] + 1.0


@pytest.mark.parametrize("attack", ["fgsm", "obsatk"])
def test_budget_curve_builds_any_attack_from_its_metadata(attack):
    clean = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    den = Denoiser(nn.Identity())
    curve = budget_curve({"id": den}, clean, 25 / 255, [0.0, 4 / 255], attack=attack, steps=3)
    assert curve["id"]["psnr"][1] < curve["id"]["psnr"][0]
