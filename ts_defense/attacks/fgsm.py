"""One-step FGSM for denoisers (Goodfellow et al. 2015): a single sign step of size eps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ..models.denoiser import Denoiser
from .pgd import DenoisingPGD


class DenoisingFGSM(DenoisingPGD):
    r"""FGSM: ``delta = eps * sign(grad)`` at the unperturbed input; no random start.

    Distance measure: L-inf, ``|delta|_inf <= eps``. The cheapest attack: one forward and one
    backward pass, the strength HAT-style adversarial training uses.

    Arguments: model, sigma, eps (8/255), objective (``"clean"``), loss (``"mse"``), clip (None).

    >>> adv = DenoisingFGSM(Denoiser(dncnn, predicts="noise"), sigma=25 / 255)(noisy, clean)
    """

    takes_steps = False

    def __init__(
        self,
        model: Denoiser | Sequence[Denoiser],
        sigma: float | Tensor,
        eps: float = 8 / 255,
        **options: Any,
    ) -> None:
        fixed = sorted({"steps", "alpha", "random_start"} & set(options))
        if fixed:  # one full step from the unperturbed input, by definition
            raise TypeError(f"DenoisingFGSM takes no {', '.join(fixed)} (one step of size eps)")
        options.setdefault("name", "DenoisingFGSM")
        super().__init__(model, sigma, eps, 1, random_start=False, **options)

    def default_alpha(self) -> float:
        """The whole budget in the one step."""
        return self.eps
