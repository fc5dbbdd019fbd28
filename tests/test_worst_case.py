"""The ensemble worst case (evaluation.auto) and the convergence evidence (evaluation.convergence)
on tiny denoisers: per-image minima, transfer crafted on the source, NaN named per member and
image, bad input, and checks that pass on a working attack and fail on a masked gradient."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from ts_defense import Denoiser
from ts_defense.attacks import APGD, DenoisingPGD
from ts_defense.evaluation.auto import WorstCase, auto_attack, auto_attack_models, auto_members
from ts_defense.evaluation.convergence import (
    Check,
    check_budget_monotone,
    check_converged,
    check_iterations,
    check_random,
    check_white_box,
    convergence,
    failures,
    iteration_curve,
    random_perturbation,
    restart_curve,
)
from ts_defense.evaluation.metrics import add_noise, denoise, evaluate_attack, psnr
from ts_defense.models import DnCNN

SIGMA = 25 / 255


def tiny(seed=0):
    torch.manual_seed(seed)
    return Denoiser(DnCNN(depth=3, features=8, batch_norm=False), predicts="noise").eval()


def clean(b=3, h=16, seed=0):
    return torch.rand(b, 1, h, h, generator=torch.Generator().manual_seed(seed))


MEMBERS = auto_members(SIGMA, steps=4)


def test_the_worst_case_is_the_per_image_minimum_over_the_members():
    den, src = tiny(0), tiny(1)
    x = clean()
    r = auto_attack(den, x, SIGMA, members=MEMBERS, sources={"src": src})
    assert r.members == ["apgd-linf", "apgd-linf-noisy", "apgd-obsatk", "transfer:src"]
    table = np.array([r.per_member[m] for m in r.members])
    assert r.psnr == table.min(0).tolist()
    assert r.winner == [r.members[i] for i in table.argmin(0)]
    assert sum(r.wins.values()) == 3 and set(r.wins) == set(r.members)
    assert r.mean == pytest.approx(np.mean(r.psnr)) and r.mean <= min(r.member_means().values())
    assert r.nonfinite == {} and r.mean_finite == r.mean
    assert r.lines()[0].startswith(f"worst case over 4 attacks: {r.mean:.2f} dB")
    # white-box members agree with evaluate_attack on the same noisy images
    y = add_noise(x, SIGMA, seed=0)
    ev, _ = evaluate_attack(den, MEMBERS["apgd-linf"](den), x, y, SIGMA)
    assert ev.psnr_attacked == r.per_member["apgd-linf"] and ev.psnr_clean == r.psnr_clean
    # transfer: crafted on the source, evaluated on the target
    adv = MEMBERS["apgd-linf"](src)(y[0], x)
    assert psnr(x, denoise(den, adv, SIGMA)) == r.per_member["transfer:src"]
    assert r.meta["attacks"]["transfer:src"].endswith("crafted on src")


def test_sources_are_crafted_once_and_never_transfer_to_themselves():
    models = {"a": tiny(0), "b": tiny(1)}
    crafted = []

    def counted(den):
        crafted.append(den)
        return APGD(den, SIGMA, steps=2)

    results = auto_attack_models(
        models, clean(2), SIGMA, members={}, sources=models, transfer_attack=counted
    )
    assert len(crafted) == 2  # once per source, whatever the number of targets
    assert results["a"].members == ["transfer:b"] and results["b"].members == ["transfer:a"]


class Breaks(nn.Module):
    """A denoiser that returns NaN wherever a pixel of its input exceeds 1.5 (clean images stay
    within twice their range: above it they are refused as 0..255 images)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, y):
        return self.conv(y) + 0 * torch.sqrt(1.5 - y)


def test_nan_under_attack_is_named_per_member_and_image_never_averaged():
    torch.manual_seed(0)
    den = Denoiser(Breaks(), predicts="clean").eval()
    x = clean(3)
    noise = add_noise(x, SIGMA)[0] - x
    x[1, 0, 4] = 1.5 - 1 / 255 - noise[1, 0, 4]  # noisy row 4 of image 1: one level under the edge
    r = auto_attack(den, x, SIGMA, members=MEMBERS)
    assert r.nonfinite and all(images == [1] for images in r.nonfinite.values())
    assert math.isnan(r.psnr[1]) and not math.isnan(r.psnr[0]) and not math.isnan(r.psnr[2])
    assert r.winner[1] in r.nonfinite
    assert math.isnan(r.mean) and r.mean_finite == pytest.approx((r.psnr[0] + r.psnr[2]) / 2)
    assert r.lines()[0].startswith("NaN/Inf under ") and r.lines()[0].endswith("image(s) 1")
    # an attack that raises on NaN is named in the error
    with pytest.raises(ValueError, match="member 'pgd': DenoisingPGD: the model's loss"):
        auto_attack(den, x, SIGMA, members={"pgd": partial(DenoisingPGD, sigma=SIGMA, steps=3)})


