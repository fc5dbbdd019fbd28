"""The frontier recipes (issue 24): the pair term of TRADES and of Yan et al.'s HAT, the
finite-difference Jacobian penalty, the budget curriculum, the strength knob and the weight
average, each checked against what it computes by hand."""

import pytest
import torch
from torch import nn

from ts_defense import Denoiser, TSSampler, fit, ts_loss
from ts_defense.models import DnCNN
from ts_defense.training.adversarial import Adversarial, AdversarialConfig
from ts_defense.training.fit import WeightAverage
from ts_defense.training.recipes import make_recipe

SIGMA = 25 / 255


class Scale(nn.Module):
    """f(y) = c * y: its Jacobian is c times the identity."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))

    def forward(self, y):
        return self.c * y


def clean_batch(b=8, side=16, seed=1):
    return torch.rand(b, 1, side, side, generator=torch.Generator().manual_seed(seed))


def sampler():
    return TSSampler(sigma=SIGMA, p_ood=0.0, seed=0)


@pytest.mark.parametrize("normalised", [False, True])
def test_pair_term_pulls_the_attacked_output_towards_the_clean_output(normalised):
    torch.manual_seed(0)
    den = Denoiser(DnCNN(depth=3, features=8), predicts="noise")
    clean = clean_batch()
    adv = Adversarial(share=0.5, eps=4 / 255, consistency=2.0, normalised=normalised,
                      objective="output", seed=0)  # fmt: skip
    result = ts_loss(den, sampler(), clean, perturbation=adv)
    # the same draw and crafted copies, by hand
    noisy = sampler().draw(clean).noisy
    replay = Adversarial(adv.config, seed=0)
    rows, target, sigma, mask = replay(den, noisy, clean, torch.full((8,), SIGMA))
    assert rows.shape[0] == 12 and mask.tolist() == [False] * 8 + [True] * 4
    assert torch.equal(rows[:8], noisy) and torch.equal(target[8:], clean[:4])
    delta = rows[8:] - noisy[:4]
    assert torch.allclose(delta.abs(), torch.full_like(delta, 4 / 255), atol=1e-6)
    out = den(rows, sigma)
    fit_part = ((out[:8] - clean) ** 2).mean()
    pair = ((out[8:] - out[:4]) ** 2).mean()
    expected = fit_part + 2.0 * pair
    expected = expected / 3.0 if normalised else expected
    assert torch.allclose(result.loss, expected, rtol=1e-5)
    assert pair > 0 and int(result.n_adv) == 4
    # the pair term's gradient flows through both outputs
    grads = torch.autograd.grad(pair, [p for p in den.parameters()])
    assert any(g.abs().sum() > 0 for g in grads)


def test_crafting_against_the_output_raises_the_pair_term_over_a_random_sign():
    blur = nn.Conv2d(1, 1, 5, padding=2, bias=False)
    nn.init.constant_(blur.weight, 1 / 25)  # keeps smooth changes, damps pixel-wise signs
    den = Denoiser(blur, predicts="clean")
    clean = clean_batch()
    noisy = sampler().draw(clean).noisy
    sigma = torch.full((8,), SIGMA)
    adv = Adversarial(share=1.0, eps=4 / 255, consistency=1.0, objective="output", seed=0)
    rows, *_ = adv(den, noisy, clean, sigma)
    signs = torch.sign(torch.randn(noisy.shape, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        base = den(noisy, sigma)
        crafted = ((den(rows[8:], sigma) - base) ** 2).mean()
        random = ((den(noisy + 4 / 255 * signs, sigma) - base) ** 2).mean()
    assert crafted > 3 * random


def test_jacobian_penalty_estimates_the_squared_jacobian_per_pixel():
    c, eps, w = 0.7, 1 / 255, 0.1
    den = Denoiser(Scale(c), predicts="clean")
    clean = clean_batch(b=8, side=64)
    adv = Adversarial(share=0.5, eps=eps, threat="random", consistency=w, seed=0)
    result = ts_loss(den, sampler(), clean, perturbation=adv)
    noisy = sampler().draw(clean).noisy
    fit_part = ((c * noisy - clean) ** 2).mean()
    penalty = (result.loss - fit_part) / w
    # |J z|^2 / N for J = c I and z ~ N(0, I): c^2 within the sampling error of 4 x 4096 draws
    assert abs(float(penalty.detach()) - c**2) < 0.03 * c**2
    # the directions are their own seeded stream: the same seed repeats them, another does not
    again = ts_loss(den, sampler(), clean, perturbation=Adversarial(adv.config, seed=0))
    other = ts_loss(den, sampler(), clean, perturbation=Adversarial(adv.config, seed=1))
    assert torch.equal(again.loss, result.loss) and not torch.equal(other.loss, result.loss)


def test_warmup_ramps_the_budget_linearly_then_holds_it():
    torch.manual_seed(0)
    den = Denoiser(DnCNN(depth=3, features=8), predicts="noise")
    clean = clean_batch()
    noisy = sampler().draw(clean).noisy
    sigma = torch.full((8,), SIGMA)
    adv = Adversarial(share=0.5, eps=8 / 255, warmup=4, seed=0)
    seen = []
    for _ in range(6):
        rows, *_ = adv(den, noisy, clean, sigma)
        seen.append(float((rows - noisy)[:4].abs().amax()) * 255)
    assert seen == pytest.approx([2, 4, 6, 8, 8, 8], abs=1e-4)
    resumed = Adversarial(adv.config, seed=0)
    resumed.load_state_dict(adv.state_dict())
    assert resumed.calls == 6


def test_strength_sets_each_recipes_knob():
    assert make_recipe("free-hat", strength=4 / 255).adversarial.eps == (0.0, 4 / 255)
    assert make_recipe("hat", strength=4 / 255).strength == 4 / 255
    assert make_recipe("trades", strength=3.0).adversarial.consistency == 3.0
    yan = make_recipe("yan-hat")
    assert (yan.knob, yan.strength, yan.adversarial.eps) == ("consistency", 1.0, 5 / 255)
    assert yan.adversarial.threat == "l2" and yan.adversarial.normalised
    assert make_recipe("jacobian", strength=0.5).adversarial.threat == "random"
    assert make_recipe("ts-trades").config.p_ood > 0
    assert make_recipe("gaussian").knob is None and make_recipe("ts").strength is None


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: make_recipe("free-hat", strength=8), ValueError, "strength=8 .*image units"),
        (lambda: make_recipe("gaussian", strength=0.1), ValueError, "no adversarial part"),
        (lambda: make_recipe("trades", strength=-1), ValueError, "strength"),
        (lambda: make_recipe("trades", strength=0), ValueError, "strength=0"),
        (lambda: make_recipe("hat", strength=(0, 1)), TypeError, "strength"),
        (lambda: AdversarialConfig(threat="random"), ValueError, "consistency"),
        (lambda: AdversarialConfig(consistency=1.0, amortised=True), ValueError, "amortised"),
        (lambda: AdversarialConfig(objective="noisy"), ValueError, "objective"),
        (lambda: AdversarialConfig(warmup=-1), ValueError, "warmup"),
        (lambda: AdversarialConfig(consistency=float("nan")), ValueError, "consistency"),
        (lambda: AdversarialConfig(normalised=1), TypeError, "normalised"),
        (lambda: fit(DnCNN(3, 8), clean_batch(), predicts="noise", ema=1.0), ValueError, "ema"),
        (lambda: fit(DnCNN(3, 8), clean_batch(), predicts="noise", ema=-0.1), ValueError, "ema"),
    ],
)
def test_bad_options_are_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_weight_average_is_the_exponential_average_of_the_trajectory():
    model = Scale(1.0)
    average = WeightAverage(model, decay=0.5)
    expected = 1.0
    for value in (3.0, -1.0, 2.0):
        with torch.no_grad():
            model.c.fill_(value)
        average.update()
        expected = 0.5 * expected + 0.5 * value
    average.copy_to_model()
    assert float(model.c.detach()) == pytest.approx(expected)


def test_fit_with_ema_ends_on_the_averaged_weights(tmp_path):
    images = clean_batch(b=3, side=24, seed=5)
    opts = dict(recipe="gaussian", steps=5, batch_size=4, patch_size=12, progress=False)
    torch.manual_seed(0)
    raw = DnCNN(depth=3, features=8)
    start = [p.detach().clone() for p in raw.parameters()]
    fit(raw, images, **opts, predicts="noise", lr=1e-2)
    torch.manual_seed(0)
    averaged = DnCNN(depth=3, features=8)
    fit(averaged, images, **opts, predicts="noise", lr=1e-2, ema=0.8)
    # the average lags behind: it lies between the start and the last weights
    for s, r, a in zip(start, raw.parameters(), averaged.parameters(), strict=True):
        assert (a - s).norm() < (r - s).norm()
    ckpt = tmp_path / "c.pt"
    fit(DnCNN(depth=3, features=8), images, **opts, predicts="noise", checkpoint=ckpt, ema=0.8)
    with pytest.raises(ValueError, match="ema"):
        fit(DnCNN(depth=3, features=8), images, **opts, predicts="noise", checkpoint=ckpt)
