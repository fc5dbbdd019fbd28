import pytest
import torch
from torch import nn

from ts_defense import Denoiser
from ts_defense.detect import TypicalityDetector, roc_auc, typicality_scores


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
    scores_clean = typicality_scores(den, y[:200], sigma)
    scores_attacked = typicality_scores(den, (y + delta)[200:], sigma)
    assert roc_auc(scores_clean["window"], scores_attacked["window"]) > 0.95
    assert roc_auc(scores_clean["window"], scores_attacked["window"]) > roc_auc(
        scores_clean["global"], scores_attacked["global"]
    )
    det = TypicalityDetector(den, sigma)
    det.calibrate(y[:200], false_alarm=0.05)
    assert det(y[200:]).float().mean().item() < 0.12  # fresh clean inputs: about 5 %
    assert det((y + delta)[200:]).float().mean().item() > 0.8


def test_detector_errors():
    den = Denoiser(nn.Identity())
    with pytest.raises(ValueError, match="calibrate"):
        TypicalityDetector(den, 0.1)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="score"):
        TypicalityDetector(den, 0.1, score="max")
    with pytest.raises(ValueError, match="false_alarm"):
        TypicalityDetector(den, 0.1).calibrate(torch.rand(2, 1, 8, 8), false_alarm=2.0)
