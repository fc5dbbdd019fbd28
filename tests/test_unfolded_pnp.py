"""The unfolded proximal-gradient network and plug-and-play HQS: the iterations they claim to
run, gradients all the way to the input (attacks see through them), and clear errors."""

import math

import pytest
import torch
from torch import nn

from ts_defense import Denoiser
from ts_defense.attacks import DenoisingPGD
from ts_defense.models import DnCNN, PnPHQS, ProxGradUnfolded

SIGMA = 25 / 255


def batch(shape=(2, 1, 16, 16), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_unfolded_with_zero_prox_returns_the_observation():
    net = ProxGradUnfolded(steps=3, depth=3, features=8)
    for prox in net.prox:
        nn.init.zeros_(prox.layers[-1].weight)
        nn.init.zeros_(prox.layers[-1].bias)
    y = batch()
    assert torch.allclose(net(y), y)


def test_unfolded_runs_each_step_with_its_eta():
    """Proximal maps that subtract a constant c: x_{k+1} = x_k - eta_k (x_k - y) - c."""
    net = ProxGradUnfolded(steps=2, depth=2, features=4)
    with torch.no_grad():
        net.eta_logit.copy_(torch.tensor([0.3, -1.0]))
        for prox, c in zip(net.prox, (0.1, 0.2), strict=True):
            for layer in prox.layers:
                if isinstance(layer, nn.Conv2d):
                    layer.weight.zero_()
                    layer.bias.zero_()
            prox.layers[-1].bias.fill_(c)
    y = batch()
    eta = torch.sigmoid(net.eta_logit.detach())
    x1 = y - 0.1  # x_0 = y: the gradient step leaves y
    x2 = x1 - eta[1] * (x1 - y) - 0.2
    assert torch.allclose(net(y), x2, atol=1e-6)


def test_unfolded_trains_every_parameter_and_is_attackable():
    torch.manual_seed(0)
    net = ProxGradUnfolded(steps=2, depth=3, features=8)
    y = batch().requires_grad_()
    net(y).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert y.grad.abs().sum() > 0


class Shrink(nn.Module):
    """A 'denoiser' that scales its input by 1 / (1 + s) and records the levels it was given."""

    def __init__(self):
        super().__init__()
        self.levels = []

    def forward(self, noisy, sigma):
        self.levels.append(sigma.clone())
        return noisy / (1 + sigma.view(-1, 1, 1, 1))


def test_pnp_hqs_levels_fall_geometrically_from_sigma_max_to_sigma():
    hqs = PnPHQS(Denoiser(Shrink(), noise_level="argument"), iterations=4, sigma_max=50 / 255)
    levels = hqs.levels(torch.tensor([SIGMA, 60 / 255]))
    assert levels.shape == (4, 2)
    assert torch.allclose(levels[0], torch.tensor([50 / 255, 60 / 255]))
    assert torch.allclose(levels[-1], torch.tensor([SIGMA, 60 / 255]))
    ratios = levels[1:, 0] / levels[:-1, 0]
    assert torch.allclose(ratios, ratios[0].expand(3))
    assert (ratios < 1).all()


def test_pnp_hqs_alternates_data_and_prior_steps():
    shrink = Shrink()
    hqs = PnPHQS(Denoiser(shrink, noise_level="argument"), iterations=3, lam=0.5)
    y, sigma = batch(), torch.full((2,), SIGMA)
    out = hqs(y, sigma)
    z = y
    for s in hqs.levels(sigma):
        a = 0.5 * SIGMA**2 / s[0] ** 2
        x = (y + a * z) / (1 + a)
        z = x / (1 + s[0])
    assert torch.allclose(out, z, atol=1e-6)
    assert [float(s[0]) for s in shrink.levels] == pytest.approx(
        [float(s[0]) for s in hqs.levels(sigma)]
    )


def test_pnp_hqs_takes_sigma_as_a_number_or_per_sample():
    hqs = PnPHQS(Denoiser(Shrink(), noise_level="argument"), iterations=2)
    y = batch()
    assert torch.allclose(hqs(y, SIGMA), hqs(y, torch.full((2,), SIGMA)))
    with pytest.raises(ValueError, match="sigma"):
        hqs(y, 0.0)


def test_pnp_hqs_is_a_denoiser_attacks_see_through():
    torch.manual_seed(0)
    inner = Denoiser(DnCNN(1, 3, 8, batch_norm=False), predicts="noise")
    den = Denoiser(PnPHQS(inner, iterations=2), predicts="clean", noise_level="argument")
    x = batch()
    y = x + SIGMA * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    adv = DenoisingPGD(den, SIGMA, eps=8 / 255, steps=3, seed=0)(y, x)
    assert (adv - y).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        clean_err, adv_err = ((den(y, SIGMA) - x).square().mean(), (den(adv, SIGMA) - x).square())
    assert adv_err.mean() > clean_err
    assert math.isfinite(float(adv_err.mean()))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"iterations": 0}, "iterations"),
        ({"iterations": 1.5}, "iterations"),
        ({"sigma_max": 0.0}, "sigma_max"),
        ({"sigma_max": float("nan")}, "sigma_max"),
        ({"lam": -1.0}, "lam"),
    ],
)
def test_pnp_hqs_rejects_bad_options(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        PnPHQS(Denoiser(Shrink(), noise_level="argument"), **kwargs)


def test_pnp_hqs_wants_a_denoiser_wrapper():
    with pytest.raises(TypeError, match="denoiser must be a ts_defense.Denoiser"):
        PnPHQS(Shrink())


@pytest.mark.parametrize("steps", [0, -2, 2.0])
def test_unfolded_rejects_bad_steps(steps):
    with pytest.raises((ValueError, TypeError), match="steps"):
        ProxGradUnfolded(steps=steps)


def test_pnp_hqs_around_pretrained_dncnn_b_denoises_set12(shared_data):
    """The named zoo model: HQS iterations around the blind DnCNN-B stay within 1 dB of the
    denoiser alone and far above the noisy input."""
    from ts_defense.data import set12
    from ts_defense.models.zoo import load_model

    x = torch.cat([img[..., 64:128, 64:128] for img in set12(shared_data / "set12")[:4]])
    y = x + SIGMA * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))

    def psnr(den):
        with torch.no_grad():
            return -10 * math.log10(float((den(y, SIGMA).clamp(0, 1) - x).square().mean()))

    pnp, plain = psnr(load_model("pnp-hqs-dncnn-b", shared_data)), psnr(load_model("dncnn-b"))
    noisy = -10 * math.log10(float((y - x).square().mean()))
    assert pnp > noisy + 6, (pnp, noisy)
    assert abs(pnp - plain) < 1.0, (pnp, plain)
