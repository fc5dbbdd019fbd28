"""Attacks on denoisers (torchattacks-compatible) and their evaluation (DESIGN.md §4, layer 4).

Attacks perturb the noisy input and call models only through :class:`ts_defense.Denoiser`
with the nominal sigma: :class:`DenoisingPGD` (L-inf), :class:`L2DenoisingPGD` (L2, budget
relative to the noise norm), :class:`ObsAtk` (zero-mean L2), :class:`DenoisingFGSM`,
:class:`MomentumPGD` and :class:`EnsemblePGD`. ``make_attack(name, model, sigma, **options)``
builds one by its short name (``ATTACKS``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import LOSSES, OBJECTIVES, DenoiserAttack
from .ensemble import EnsemblePGD
from .fgsm import DenoisingFGSM
from .momentum import MomentumPGD
from .obsatk import ObsAtk
from .pgd import DenoisingPGD
from .pgd_l2 import L2DenoisingPGD

ATTACKS: dict[str, type[DenoiserAttack]] = {
    "pgd": DenoisingPGD,
    "pgd-l2": L2DenoisingPGD,
    "obsatk": ObsAtk,
    "fgsm": DenoisingFGSM,
    "mifgsm": MomentumPGD,
    "ensemble-pgd": EnsemblePGD,
}


def make_attack(name: str, model: Any, sigma: float | Tensor, **options: Any) -> DenoiserAttack:
    """The attack called ``name`` (a key of ``ATTACKS``) on ``model`` with ``options``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(map(repr, ATTACKS))}")
    return ATTACKS[name](model, sigma, **options)


__all__ = [
    "ATTACKS",
    "LOSSES",
    "OBJECTIVES",
    "DenoiserAttack",
    "DenoisingFGSM",
    "DenoisingPGD",
    "EnsemblePGD",
    "L2DenoisingPGD",
    "MomentumPGD",
    "ObsAtk",
    "make_attack",
]
