"""Crafting on an ensemble of surrogates (Liu et al. 2017): perturbations that fool several
models at once transfer better to an unseen one — the stress test for a defense."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ..models.denoiser import Denoiser
from .base import as_denoisers
from .pgd import DenoisingPGD


class EnsemblePGD(DenoisingPGD):
    r"""Denoising-PGD on the mean loss of several surrogate denoisers.

    Distance measure: L-inf. Every surrogate is called with the nominal sigma; for the
    ``"output"`` objective each is compared with its own output on the unperturbed input.
    (Every attack here accepts a sequence of denoisers; this class requires two or more.)

    Arguments: models (a sequence of :class:`Denoiser`), then as :class:`DenoisingPGD`.

    >>> attack = EnsemblePGD([Denoiser(a, predicts="noise"), Denoiser(b)], sigma=25 / 255)
    >>> adv = attack(noisy, clean)
    """

    def __init__(
        self,
        models: Sequence[Denoiser],
        sigma: float | Tensor,
        eps: float = 8 / 255,
        steps: int = 10,
        **options: Any,
    ) -> None:
        if len(as_denoisers(models)) < 2:
            raise ValueError("models: an ensemble needs at least two surrogate denoisers")
        options.setdefault("name", "EnsemblePGD")
        super().__init__(models, sigma, eps, steps, **options)
