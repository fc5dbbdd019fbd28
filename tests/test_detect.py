import pytest
import torch
from torch import nn

from ts_defense import Denoiser
from ts_defense.evaluation.detect import (
    TypicalityDetector,
    detection_auc,
    roc_auc,
    typicality_scores,
)
from ts_defense.noise import typical


def test_roc_auc_is_the_mann_whitney_statistic():
    assert roc_auc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert roc_auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert roc_auc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert roc_auc(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])) == 0.75
    with pytest.raises(ValueError, match="at least one score"):
        roc_auc(torch.tensor([]), torch.tensor([1.0]))


class Oracle(nn.Module):
    """A perfect denoiser for one known clean batch: its residual is exactly y - x."""

    def __init__(self, clean):
        super().__init__()
        self.clean = clean

    def forward(self, y):
        return self.clean.expand_as(y)


def test_detector_flags_structured_perturbations_and_keeps_its_false_alarm_rate():
    gen = torch.Generator().manual_seed(0)
    sigma = 25 / 255
    x = torch.rand(1, 1, 32, 32, generator=gen).expand(400, 1, 32, 32)
    den = Denoiser(Oracle(x[:1]))
    y = x + sigma * torch.randn(x.shape, generator=gen)
    # an attack-like perturbation: +-12/255 on one 8x8 window, aligned with the noise there
    delta = torch.zeros_like(y)
    delta[..., :8, :8] = (12 / 255) * (y - x)[..., :8, :8].sign()
    auc = detection_auc(den, y[:200], (y + delta)[200:], sigma)
    assert auc["window"] > 0.95 and auc["window"] > auc["global"]
    scores = typicality_scores(den, y[:200], sigma)
    torch.testing.assert_close(scores["global"], typical.deviation(y[:200] - x[:200], sigma))
    det = TypicalityDetector(den, sigma)
    det.calibrate(y[:200], false_alarm=0.05)
    assert det(y[200:]).float().mean().item() < 0.12  # fresh clean inputs: about 5 %
    assert det((y + delta)[200:]).float().mean().item() > 0.8


def test_detection_auc_is_one_half_for_inputs_that_were_not_attacked():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 16, 16, generator=gen).expand(20, 1, 16, 16)
    y = x + 0.1 * torch.randn(x.shape, generator=gen)
    auc = detection_auc(Denoiser(Oracle(x[:1])), y, y, 0.1)
    assert auc == {"global": 0.5, "window": 0.5}


def test_detector_errors():
    den = Denoiser(nn.Identity())
    with pytest.raises(ValueError, match="calibrate"):
        TypicalityDetector(den, 0.1)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="score"):
        TypicalityDetector(den, 0.1, score="max")
    with pytest.raises(ValueError, match="false_alarm"):
        TypicalityDetector(den, 0.1).calibrate(torch.rand(2, 1, 8, 8), false_alarm=2.0)


def test_detector_centres_on_a_biased_residual():
    """A denoiser that leaves 10 % of the noise in its output has residual d < 0 on clean
    inputs; attacks that add power must still score as departures, not as returns to d = 0."""
    gen = torch.Generator().manual_seed(1)
    sigma = 25 / 255
    x = torch.rand(1, 1, 32, 32, generator=gen).expand(300, 1, 32, 32)

    class Leaky(nn.Module):
        def forward(self, y):
            return x[:1] + 0.1 * (y - x[:1])

    den = Denoiser(Leaky())
    y = x + sigma * torch.randn(x.shape, generator=gen)
    adv = y + (6 / 255) * (y - x).sign()
    auc = detection_auc(den, y[:150], adv[150:], sigma)
    assert auc["global"] > 0.95
    det = TypicalityDetector(den, sigma, score="global")
    det.calibrate(y[:150], false_alarm=0.05)
    assert -0.105 < det.centre < -0.085  # residual power 0.81 sigma^2: d = -0.095
    assert det(adv[150:]).float().mean().item() > 0.9
