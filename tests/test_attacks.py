"""Attack constraints (hypothesis), objectives, torchattacks compatibility and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ts_defense import Denoiser
from ts_defense.attacks import (
    ATTACKS,
    DenoisingFGSM,
    DenoisingPGD,
    EnsemblePGD,
    L2DenoisingPGD,
    MomentumPGD,
    ObsAtk,
    budget_options,
    make_attack,
)
from ts_defense.models import DnCNN
from ts_defense.models.zoo import load_model

SIGMA = 25 / 255
TOL = 1e-6  # float32 rounding of y + delta


def tiny(channels=1, seed=0):
    torch.manual_seed(seed)
    return Denoiser(DnCNN(channels, depth=3, features=4), predicts="noise").eval()


MODELS = {c: tiny(c) for c in (1, 3)}
SECOND = {c: tiny(c, seed=1) for c in (1, 3)}


def images(b, c, h, seed, clip):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, h, generator=g)
    y = x + SIGMA * torch.randn(b, c, h, h, generator=g)
    return x, (y.clamp(*clip) if clip else y)


@settings(max_examples=60)
@given(
    name=st.sampled_from(sorted(ATTACKS)),
    b=st.integers(1, 2),
    c=st.sampled_from([1, 3]),
    h=st.integers(6, 12),
    eps=st.floats(0.0, 0.2),
    steps=st.integers(1, 3),
    objective=st.sampled_from(["clean", "output", "noisy"]),
    clip=st.sampled_from([None, (0.0, 1.0), (-0.1, 0.9)]),
    seed=st.integers(0, 2**16),
)
def test_every_perturbation_satisfies_its_constraints(
    name, b, c, h, eps, steps, objective, clip, seed
):
    x, y = images(b, c, h, seed, clip)
    model = [MODELS[c], SECOND[c]] if name == "ensemble-pgd" else MODELS[c]
    opts = {"objective": objective, "clip": clip, "seed": seed}
    if name != "fgsm":
        opts["steps"] = steps
    opts[ATTACKS[name].budget] = eps
    adv = make_attack(name, model, SIGMA, **opts)(y, x)
    assert adv.shape == y.shape and bool(torch.isfinite(adv).all())
    delta = (adv - y).double()
    n = c * h * h
    if ATTACKS[name].norm == "L2":
        radius = eps * (SIGMA if name == "pgd-l2" else 1.0) * math.sqrt(n)
        assert (delta.flatten(1).norm(dim=1) <= radius * (1 + 1e-5) + TOL).all()
    else:
        assert delta.abs().max() <= eps + TOL
    if name in ("obsatk", "apgd-obsatk"):
        assert delta.mean(dim=(1, 2, 3)).abs().max() <= 1e-7
    if clip is not None:
        assert adv.min() >= clip[0] and adv.max() <= clip[1]


def mse(a, b):
    return (a - b).square().mean().item()


@pytest.mark.parametrize("cls", [DenoisingPGD, DenoisingFGSM, MomentumPGD, L2DenoisingPGD, ObsAtk])
def test_attacks_push_the_output_the_way_of_their_objective(cls):
    den = tiny(seed=3)
    x, y = images(2, 1, 16, 0, None)
    with torch.no_grad():
        base_clean, base_out = mse(den(y, SIGMA), x), den(y, SIGMA)
    budget = {"rho": 0.3} if cls is L2DenoisingPGD else {"eps": 8 / 255}
    start = {} if cls is DenoisingFGSM else {"random_start": False}
    adv = cls(den, SIGMA, **budget)(y, x)
    with torch.no_grad():
        assert mse(den(adv, SIGMA), x) > base_clean * 1.02
        adv = cls(den, SIGMA, objective="output", **budget)(y)
        assert mse(den(adv, SIGMA), base_out) > 1e-6
        if cls is DenoisingFGSM:  # one full sign step of 8/255 overshoots for this model
            budget = {"eps": 4 / 255}
        adv = cls(den, SIGMA, objective="noisy", **budget, **start)(y)
        assert mse(den(adv, SIGMA), y) < mse(base_out, y)


def test_pgd_beats_random_noise_of_the_same_budget():
    den = tiny(seed=4)
    x, y = images(2, 1, 16, 1, None)
    eps = 4 / 255
    adv = DenoisingPGD(den, SIGMA, eps=eps, steps=5)(y, x)
    rand = y + eps * torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).sign()
    with torch.no_grad():
        assert mse(den(adv, SIGMA), x) > mse(den(rand, SIGMA), x)


def test_seeded_random_start_and_ensemble_mean_loss():
    x, y = images(1, 1, 10, 2, None)
    a = DenoisingPGD(tiny(), SIGMA, seed=5)(y, x)
    b = DenoisingPGD(tiny(), SIGMA, seed=5)(y, x)
    torch.testing.assert_close(a, b)
    # an ensemble of one model twice is that model
    m = tiny()
    single = DenoisingPGD(m, SIGMA, seed=1)(y, x)
    double = EnsemblePGD([m, m], SIGMA, seed=1)(y, x)
    torch.testing.assert_close(single, double)


def test_noise_level_conditioned_model_gets_the_nominal_sigma():
    seen = []

    class Conditioned(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, y, sigma):
            seen.append(sigma.clone())
            return self.w * y * (1 - sigma.view(-1, 1, 1, 1))

    den = Denoiser(Conditioned(), noise_level="argument")
    x, y = images(2, 1, 8, 0, None)
    sig = torch.tensor([0.1, 0.2])
    DenoisingPGD(den, sig, steps=2)(y, x)
    assert len(seen) == 2 and all(torch.equal(s, sig) for s in seen)


def test_mode_control_is_torchattacks_and_restored():
    model = DnCNN(depth=3, features=4)
    den = Denoiser(model, predicts="noise")
    den.train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    modes = []
    bn.register_forward_hook(lambda m, i, o: modes.append(m.training))
    x, y = images(2, 1, 8, 0, None)
    atk = DenoisingPGD(den, SIGMA, steps=2)
    atk(y, x)
    assert modes == [False, False]  # eval mode during the attack
    assert den.training and bn.training  # restored
    assert torch.equal(bn.running_mean, stats)  # batch statistics untouched
    atk.set_model_training_mode(model_training=True)  # torchattacks' switch still works
    modes.clear()
    atk(y, x)
    assert modes == [False, False] and den.training  # model in train mode, BN kept in eval
    den.eval()
    atk.set_model_training_mode(model_training=True, batchnorm_training=True)
    atk(y, x)
    assert modes[-1] is True and not den.training
    assert "DenoisingPGD" in repr(atk) and "eps=" in repr(atk)


def test_bad_input_is_a_clear_error():
    den = tiny()
    x, y = images(2, 1, 8, 0, None)
    with pytest.raises(ValueError, match="eps"):
        DenoisingPGD(den, SIGMA, eps=-1 / 255)
    with pytest.raises(ValueError, match="eps=1e\\+308 is too large"):  # would overflow float32
        DenoisingPGD(den, SIGMA, eps=1e308)
    with pytest.raises(ValueError, match="steps"):
        DenoisingPGD(den, SIGMA, steps=0)
    with pytest.raises(TypeError, match="steps"):
        DenoisingPGD(den, SIGMA, steps=2.5)
    with pytest.raises(ValueError, match="sigma"):
        DenoisingPGD(den, 0.0)
    with pytest.raises(ValueError, match="objective"):
        DenoisingPGD(den, SIGMA, objective="label")
    with pytest.raises(ValueError, match="loss"):
        DenoisingPGD(den, SIGMA, loss="xent")
    with pytest.raises(ValueError, match="clip"):
        DenoisingPGD(den, SIGMA, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="decay"):
        MomentumPGD(den, SIGMA, decay=-1)
    with pytest.raises(TypeError, match="Denoiser"):
        DenoisingPGD(DnCNN(depth=3), SIGMA)
    with pytest.raises(ValueError, match="not differentiable"):
        DenoisingPGD(load_model("bm3d"), SIGMA)
    with pytest.raises(ValueError, match="at least 2 surrogate"):
        EnsemblePGD([den], SIGMA)
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("cw", den, SIGMA)
    atk = DenoisingPGD(den, SIGMA)
    with pytest.raises(ValueError, match="reference shape"):
        atk(y, x[:1])
    with pytest.raises(ValueError, match="needs the clean image"):
        atk(y)
    with pytest.raises(ValueError, match="NaN"):
        atk(y.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), x)
    with pytest.raises(ValueError, match="NaN"):
        atk(y, torch.full_like(x, float("inf")))
    with pytest.raises(TypeError, match="noisy"):
        atk(y.numpy(), x)
    with pytest.raises(ValueError, match="leaves clip"):
        DenoisingPGD(den, SIGMA, clip=(0.0, 1.0))(y + 2, x)
    with pytest.raises(ValueError, match="batch"):
        DenoisingPGD(den, torch.tensor([0.1, 0.1, 0.1]))(y, x)

    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, y):
            return self.w * y.sqrt()  # NaN gradient where y < 0

    explode = Denoiser(Exploding()).train()
    with pytest.raises(ValueError, match="not finite"):
        DenoisingPGD(explode, SIGMA, steps=1)(y - 0.5, x)
    assert explode.training  # restored after the failure


def test_default_step_sizes_come_from_each_attack():
    den = tiny()
    assert DenoisingPGD(den, SIGMA, eps=8 / 255, steps=4).alpha == pytest.approx(2.5 * 8 / 255 / 4)
    assert L2DenoisingPGD(den, SIGMA, rho=0.2, steps=5).alpha == pytest.approx(0.5)
    assert ObsAtk(den, SIGMA, eps=5 / 255, steps=5).alpha == pytest.approx(0.5)
    assert MomentumPGD(den, SIGMA, eps=8 / 255, steps=4).alpha == pytest.approx(2 / 255)
    assert DenoisingFGSM(den, SIGMA, eps=6 / 255).alpha == pytest.approx(6 / 255)
    assert DenoisingPGD(den, SIGMA, steps=4, alpha=0.01).alpha == 0.01


def test_every_attack_takes_the_base_options_by_keyword():
    den = tiny()
    common = {"alpha": 0.01, "objective": "output", "loss": "l1", "clip": (0.0, 1.0), "seed": 3}
    for cls in (DenoisingPGD, L2DenoisingPGD, ObsAtk, MomentumPGD):
        attack = cls(den, SIGMA, **common)
        assert (attack.alpha, attack.objective, attack.loss, attack.clip) == (
            0.01,
            "output",
            "l1",
            (0.0, 1.0),
        )
        assert attack.random_start is (cls is not MomentumPGD)  # MI-FGSM starts at the input
    assert EnsemblePGD([den, tiny()], SIGMA, **common).objective == "output"
    assert DenoisingFGSM(den, SIGMA, loss="l1").loss == "l1"
    with pytest.raises(TypeError, match="DenoisingFGSM takes no random_start, steps"):
        DenoisingFGSM(den, SIGMA, steps=3, random_start=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'budget'"):
        DenoisingPGD(den, SIGMA, budget=0.1)
    with pytest.raises(ValueError, match=r"rho must be a number in \[0, "):  # its own keyword
        L2DenoisingPGD(den, SIGMA, rho=-0.1)
    with pytest.raises(ValueError, match=r"decay must be a number in \[0, "):
        MomentumPGD(den, SIGMA, decay=float("nan"))
    with pytest.raises(TypeError, match="eps must be a number >= 0, got True"):
        DenoisingPGD(den, SIGMA, eps=True)


def test_the_registry_says_how_to_build_every_attack():
    den = tiny()
    units = {name: cls.budget_unit for name, cls in ATTACKS.items()}
    assert units == {
        "pgd": "image",
        "pgd-l2": "ratio",
        "obsatk": "rms",
        "fgsm": "image",
        "mifgsm": "image",
        "ensemble-pgd": "image",
        "apgd": "image",
        "apgd-l2": "rms",
        "apgd-obsatk": "rms",
    }
    assert budget_options("pgd-l2", 0.2, 3) == {"rho": 0.2, "steps": 3}
    assert budget_options("fgsm", 4 / 255, 3) == {"eps": 4 / 255}
    for name, cls in ATTACKS.items():
        model = [den, SECOND[1]] if name == "ensemble-pgd" else den
        atk = make_attack(name, model, SIGMA, **budget_options(name, 2 / 255, 2))
        assert atk.eps == 2 / 255 and atk.steps == (2 if cls.takes_steps else 1)
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        budget_options("cw", 0.1)


def test_classifier_only_torchattacks_methods_refuse():
    atk = DenoisingPGD(tiny(), SIGMA)
    with pytest.raises(NotImplementedError, match="target labels"):
        atk.set_mode_targeted_random()
    with pytest.raises(NotImplementedError, match="save"):
        atk.save(None)
