"""Typical-set detection of attacked inputs at inference (beyond the paper).

The residual ``y - f(y)`` of a good denoiser on a clean-noisy input is close to the Gaussian
noise, so its deviation from the sigma typical set is small globally and in every window.
An attacked input adds a structured perturbation that the denoiser partly removes, so the
residual leaves the typical set — most visibly in some windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice, check_finite, check_images, check_probability
from ..models.denoiser import Denoiser
from ..noise import typical


def typicality_scores(
    denoiser: Denoiser, noisy: Tensor, sigma: Tensor | float, window: int = 8
) -> dict[str, Tensor]:
    """Scores per image from the residual ``noisy - denoiser(noisy)``, each (B,):
    ``global``, its signed deviation ``d``; ``window``, the largest ``|d_k - median_k d_k|``
    over windows (local departures, whatever the global level)."""
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a ts_defense.Denoiser, got {type(denoiser).__name__}")
    check_images(noisy, "noisy")
    with torch.no_grad():
        residual = (noisy - denoiser(noisy, sigma)).float()
    d = typical.deviation(residual, sigma)
    dk = typical.window_deviation(residual, sigma, window).flatten(1)
    local = (dk - dk.median(1, keepdim=True).values).abs().amax(1)
    return {"global": d, "window": local}


def detection_auc(
    denoiser: Denoiser, clean_noisy: Tensor, attacked: Tensor, sigma: float, window: int = 8
) -> dict[str, float]:
    """ROC AUC of each score for attacked versus clean-noisy inputs, scores measured as the
    distance from the clean-noisy median (a denoiser's residual is rarely centred at d = 0)."""
    neg = typicality_scores(denoiser, clean_noisy, sigma, window)
    pos = typicality_scores(denoiser, attacked, sigma, window)
    auc = {}
    for k in neg:
        centre = neg[k].median()
        auc[k] = roc_auc((neg[k] - centre).abs(), (pos[k] - centre).abs())
    return auc


def _scores(name: str, values: object) -> Tensor:
    try:
        scores = torch.as_tensor(values, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or list of scores ({err})") from err
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return scores


def roc_auc(negatives: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2
    (the Mann–Whitney statistic)."""
    neg, pos = _scores("negatives", negatives), _scores("positives", positives)
    if neg.numel() == 0 or pos.numel() == 0:
        raise ValueError("roc_auc needs at least one score in negatives and in positives")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)


@dataclass
class TypicalityDetector:
    """Flags inputs whose residual score lies further from its clean-noisy centre than a
    threshold set so that at most ``false_alarm`` of clean-noisy inputs are flagged."""

    denoiser: Denoiser
    sigma: float
    score: str = "window"
    window: int = 8
    threshold: float | None = None
    centre: float = 0.0

    def __post_init__(self) -> None:
        check_choice("score", self.score, ("global", "window"))
        if self.threshold is not None:
            check_finite("threshold", self.threshold)
        check_finite("centre", self.centre)  # a NaN centre would flag nothing

    def calibrate(self, clean_noisy: Tensor, false_alarm: float = 0.05) -> float:
        """Centre the score on clean-noisy inputs and set the threshold at the
        ``1 - false_alarm`` quantile of their distance from that centre."""
        check_probability("false_alarm", false_alarm)
        scores = typicality_scores(self.denoiser, clean_noisy, self.sigma, self.window)
        s = scores[self.score].double()
        self.centre = float(s.median())
        self.threshold = float(torch.quantile((s - self.centre).abs(), 1 - false_alarm))
        return self.threshold

    def __call__(self, noisy: Tensor) -> Tensor:
        """(B,) bool: which inputs look attacked."""
        if self.threshold is None:
            raise ValueError("call calibrate() on clean-noisy inputs before detecting")
        scores = typicality_scores(self.denoiser, noisy, self.sigma, self.window)
        return (scores[self.score] - self.centre).abs() > self.threshold