def test_bad_ensembles_and_budgets_are_refused_by_name():
    den = tiny()
    x = clean(1)
    with pytest.raises(ValueError, match="members: the ensemble has no member"):
        auto_attack(den, x, SIGMA, members={})
    with pytest.raises(ValueError, match=r"eps=8 is too large for image units.*\(8/255, not 8\)"):
        auto_members(SIGMA, eps=8)
    with pytest.raises(ValueError, match="l2_eps=5 is too large for image units"):
        auto_members(SIGMA, l2_eps=5)
    with pytest.raises(ValueError, match="steps must be finite and > 0, got 0"):
        auto_members(SIGMA, steps=0)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"restarts must be finite and > 0, got {bad}"):
            auto_members(SIGMA, restarts=bad)
    with pytest.raises(ValueError, match="unknown objective 'clean'"):
        auto_members(SIGMA, objective="clean")
    with pytest.raises(TypeError, match=r"sources\['x'\] must be a ts_defense.Denoiser"):
        auto_attack(den, x, SIGMA, sources={"x": den.model})
    with pytest.raises(ValueError, match="targets must be a non-empty mapping"):
        auto_attack_models({}, x, SIGMA)
    assert list(auto_members(SIGMA, l2_eps=0)) == ["apgd-linf", "apgd-linf-noisy"]


def test_iteration_and_restart_curves():
    den = tiny(2)
    x = clean(2, seed=1)
    it = iteration_curve(den, x, SIGMA, iterations=(2, 6), restarts=2)
    assert it["iterations"] == [2, 6] and len(it["per_image"]) == 2
    y = add_noise(x, SIGMA, seed=0)[0]
    direct = psnr(x, denoise(den, APGD(den, SIGMA, steps=6, restarts=2)(y, x), SIGMA))
    assert it["per_image"][1] == direct and it["psnr"][1] == pytest.approx(np.mean(direct))
    rc = restart_curve(den, x, SIGMA, restarts=3, steps=6)
    assert rc["restarts"] == [1, 2, 3]
    assert all(b <= a for a, b in zip(rc["psnr"], rc["psnr"][1:], strict=False))
    assert rc["per_image"][1] == pytest.approx(direct, abs=1e-4)  # 2 restarts: the same run
    with pytest.raises(ValueError, match="iterations must be increasing"):
        iteration_curve(den, x, SIGMA, iterations=(5, 2))
    with pytest.raises(ValueError, match="iterations must be finite and > 0, got 0"):
        iteration_curve(den, x, SIGMA, iterations=(0, 2))
    with pytest.raises(ValueError, match="attack 'pgd' has no restarts"):
        restart_curve(den, x, SIGMA, attack="pgd")


def test_checks_pass_and_fail_on_their_numbers():
    curve = {"iterations": [10, 25, 50], "psnr": [24.0, 23.5, 23.49]}
    assert check_iterations(curve).passed and check_converged(curve).passed
    rising = {"iterations": [10, 25], "psnr": [24.0, 24.1]}
    bad = check_iterations(rising)
    assert not bad.passed and bad.numbers["largest_rise"] == pytest.approx(0.1)
    assert not check_converged(rising).passed
    assert not check_iterations({"iterations": [10, 25], "psnr": [24.0, math.nan]}).passed
    assert check_budget_monotone([8 / 255, 2 / 255], [20.0, 25.0]).passed  # sorted by budget
    assert not check_budget_monotone([2 / 255, 8 / 255], [20.0, 25.0]).passed
    checks = [check_iterations(curve), bad]
    assert failures(checks) == [bad] and bad.line().startswith("FAIL more iterations")
    kw = {"psnr_clean": [30.0], "ssim": [0.5], "winner": ["w"], "psnr": [20.0]}
    ok = WorstCase(["w", "transfer:s"], per_member={"w": [20.0], "transfer:s": [22.0]}, **kw)
    assert check_white_box(ok).passed
    masked = WorstCase(["w", "transfer:s"], per_member={"w": [23.0], "transfer:s": [22.0]}, **kw)
    assert not check_white_box(masked).passed


