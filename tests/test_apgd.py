"""APGD for denoisers: the paper's schedule, step halving where progress stalls, the budgets, the
best iterate and restarts, determinism, NaN reporting, bad input, and its strength against
10-step denoising-PGD on the pretrained DnCNN-S-25."""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn
from torchattacks.attack import Attack

from ts_defense import Denoiser
from ts_defense.attacks import (
    APGD,
    APGDL2,
    APGDObsAtk,
    DenoisingPGD,
    budget_options,
    make_attack,
)
from ts_defense.attacks.apgd import checkpoints, halve
from ts_defense.data import centre_crop, set12
from ts_defense.evaluation.metrics import add_noise, denoise, psnr
from ts_defense.models import DnCNN, load_dncnn

SIGMA = 25 / 255
TOL = 1e-6  # float32 rounding of y + delta


def tiny(seed=0, channels=1):
    torch.manual_seed(seed)
    return Denoiser(DnCNN(channels, depth=3, features=8, batch_norm=False), predicts="noise").eval()


def images(b=2, c=1, h=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, h, generator=g)
    return x, x + SIGMA * torch.randn(x.shape, generator=g)


def sse(den, adv, x):
    with torch.no_grad():
        return (den(adv, SIGMA) - x).square().flatten(1).sum(1)


