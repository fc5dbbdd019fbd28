"""Adversarial training recipes (issue 11): the share really is attacked, budgets hold, the
amortised variant replays last step's samples along their input gradient, resume is exact,
batch norm and modes survive, bad options are named before any weight changes."""

import math

import pytest
import torch
from torch import nn

from ts_defense import Denoiser, TrainStep, TSConfig, TSSampler, fit, ts_loss
from ts_defense.models import DnCNN
from ts_defense.training.adversarial import Adversarial, AdversarialConfig
from ts_defense.training.recipes import RECIPES, make_recipe

SIGMA = 25 / 255


def small(seed=0, batch_norm=False):
    torch.manual_seed(seed)
    return DnCNN(depth=3, features=8, batch_norm=batch_norm)


def batch(b=8, side=16, seed=1):
    return torch.rand(b, 1, side, side, generator=torch.Generator().manual_seed(seed))


def draw(clean, seed=0):
    d = TSSampler(sigma=SIGMA, p_ood=0.0, seed=seed).draw(clean)
    return d.noisy, d.sigma


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_crafted_share_is_attacked_at_the_budget_and_the_rest_untouched(share):
    den = Denoiser(small(), predicts="noise")
    clean = batch()
    noisy, sigma = draw(clean)
    adv = Adversarial(share=share, eps=4 / 255, seed=0)
    out, target, sig, mask = adv(den, noisy, clean, sigma)
    k = round(share * 8)
    assert mask.tolist() == [True] * k + [False] * (8 - k)
    assert torch.equal(target, clean) and torch.equal(sig, sigma)
    delta = out - noisy
    assert torch.equal(delta[k:], torch.zeros_like(delta[k:]))
    # one L-inf sign step from the noisy input: every pixel moves by the whole budget
    assert torch.allclose(delta[:k].abs(), torch.full_like(delta[:k], 4 / 255), atol=1e-6)
    mse = lambda y: ((den(y, sigma[:k]) - clean[:k]) ** 2).mean()  # noqa: E731
    with torch.no_grad():
        assert mse(out[:k]) > mse(noisy[:k])  # it is an attack: the loss went up


def test_budget_range_is_respected_and_drawn_per_step():
    den = Denoiser(small(), predicts="noise")
    clean = batch()
    noisy, sigma = draw(clean)
    adv = Adversarial(share=0.5, eps=(1 / 255, 6 / 255), seed=3)
    budgets = []
    for _ in range(12):
        out, *_ = adv(den, noisy, clean, sigma)
        linf = (out - noisy)[:4].abs().amax()
        assert 1 / 255 - 1e-6 <= linf <= 6 / 255 + 1e-6
        budgets.append(float(linf))
    assert len({round(b, 6) for b in budgets}) > 6  # a new budget each step


def test_l2_threat_is_zero_mean_within_the_rms_budget():
    den = Denoiser(small(), predicts="noise")
    clean = batch()
    noisy, sigma = draw(clean)
    out, *_ = Adversarial(share=0.5, eps=5 / 255, threat="l2", steps=3, seed=0)(
        den, noisy, clean, sigma
    )
    delta = (out - noisy)[:4].flatten(1).double()
    assert delta.mean(1).abs().max() < 1e-6
    rms = delta.norm(dim=1) / math.sqrt(delta.shape[1])
    assert (rms <= 5 / 255 + 1e-6).all() and (rms > 0.5 * 5 / 255).all()


def test_amortised_replays_last_fresh_rows_along_their_input_gradient():
    den = Denoiser(small(), predicts="noise")
    adv = Adversarial(share=0.5, eps=2 / 255, amortised=True, seed=0)
    c1, c2 = batch(seed=1), batch(seed=2)
    n1, s1 = draw(c1, 0)
    n2, s2 = draw(c2, 1)
    y1, t1, _, m1 = adv(den, n1, c1, s1)
    assert not m1.any() and y1.requires_grad  # nothing to replay at the first step
    ((den(y1, s1) - t1) ** 2).sum().backward()
    grad = y1.grad.clone()
    y2, t2, sig2, m2 = adv(den, n2, c2, s2)
    assert m2.tolist() == [True] * 4 + [False] * 4
    assert torch.equal(t2[:4], c1[:4]) and torch.equal(t2[4:], c2[4:])
    assert torch.equal(sig2[:4], s1[:4])
    expected = n1[:4] + 2 / 255 * grad[:4].sign()
    assert torch.allclose(y2[:4].detach(), expected, atol=1e-7)
    assert torch.equal(y2[4:].detach(), n2[4:])


