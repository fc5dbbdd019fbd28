"""Determinism (issue 7): the same seed gives the same TS noise (every family, draw after draw),
the same attacked inputs and the same metrics in two runs (bit for bit) and with 1 or 2 CPU
threads (each run a fresh process).

Across thread counts torch sums the convolution weight gradients in a thread-dependent order, so
trained weights, L2 attacks (normalised gradients) and metrics agree to float32 rounding, not bit
for bit; the noise and the sign-step attacks stay bitwise equal (README, "Reproducibility")."""

import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

RUN = r"""
import hashlib, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from ts_defense import Denoiser, TSSampler, fit
from ts_defense.attacks import make_attack
from ts_defense.evaluation.metrics import evaluate_attack
from ts_defense.models import DnCNN

def digest(t):
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()

torch.manual_seed(0)
clean = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
draw = TSSampler(sigma=25 / 255, p_ood=0.5, seed=7).draw(clean)
families = {"radial": {"sides": "below"}, "local": {"window": 5}, "structured": {"corr_scale": 3}}
every = TSSampler(sigma=[5 / 255, 50 / 255], p_ood=0.9, families=families, zero_mean=True, seed=7)
every_noise = [every.draw(clean).noise for _ in range(2)]
model = DnCNN(depth=4, features=16)
history = fit(model, clean, steps=3, batch_size=4, patch_size=16, seed=2, predicts="noise",
              progress=False)
den = Denoiser(model.eval(), predicts="noise")
out = {"threads": torch.get_num_threads(), "noise": digest(draw.noise),
       "every family": [digest(n) for n in every_noise],
       "family": draw.family.tolist(), "loss": history.column("loss"),
       "weights": digest(torch.cat([p.flatten() for p in model.parameters()]))}
for name in ("pgd", "pgd-l2", "obsatk", "mifgsm"):
    attack = make_attack(name, den, 25 / 255, steps=3, seed=5)
    ev, adv = evaluate_attack(den, attack, clean, draw.noisy, 25 / 255)
    out[name] = {"adv": digest(adv[0]), "values": adv[0].flatten().tolist(),
                 "psnr": ev.psnr_attacked, "ssim": ev.ssim_attacked}
out["weight_values"] = torch.cat([p.flatten() for p in model.parameters()]).tolist()
print(json.dumps(out))
"""


def run(threads):
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(threads)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    return [run(1), run(1), run(2)]


def test_same_seed_same_noise_attacks_and_metrics_in_two_runs(runs):
    first, second, _ = runs
    assert first == second


def test_thread_count_changes_noise_and_sign_attacks_not_at_all_and_the_rest_by_rounding(runs):
    one, _, two = runs
    assert one["threads"] == 1 and two["threads"] == 2
    for key in ("noise", "every family", "family"):
        assert one[key] == two[key], key
    for name in ("pgd", "mifgsm"):  # sign steps absorb rounding in the gradient
        assert one[name]["adv"] == two[name]["adv"], name
    close = partial(np.testing.assert_allclose, rtol=0, atol=1e-5)
    close(one["weight_values"], two["weight_values"])
    np.testing.assert_allclose(one["loss"], two["loss"], rtol=1e-6)  # conv reductions by thread
    for name in ("pgd", "pgd-l2", "obsatk", "mifgsm"):
        close(one[name]["values"], two[name]["values"])
        close(one[name]["psnr"], two[name]["psnr"])  # dB
        close(one[name]["ssim"], two[name]["ssim"])