class Flat(nn.Module):
    """An output that ignores the input: the objective never moves (zero gradient)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, y):
        return 0 * y + self.w * 0.5


def test_checkpoints_follow_the_paper():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]  # as in Croce & Hein's code
    for n in (1, 3, 10, 25, 50, 137):  # p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(dp - 0.03, 0.06)
        p, prev, want = Fraction(22, 100), Fraction(0), []
        while p <= 1:
            w = math.ceil(p * n)
            if not want or w > want[-1]:
                want.append(w)
            p, prev = p + max(p - prev - Fraction(3, 100), Fraction(6, 100)), p
        assert checkpoints(n) == want
        assert want[-1] <= n


def test_halving_conditions():
    t, f = torch.tensor([True]), torch.tensor([False])
    one, two = torch.tensor([1.0]), torch.tensor([2.0])
    # condition 1: fewer than 75% of 4 steps raised the objective
    assert halve(torch.tensor([2.0]), 4, t, two, one).item()
    assert not halve(torch.tensor([3.0]), 4, t, two, one).item()
    # condition 2: not halved last time and the best has not moved since
    assert halve(torch.tensor([4.0]), 4, f, one, one).item()
    assert not halve(torch.tensor([4.0]), 4, t, one, one).item()  # it was halved last time
    assert not halve(torch.tensor([4.0]), 4, f, two, one).item()  # it improved


def test_the_step_halves_at_every_checkpoint_when_progress_stalls():
    den = Denoiser(Flat(), predicts="clean")
    x, y = images()
    atk = APGD(den, SIGMA, eps=4 / 255, steps=20)
    atk(y, x)
    step = atk.record.step[0]  # (steps + 1, B)
    assert torch.allclose(step[0], torch.full((2,), 8 / 255))
    halved = [k for k in range(1, 21) if bool((step[k] < step[k - 1]).all())]
    assert halved == checkpoints(20)
    torch.testing.assert_close(step[-1], step[0] / 2 ** len(checkpoints(20)))


def test_the_step_is_kept_while_the_objective_rises_and_halved_once_it_stalls():
    torch.manual_seed(0)
    den = Denoiser(nn.Conv2d(1, 1, 5, padding=2, bias=False), predicts="clean").eval()
    x, y = images(3)
    atk = APGDL2(den, SIGMA, eps=4 / 255, steps=20)
    atk(y, x)
    step, loss = atk.record.step[0], atk.record.loss[0]
    first = checkpoints(20)[0]
    assert bool((loss[first] > loss[first - 1]).all())  # still rising at the first checkpoint
    assert torch.equal(step[first], step[0])
    assert bool((step[-1] < step[0]).all())  # converged: halved later


@pytest.mark.parametrize("clip", [None, (0.0, 1.0)])
def test_budgets_are_respected_exactly(clip):
    den = tiny(1, channels=3)
    x, y = images(2, 3, 12, seed=2)
    if clip:
        y = y.clamp(*clip)
    eps = 4 / 255
    d = (APGD(den, SIGMA, eps=eps, steps=8, clip=clip)(y, x) - y).double()
    assert d.abs().max() <= eps + TOL
    assert d.abs().max() >= eps - TOL  # the attack uses the whole budget
    radius = eps * math.sqrt(3 * 12 * 12)
    for cls in (APGDL2, APGDObsAtk):
        adv = cls(den, SIGMA, eps=eps, steps=8, clip=clip)(y, x)
        d = (adv - y).double()
        norms = d.flatten(1).norm(dim=1)
        assert (norms <= radius * (1 + 1e-5) + TOL).all()
        assert (norms >= radius * 0.99).all()
        if cls is APGDObsAtk:
            assert d.mean(dim=(1, 2, 3)).abs().max() <= 1e-7
        if clip:
            assert adv.min() >= clip[0] and adv.max() <= clip[1]
    assert (
        APGDL2(den, SIGMA, zero_mean=True).describe().startswith("APGDL2, zero-mean L2 eps 5/255")
    )


def test_the_best_iterate_is_kept_per_image_and_over_restarts():
    den = tiny(2)
    x, y = images(3, seed=3)
    atk = APGD(den, SIGMA, eps=4 / 255, steps=12, restarts=3)
    adv = atk(y, x)
    rec = atk.record
    assert rec.loss.shape == (3, 13, 3) and rec.psnr.shape == (3, 13, 3)
    assert bool((rec.loss.diff(dim=1) >= 0).all())  # best so far never decreases
    assert not torch.equal(rec.loss[0, 0], rec.loss[1, 0])  # the restarts start elsewhere
    torch.testing.assert_close(rec.best_loss[-1], rec.loss[:, -1].max(0).values)
    assert bool((rec.best_loss.diff(dim=0) >= 0).all())
    # the returned input is the best iterate found, and its PSNR is the one recorded
    torch.testing.assert_close(sse(den, adv, x), rec.best_loss[-1], rtol=1e-5, atol=1e-5)
    measured = torch.tensor(psnr(x, denoise(den, adv, SIGMA)), dtype=torch.float64)
    torch.testing.assert_close(measured, rec.best_psnr[-1], rtol=0, atol=1e-4)
    assert rec.best_psnr[-1].mean() <= rec.best_psnr[0].mean()


def test_same_seed_same_result_and_restarts_are_independent_streams():
    den = tiny(3)
    x, y = images(2, seed=4)
    a = APGD(den, SIGMA, steps=6, restarts=2, seed=7)
    first = a(y, x)
    assert torch.equal(first, a(y, x))  # the same object again
    b = APGD(den, SIGMA, steps=6, restarts=2, seed=7)
    assert torch.equal(first, b(y, x)) and torch.equal(a.record.loss, b.record.loss)
    assert not torch.equal(first, APGD(den, SIGMA, steps=6, restarts=2, seed=8)(y, x))
    # restart r uses stream r: a run of one restart is the first restart of a longer run
    one = APGD(den, SIGMA, steps=6, restarts=1, seed=7)
    one(y, x)
    assert torch.equal(one.record.loss[0], a.record.loss[0])
    assert a.restart_seed(1) != a.restart_seed(0) != APGD(den, SIGMA, seed=8).restart_seed(0)


def test_images_of_a_batch_are_attacked_independently():
    den = tiny(4)
    x, y = images(3, seed=5)
    atk = APGD(den, SIGMA, eps=6 / 255, steps=10, random_start=False)
    batch = atk(y, x)
    steps = atk.record.step[0]
    for i in range(3):
        alone = atk(y[i : i + 1], x[i : i + 1])
        torch.testing.assert_close(alone, batch[i : i + 1], rtol=0, atol=1e-6)
        torch.testing.assert_close(atk.record.step[0, :, 0], steps[:, i])


def test_every_objective_raises_its_own_objective():
    den = tiny(5)
    x, y = images(2, seed=6)
    for objective in ("clean", "output", "noisy"):
        for cls in (APGD, APGDObsAtk):
            atk = cls(den, SIGMA, steps=5, objective=objective)
            atk(y, x if objective == "clean" else None)
            assert bool((atk.record.best_loss[-1] > atk.record.loss[0, 0]).all())
            assert atk.record.psnr is None if objective != "clean" else True
    atk = APGD(den, SIGMA, steps=5, objective="noisy")
    adv = atk(y)
    with torch.no_grad():
        assert sse(den, adv, y).sum() < sse(den, y, y).sum()  # the output moved towards y


class Breaks(nn.Module):
    """A denoiser that returns NaN wherever a pixel of its input exceeds 5."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, y):
        return self.conv(y) + 0 * torch.sqrt(5 - y)