def test_ts_loss_reports_the_adversarial_part():
    den = Denoiser(small(), predicts="noise")
    result = ts_loss(
        den, TSSampler(sigma=SIGMA, p_ood=0.5, seed=0), batch(), "mse", Adversarial(share=0.5)
    )
    assert result.n_adv == 4 and result.n_ood <= 4
    assert math.isfinite(float(result.loss_adv))
    assert set(result.as_dict()) >= {"loss_adv", "n_adv"}


@pytest.mark.parametrize("recipe", ["hat", "ts-free-hat", "trades", "jacobian"])
def test_batch_norm_model_in_train_mode(recipe):
    model = small(batch_norm=True).train()
    r = make_recipe(recipe, config={"sigma": SIGMA})
    step = TrainStep(
        model,
        torch.optim.SGD(model.parameters(), lr=1e-2),
        r.sampler(0),
        perturbation=r.perturbation(0),
        predicts="noise",
    )
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    for i in range(3):
        before = bn.num_batches_tracked.item()
        step(batch(seed=i))
        # crafting runs in eval mode: only the training forward moves the statistics
        assert bn.num_batches_tracked.item() == before + 1
        assert model.training and all(m.training for m in model.modules())


@pytest.mark.parametrize(
    ("recipe", "ema"),
    [("hat", 0), ("free-hat", 0.9), ("ts-hat", 0), ("multi-hat", 0), ("ts-trades", 0.5),
     ("yan-hat", 0), ("jacobian", 0)],
)  # fmt: skip
def test_fit_resumes_every_recipe_exactly(tmp_path, recipe, ema):
    images = batch(b=3, side=24, seed=5)
    opts = dict(recipe=recipe, steps=4, batch_size=4, patch_size=12, progress=False, ema=ema)
    if recipe == "multi-hat":
        opts["adversarial"] = {"warmup": 3}  # the ramp crosses the checkpoint
    torch.manual_seed(0)
    whole = small()
    fit(whole, images, **opts, predicts="noise")
    torch.manual_seed(0)
    part = small()
    ckpt = tmp_path / "c.pt"
    fit(part, images, **{**opts, "steps": 2}, predicts="noise", checkpoint=ckpt)
    fit(part, images, **opts, predicts="noise", checkpoint=ckpt)
    for a, b in zip(whole.state_dict().values(), part.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_recipes_differ_as_named():
    assert make_recipe("gaussian").config.p_ood == 0 and make_recipe("gaussian").adversarial is None
    assert make_recipe("ts").config.p_ood > 0 and make_recipe("ts").adversarial is None
    assert make_recipe("hat").config.p_ood == 0 and not make_recipe("hat").adversarial.amortised
    assert make_recipe("ts-hat").config.p_ood > 0
    assert make_recipe("free-hat").adversarial.amortised
    r = make_recipe("hat", config={"sigma": 15 / 255}, adversarial={"share": 0.3})
    assert r.config.sigma == 15 / 255 and r.config.p_ood == 0 and r.adversarial.share == 0.3
    assert make_recipe("gaussian", TSConfig(sigma=0.1)).config.p_ood == 0  # the default: dropped
    assert make_recipe("free-hat", {"p_ood": 0}).config.p_ood == 0
    base = {"gaussian", "hat", "free-hat", "multi-hat", "trades", "yan-hat", "jacobian"}
    twins = {"ts" if n == "gaussian" else f"ts-{n}" for n in base}
    assert set(RECIPES) == base | twins


@pytest.mark.parametrize(
    ("recipe", "config", "instead"),
    [
        ("hat", {"sigma": 15 / 255, "p_ood": 0.7}, "ts-hat"),
        ("gaussian", TSConfig(p_ood=0.5), "ts"),
        ("free-hat", {"p_ood": 0.2}, "ts-free-hat"),
    ],
)
def test_a_recipe_without_ts_refuses_an_ood_share(recipe, config, instead):
    said = rf"recipe '{recipe}' draws Gaussian noise only, but the config asks for p_ood=0\.\d: "
    with pytest.raises(ValueError, match=said + rf"use recipe '{instead}' for TS noise"):
        make_recipe(recipe, config)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: make_recipe("pgd-at"), ValueError, "recipe"),
        (lambda: make_recipe(3), TypeError, "recipe"),
        (lambda: make_recipe("ts", adversarial={"share": 0.5}), ValueError, "no adversarial"),
        (lambda: AdversarialConfig(share=1.5), ValueError, "share"),
        (lambda: AdversarialConfig(share=-0.1), ValueError, "share"),
        (lambda: AdversarialConfig(eps=-1 / 255), ValueError, "eps"),
        (lambda: AdversarialConfig(eps=8), ValueError, "image units"),
        (lambda: AdversarialConfig(eps=(6 / 255, 2 / 255)), ValueError, "eps"),
        (lambda: AdversarialConfig(eps=float("nan")), ValueError, "eps"),
        (lambda: AdversarialConfig(eps="8/255"), TypeError, "eps"),
        (lambda: AdversarialConfig(threat="l1"), ValueError, "threat"),
        (lambda: AdversarialConfig(steps=0), ValueError, "steps"),
        (lambda: AdversarialConfig(amortised=True, steps=3), ValueError, "steps=1"),
        (lambda: AdversarialConfig(amortised=True, share=0.8), ValueError, "share"),
        (lambda: AdversarialConfig.from_dict({"budget": 1}), ValueError, "budget"),
        (lambda: Adversarial(AdversarialConfig(), share=0.5), TypeError, "either"),
    ],
)
def test_bad_options_are_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_perturbation_or_recipe_refused_before_any_weight_changes():
    model = small()
    weights = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="perturbation"):
        TrainStep(model, opt, TSSampler(sigma=SIGMA), perturbation=lambda *a: a, predicts="clean")
    with pytest.raises(ValueError, match="recipe"):
        fit(model, batch(b=2, side=24), recipe="unknown", steps=2, progress=False, predicts="clean")
    with pytest.raises(ValueError, match="image units"):
        fit(
            model,
            batch(b=2, side=24),
            recipe="hat",
            adversarial={"eps": 8},
            steps=2,
            predicts="clean",
        )
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))


