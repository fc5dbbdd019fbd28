"""Named training recipes: what noise to draw and which share of each batch to attack.

============== ============================================== ===================================
recipe         noise                                          adversarial share
============== ============================================== ===================================
``gaussian``   Gaussian only (``p_ood = 0``)                  none
``ts``         TS: Gaussian + out-of-distribution families    none
``hat``        Gaussian only                                  half, crafted (one L-inf step)
``ts-hat``     TS                                             half, crafted
``free-hat``   Gaussian only                                  half, amortised (no extra pass)
``ts-free-hat`` TS                                            half, amortised
============== ============================================== ===================================

Options refine a recipe: ``config`` holds sampler options (sigma, band, families...; a recipe
without TS draws with ``p_ood = 0`` and refuses a ``p_ood`` above 0 chosen for it),
``adversarial`` the share's options (share, eps, threat, steps). Measured costs and gains are in
the README and BENCHMARKS.md.

>>> r = make_recipe("ts-hat", config={"sigma": 25 / 255})
>>> step = TrainStep(model, opt, r.sampler(seed=0), perturbation=r.perturbation(seed=0),
...                  predicts="noise")
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._registry import Registry
from ..noise.sampler import TSConfig, TSSampler
from .adversarial import Adversarial, AdversarialConfig

# name -> (draws TS noise, adversarial options or None)
RECIPES: Registry[tuple[bool, dict[str, Any] | None]] = Registry(
    "recipe",
    {
        "gaussian": (False, None),
        "ts": (True, None),
        "hat": (False, {"amortised": False}),
        "ts-hat": (True, {"amortised": False}),
        "free-hat": (False, {"amortised": True}),
        "ts-free-hat": (True, {"amortised": True}),
    },
)


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: the sampler's config and the adversarial share's (or None)."""

    name: str
    config: TSConfig
    adversarial: AdversarialConfig | None

    def sampler(self, seed: int = 0) -> TSSampler:
        """The recipe's noise sampler, seeded."""
        return TSSampler(self.config, seed=seed)

    def perturbation(self, seed: int = 0) -> Adversarial | None:
        """The recipe's adversarial share (None for ``gaussian`` and ``ts``), seeded."""
        return None if self.adversarial is None else Adversarial(self.adversarial, seed=seed)


def make_recipe(
    name: str | Recipe = "ts",
    config: TSConfig | Mapping[str, Any] | None = None,
    adversarial: AdversarialConfig | Mapping[str, Any] | None = None,
) -> Recipe:
    """Resolve recipe ``name`` (a key of ``RECIPES``) with sampler and adversarial options."""
    if isinstance(name, Recipe):
        if config is not None or adversarial is not None:
            raise TypeError("a resolved Recipe takes no further config or adversarial options")
        return name
    if not isinstance(name, str):
        raise TypeError(f"recipe must be a name or a Recipe, got {type(name).__name__}")
    ts, adv_options = RECIPES.lookup(name)
    given = config
    if config is None:
        config = TSConfig()
    elif isinstance(config, Mapping):
        config = TSConfig.from_dict(config)
    elif not isinstance(config, TSConfig):
        raise TypeError(f"config must be a TSConfig or a mapping, got {type(config).__name__}")
    if not ts:
        if _asks_for_ood(given, config):
            with_ts = next(k for k, (t, a) in RECIPES.items() if t and a == adv_options)
            raise ValueError(
                f"recipe {name!r} draws Gaussian noise only, but the config asks for "
                f"p_ood={config.p_ood:g}: use recipe {with_ts!r} for TS noise, or leave p_ood out"
            )
        config = dataclasses.replace(config, p_ood=0.0)
    if adversarial is not None and adv_options is None:
        raise ValueError(
            f"recipe {name!r} has no adversarial share: adversarial options need one of "
            f"{', '.join(repr(k) for k, v in RECIPES.items() if v[1] is not None)}"
        )
    if adv_options is None:
        return Recipe(name, config, None)
    if isinstance(adversarial, AdversarialConfig):
        adv = dataclasses.replace(adversarial, **adv_options)
    elif adversarial is None or isinstance(adversarial, Mapping):
        adv = AdversarialConfig.from_dict({**dict(adversarial or {}), **adv_options})
    else:
        raise TypeError(
            f"adversarial must be an AdversarialConfig or a mapping, "
            f"got {type(adversarial).__name__}"
        )
    return Recipe(name, config, adv)


def _asks_for_ood(given: object, config: TSConfig) -> bool:
    """Whether the config as given chose out-of-distribution noise: a mapping with ``p_ood``
    above 0, or a ``TSConfig`` whose ``p_ood`` is neither 0 nor the default (a dataclass cannot
    tell a default given again from one left out)."""
    if isinstance(given, Mapping):
        return "p_ood" in given and config.p_ood > 0
    default = inspect.signature(TSConfig).parameters["p_ood"].default
    return config.p_ood not in (0, default)