def test_nan_under_attack_names_the_images():
    torch.manual_seed(0)
    den = Denoiser(Breaks(), predicts="clean").eval()
    x, y = images(3, seed=7)
    y[1, 0, 4] = 5 - 1 / 255  # a row one grey level under the edge: the attack crosses it
    with pytest.raises(ValueError, match=r"not finite during the attack on image\(s\) 1 of"):
        APGD(den, SIGMA, eps=4 / 255, steps=3)(y, x)
    atk = APGD(den, SIGMA, eps=4 / 255, steps=3, nonfinite="record")
    adv = atk(y, x)
    assert atk.record.nonfinite.tolist() == [False, True, False]
    out = denoise(den, adv, SIGMA)
    assert bool(out[1].isnan().any()) and bool(out[[0, 2]].isfinite().all())  # where it broke
    assert atk.record.best_psnr[-1].isnan().tolist() == [False, True, False]


def test_bad_input_is_refused_by_name():
    den = tiny()
    with pytest.raises(ValueError, match=r"eps=8 is too large for image units.*\(8/255, not 8\)"):
        APGD(den, SIGMA, eps=8)
    with pytest.raises(ValueError, match=r"eps=5 is too large for image units"):
        APGDObsAtk(den, SIGMA, eps=5)
    with pytest.raises(ValueError, match="steps must be finite and > 0, got 0"):
        APGD(den, SIGMA, steps=0)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"restarts must be finite and > 0, got {bad}"):
            APGD(den, SIGMA, restarts=bad)
    with pytest.raises(TypeError, match="restarts must be an int, got 1.5"):
        APGDL2(den, SIGMA, restarts=1.5)
    with pytest.raises(TypeError, match="alpha: APGD has no step size to tune"):
        APGD(den, SIGMA, alpha=0.1)
    with pytest.raises(ValueError, match="unknown nonfinite 'skip'"):
        APGD(den, SIGMA, nonfinite="skip")
    with pytest.raises(ValueError, match="restarts: restarts differ only by their random start"):
        APGD(den, SIGMA, restarts=2, random_start=False)
    with pytest.raises(TypeError, match="zero_mean must be True or False"):
        APGDL2(den, SIGMA, zero_mean="yes")
    x, y = images()
    with pytest.raises(ValueError, match=r"must return one value per image, got \(\)"):
        APGD(den, SIGMA, steps=1, loss=lambda out, ref: (out - ref).abs().sum())(y, x)
    with pytest.raises(ValueError, match="objective 'clean' needs the clean image"):
        APGD(den, SIGMA, steps=1)(y)


def test_torchattacks_conventions():
    den = tiny()
    atk = make_attack("apgd-obsatk", den, SIGMA, **budget_options("apgd-obsatk", 3 / 255, 4))
    assert isinstance(atk, Attack) and isinstance(atk, APGDObsAtk) and atk.zero_mean
    assert (atk.eps, atk.steps, atk.restarts) == (3 / 255, 4, 1)
    assert make_attack("apgd", den, SIGMA).describe() == (
        "APGD, L-inf eps 8/255, 100 steps, clean target, 1 restart"
    )
    x, y = images()
    den.train()
    atk = APGD(den, SIGMA, steps=2)
    atk(y, x)
    assert den.training  # its mode is restored after the attack (run in eval mode)
    with pytest.raises(NotImplementedError, match="target labels"):
        atk.set_mode_targeted_random()


@pytest.mark.slow
def test_apgd_is_at_least_as_strong_as_10_step_pgd_on_dncnn_s_25(shared_data):
    den = Denoiser(load_dncnn(shared_data / "weights" / "DnCNN-S-25.pth"), predicts="noise")
    x = torch.cat([centre_crop(im, 24) for im in set12(shared_data / "set12")[:2]])
    y = add_noise(x, SIGMA, seed=0)[0]
    eps = 8 / 255

    def attacked(atk):
        return sum(psnr(x, denoise(den, atk(y, x), SIGMA))) / len(x)

    pgd = attacked(DenoisingPGD(den, SIGMA, eps=eps, steps=10))
    apgd10 = attacked(APGD(den, SIGMA, eps=eps, steps=10))
    apgd25 = attacked(APGD(den, SIGMA, eps=eps, steps=25))
    clean = sum(psnr(x, denoise(den, y, SIGMA))) / len(x)
    print(f"\nclean {clean:.3f}, PGD-10 {pgd:.3f}, APGD-10 {apgd10:.3f}, APGD-25 {apgd25:.3f}")
    assert clean - pgd > 3.0  # the attack is real
    assert apgd10 <= pgd and apgd25 <= apgd10
