"""Crafting on an ensemble of surrogates (Liu et al. 2017): perturbations that fool several
models at once transfer better to an unseen one — the stress test for a defense."""

from __future__ import annotations

from .pgd import DenoisingPGD


class EnsemblePGD(DenoisingPGD):
    r"""Denoising-PGD on the mean loss of several surrogate denoisers.

    Distance measure: L-inf. Every surrogate is called with the nominal sigma; for the
    ``"output"`` objective each is compared with its own output on the unperturbed input.
    (Every attack here accepts a sequence of denoisers; this class requires two or more.)

    Arguments: as :class:`DenoisingPGD`, with model a sequence of two or more :class:`Denoiser`.

    >>> attack = EnsemblePGD([Denoiser(a, predicts="noise"), Denoiser(b)], sigma=25 / 255)
    >>> adv = attack(noisy, clean)
    """

    min_models = 2
