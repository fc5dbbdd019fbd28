"""The losses between a denoiser's output and its reference: one definition for the attacks
and for training (``LOSSES``, by name; here at the root so that training needs no attack code).

Each is a per-pixel penalty of the difference ``output - reference``, gathered per sample as
the mean over the sample's pixels (``"sum_mse"``, the DnCNN recipe: the sum of half squares).
Training descends the batch mean of :meth:`PixelLoss.per_sample`; an attack ascends the
penalty summed over every pixel (:meth:`PixelLoss.total`; per sample,
:meth:`PixelLoss.sample_totals`): per sample the same direction, at a scale that does not shrink
with the image size (half-precision gradients stay clear of underflow).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ._registry import Registry


@dataclass(frozen=True)
class PixelLoss:
    """A per-pixel ``penalty`` of ``output - reference``, per sample its mean (or, with
    ``summed``, its sum)."""

    penalty: Callable[[Tensor], Tensor]
    summed: bool = False

    def per_sample(self, output: Tensor, reference: Tensor) -> Tensor:
        """The loss of each sample, shape (B,)."""
        pixels = self.penalty(output - reference).flatten(1)
        return pixels.sum(1) if self.summed else pixels.mean(1)

    def sample_totals(self, output: Tensor, reference: Tensor) -> Tensor:
        """The penalty summed over each sample's pixels, shape (B,): what an attack ascends."""
        return self.penalty(output - reference).flatten(1).sum(1)

    def total(self, output: Tensor, reference: Tensor) -> Tensor:
        """The penalty summed over the whole batch (a scalar)."""
        return self.penalty(output - reference).sum()


def charbonnier(diff: Tensor, eps: float = 1e-3) -> Tensor:
    """``sqrt(diff^2 + eps^2)``: L1 away from zero, smooth at zero."""
    return (diff.square() + eps * eps).sqrt()


LOSSES: Registry[PixelLoss] = Registry(
    "loss",
    {
        "mse": PixelLoss(Tensor.square),
        "l1": PixelLoss(Tensor.abs),
        "charbonnier": PixelLoss(charbonnier),
        "sum_mse": PixelLoss(lambda diff: diff.square() / 2, summed=True),
    },
)
