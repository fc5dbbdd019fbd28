"""Momentum iterative attack for denoisers (MI-FGSM, Dong et al. 2018): transfers better."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .._checks import check_nonnegative
from .pgd import DenoisingPGD


class MomentumPGD(DenoisingPGD):
    r"""L-inf attack whose sign steps follow an accumulated, L1-normalised gradient.

    ``g <- decay * g + grad / mean|grad|``; ``delta <- clamp(delta + alpha * sign(g), eps)``.
    Distance measure: L-inf. Stabilising the direction helps perturbations crafted on one model
    (or an ensemble) transfer to others.

    Arguments: as :class:`DenoisingPGD`, plus decay (1.0, by keyword); alpha defaults to
    ``eps / steps`` and there is no random start by default (as in MI-FGSM).

    >>> adv = MomentumPGD(Denoiser(dncnn, predicts="noise"), sigma=25 / 255)(noisy, clean)
    """

    default_random_start = False

    def __init__(self, *args: Any, decay: float = 1.0, **options: Any) -> None:
        super().__init__(*args, **options)
        self.decay = float(check_nonnegative("decay", decay))

    def default_alpha(self) -> float:
        """The budget crossed once in all (as in MI-FGSM)."""
        return self.eps / self.steps

    def step(self, delta: Tensor, grad: Tensor, state: dict) -> Tensor:
        scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-30)
        g = grad / scale + self.decay * state.get("momentum", 0.0)
        state["momentum"] = g
        return delta + self.alpha * g.sign()
