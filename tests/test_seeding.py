"""One user seed, independent streams: an attack's random start must not repeat the test noise."""

import pytest
import torch

from ts_defense import TSSampler
from ts_defense.attacks import DenoisingPGD, ObsAtk
from ts_defense.evaluation.metrics import add_noise
from ts_defense.models.denoiser import Denoiser
from ts_defense.seeding import PURPOSES, stream_seed

SIGMA = 25 / 255


def corr(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


class Start(torch.nn.Module):
    """Identity denoiser: one zero-step attack returns exactly its random start."""

    def forward(self, y):
        return y * 1.0


@pytest.mark.parametrize("seed", [0, 1, 7, 2**40])
@pytest.mark.parametrize("attack", [DenoisingPGD, ObsAtk])
def test_attack_start_is_uncorrelated_with_test_noise_of_the_same_seed(seed, attack):
    clean = torch.full((1, 1, 96, 96), 0.5)
    (noisy,) = add_noise(clean, SIGMA, seed=seed)
    noise = noisy - clean
    atk = attack(Denoiser(Start()), SIGMA, steps=1, alpha=1e-12, seed=seed)
    start = atk(noisy, clean) - noisy  # one negligible step: the projected random start
    # 9216 pixels: an independent pair has |r| < 0.05 with probability > 0.9999 (sd 0.0104);
    # the tied streams of one seed gave r = -0.34.
    assert abs(corr(start, noise)) < 0.05


def test_streams_differ_by_purpose_and_repeat_by_seed():
    seeds = {p: stream_seed(3, p) for p in PURPOSES}
    assert len(set(seeds.values())) == len(PURPOSES)
    assert seeds == {p: stream_seed(3, p) for p in PURPOSES}
    assert stream_seed(3, "noise") != stream_seed(4, "noise")
    assert all(0 <= s < 2**63 for s in seeds.values())


def test_training_noise_test_noise_and_patches_are_independent():
    clean = torch.full((1, 1, 96, 96), 0.5)
    train = TSSampler(sigma=SIGMA, p_ood=0.0, seed=0).draw(clean).noise
    (test,) = add_noise(clean, SIGMA, seed=0)
    assert abs(corr(train, test - clean)) < 0.05
    gen = torch.Generator().manual_seed(stream_seed(0, "patches"))
    positions = torch.rand(96 * 96, generator=gen)
    assert abs(corr(positions, train)) < 0.05


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "0", None])
def test_bad_seed_or_purpose_named(bad):
    with pytest.raises(ValueError, match="seed"):
        stream_seed(bad, "noise")
    with pytest.raises(ValueError, match="purpose"):
        stream_seed(0, "labels")
