"""One-step FGSM for denoisers (Goodfellow et al. 2015): a single sign step of size eps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from ..denoiser import Denoiser
from .pgd import DenoisingPGD


class DenoisingFGSM(DenoisingPGD):
    r"""FGSM: ``delta = eps * sign(grad)`` at the unperturbed input; no random start.

    Distance measure: L-inf, ``|delta|_inf <= eps``. The cheapest attack: one forward and one
    backward pass, the strength HAT-style adversarial training uses.

    Arguments: model, sigma, eps (8/255), objective (``"clean"``), loss (``"mse"``), clip (None).

    >>> adv = DenoisingFGSM(Denoiser(dncnn, predicts="noise"), sigma=25 / 255)(noisy, clean)
    """

    def __init__(
        self,
        model: Denoiser | Sequence[Denoiser],
        sigma: float | Tensor,
        eps: float = 8 / 255,
        objective: str = "clean",
        loss: str | Callable[[Tensor, Tensor], Tensor] = "mse",
        clip: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, sigma, eps, 1, None, objective, loss, clip, False, seed, "DenoisingFGSM"
        )

    def step(self, delta: Tensor, grad: Tensor, state: dict) -> Tensor:
        return delta + self.eps * grad.sign()