class NotDifferentiable(nn.Module):
    differentiable = False

    def forward(self, y):
        return y


def test_perturbation_that_cannot_attack_the_model_is_refused():
    adv = Adversarial(share=0.5)
    clean = batch()
    noisy, sigma = draw(clean)
    with pytest.raises(ValueError, match="not differentiable"):
        adv(Denoiser(NotDifferentiable()), noisy, clean, sigma)


def test_fit_with_a_scheduler_resumes_exactly(tmp_path):
    images = batch(b=3, side=24, seed=5)

    def run(steps, ckpt=None):
        torch.manual_seed(0)
        model = small()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2, 3], 0.1)
        fit(model, images, recipe="free-hat", steps=steps, batch_size=4, patch_size=12,
            optimizer=opt, scheduler=sched, checkpoint=ckpt, progress=False,
            predicts="clean")  # fmt: skip
        return model, opt

    whole, opt = run(4)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # decayed twice
    ckpt = tmp_path / "s.pt"
    run(2, ckpt)
    part, _ = run(4, ckpt)
    for a, b in zip(whole.state_dict().values(), part.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_scheduler_must_belong_to_the_optimizer():
    model = small()
    other = torch.optim.SGD(small(1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler"):
        fit(model, batch(b=2, side=24), steps=1, progress=False,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            scheduler=torch.optim.lr_scheduler.StepLR(other, 1), predicts="clean")  # fmt: skip
