"""Attacks on denoisers (torchattacks-compatible) and their evaluation.

Attacks perturb the noisy input and call models only through :class:`ts_defense.Denoiser`
with the nominal sigma: :class:`DenoisingPGD` (L-inf), :class:`L2DenoisingPGD` (L2, budget
relative to the noise norm), :class:`ObsAtk` (zero-mean L2), :class:`DenoisingFGSM`,
:class:`MomentumPGD`, :class:`EnsemblePGD`, and the parameter-free :class:`APGD`,
:class:`APGDL2` and :class:`APGDObsAtk` (Croce & Hein 2020). ``make_attack(name, model, sigma,
**options)`` builds one by its short name (``ATTACKS``); each class says what builds it: its
budget keyword (``budget``), that budget's unit (``budget_unit``, a key of ``BUDGET_UNITS``), its
``norm`` and whether it takes ``steps`` (``takes_steps``). ``budget_options`` turns those into
keywords.
The losses (``LOSSES``) are the ones training uses too.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .._losses import LOSSES, PixelLoss
from .._registry import Registry
from .apgd import APGD, APGDL2, APGDObsAtk
from .base import BUDGET_UNITS, OBJECTIVES, DenoiserAttack
from .ensemble import EnsemblePGD
from .fgsm import DenoisingFGSM
from .momentum import MomentumPGD
from .obsatk import ObsAtk
from .pgd import DenoisingPGD
from .pgd_l2 import L2DenoisingPGD

ATTACKS: Registry[type[DenoiserAttack]] = Registry(
    "attack",
    {
        "pgd": DenoisingPGD,
        "pgd-l2": L2DenoisingPGD,
        "obsatk": ObsAtk,
        "fgsm": DenoisingFGSM,
        "mifgsm": MomentumPGD,
        "ensemble-pgd": EnsemblePGD,
        "apgd": APGD,
        "apgd-l2": APGDL2,
        "apgd-obsatk": APGDObsAtk,
    },
)


def budget_options(name: str, budget: float, steps: int | None = None) -> dict[str, Any]:
    """Keywords giving attack ``name`` this ``budget`` (in the attack's own unit) and ``steps``
    (dropped for one-step attacks such as ``"fgsm"``)."""
    cls = ATTACKS.lookup(name)
    options: dict[str, Any] = {cls.budget: budget}
    if steps is not None and cls.takes_steps:
        options["steps"] = steps
    return options


def make_attack(name: str, model: Any, sigma: float | Tensor, **options: Any) -> DenoiserAttack:
    """The attack called ``name`` (a key of ``ATTACKS``) on ``model`` with ``options``."""
    return ATTACKS.lookup(name)(model, sigma, **options)


__all__ = [
    "APGD",
    "APGDL2",
    "APGDObsAtk",
    "ATTACKS",
    "BUDGET_UNITS",
    "LOSSES",
    "OBJECTIVES",
    "DenoiserAttack",
    "DenoisingFGSM",
    "DenoisingPGD",
    "EnsemblePGD",
    "L2DenoisingPGD",
    "MomentumPGD",
    "ObsAtk",
    "PixelLoss",
    "budget_options",
    "make_attack",
]
