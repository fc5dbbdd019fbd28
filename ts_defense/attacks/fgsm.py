"""One-step FGSM for denoisers (Goodfellow et al. 2015): a single sign step of size eps."""

from __future__ import annotations

from .pgd import DenoisingPGD


class DenoisingFGSM(DenoisingPGD):
    r"""FGSM: ``delta = eps * sign(grad)`` at the unperturbed input; no random start.

    Distance measure: L-inf, ``|delta|_inf <= eps``. The cheapest attack: one forward and one
    backward pass, the strength HAT-style adversarial training uses.

    Arguments: model, sigma, eps (8/255), objective (``"clean"``), loss (``"mse"``), clip (None).

    >>> adv = DenoisingFGSM(Denoiser(dncnn, predicts="noise"), sigma=25 / 255)(noisy, clean)
    """

    takes_steps = False

    def default_alpha(self) -> float:
        """The whole budget in the one step."""
        return self.eps