def test_random_perturbation_has_the_attack_norm():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(3, 1, 8, 8, generator=g) * torch.tensor([1.0, 2.0, 3.0]).view(-1, 1, 1, 1)
    r = random_perturbation(delta, "L-inf", seed=1)
    torch.testing.assert_close(
        r.abs().flatten(1).max(1).values, delta.abs().flatten(1).max(1).values
    )
    assert bool((r.abs() == r.abs().flatten(1).max(1).values.view(-1, 1, 1, 1)).all())  # corners
    flat = delta - delta.mean(dim=(1, 2, 3), keepdim=True)
    r2 = random_perturbation(flat, "L2", seed=1)
    torch.testing.assert_close(r2.flatten(1).norm(dim=1), flat.flatten(1).norm(dim=1))
    assert r2.mean(dim=(1, 2, 3)).abs().max() < 1e-6  # zero-mean like the attack's
    assert torch.equal(r, random_perturbation(delta, "L-inf", seed=1))
    with pytest.raises(ValueError, match="norm must be 'L-inf' or 'L2'"):
        random_perturbation(delta, "L1")


class Quantised(nn.Module):
    """A residual denoiser behind 8-bit quantisation of its input, returning the clean estimate:
    its gradient is zero almost everywhere (a masked gradient)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, y):
        q = torch.round(y * 255) / 255
        return q - self.net(q)


def test_the_random_check_passes_a_real_attack_and_flags_a_masked_gradient():
    x = clean(2, seed=2)
    y = add_noise(x, SIGMA, seed=0)
    for den, expected in ((tiny(3), True), (Denoiser(Quantised(tiny(3).model)), False)):
        adv = APGD(den, SIGMA, eps=8 / 255, steps=5)(y[0], x)
        check = check_random(den, x, y, [adv], SIGMA, "L-inf")
        assert check.passed is expected, check.line()


def test_convergence_gathers_the_curves_and_checks():
    den, src = tiny(4), tiny(5)
    x = clean(2, seed=3)
    worst = auto_attack(den, x, SIGMA, members=auto_members(SIGMA, steps=4), sources={"s": src})
    out = convergence(den, x, SIGMA, iterations=(2, 4), restarts=2, worst=worst)
    assert set(out) == {"iterations", "restarts", "budgets", "checks"}
    names = [c.name for c in out["checks"]]
    assert names == [
        "more iterations never weaker",
        "converged",
        "budget curve monotone",
        "random perturbation far weaker",
        "white-box never weaker than transfer",
    ]
    assert all(isinstance(c, Check) for c in out["checks"])
    assert out["budgets"]["budget"] == pytest.approx([2 / 255, 4 / 255, 8 / 255])
    assert out["budgets"]["psnr"][-1] == out["iterations"]["psnr"][-1]
    assert out["restarts"]["psnr"][0] == pytest.approx(out["iterations"]["psnr"][-1], abs=1e-4)


def test_transfer_crafted_once_serves_targets_evaluated_later():
    from ts_defense.evaluation.auto import craft_transfer

    den, src, x = tiny(0), tiny(1), clean()
    direct = auto_attack(den, x, SIGMA, members=MEMBERS, sources={"src": src})
    made = craft_transfer({"src": src}, x, SIGMA, next(iter(MEMBERS.values())))
    reused = auto_attack(den, x, SIGMA, members=MEMBERS, transferred=made)
    assert reused.psnr == direct.psnr and reused.per_member == direct.per_member
    with pytest.raises(ValueError, match="transferred: crafted for other images"):
        auto_attack(den, clean(seed=5), SIGMA, members=MEMBERS, transferred=made)
    with pytest.raises(ValueError, match="not both"):
        auto_attack(den, x, SIGMA, members=MEMBERS, sources={"src": src}, transferred=made)
    with pytest.raises(TypeError, match=r"sources\['x'\] must be a ts_defense.Denoiser"):
        craft_transfer({"x": den.model}, x, SIGMA, next(iter(MEMBERS.values())))
