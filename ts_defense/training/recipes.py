"""Named training recipes: what noise to draw, how each batch is attacked, and one strength knob.

================ ========================================================= ================
recipe           adversarial part (Gaussian noise; ``ts-<name>``: TS noise) knob (strength)
================ ========================================================= ================
``gaussian``     none (``ts``: TS noise, none)                              -
``hat``          half the batch replaced, crafted (one L-inf step)          budget ``eps``
``free-hat``     half, amortised (no extra pass)                            budget ``eps``
``multi-hat``    half, crafted in 3 steps, budget ramped over 50 steps      budget ``eps``
``trades``       half copied, crafted against ``f(y)``; pair term           weight
``yan-hat``      every row copied, one zero-mean L2 step at RMS 5/255,      weight (alpha)
                 loss ``(fit + alpha * pair) / (1 + alpha)`` (Yan et al.)
``jacobian``     a quarter copied with random noise of RMS 1/255; the pair   weight
                 term over ``eps**2`` is a Jacobian penalty
================ ========================================================= ================

Every recipe but ``gaussian`` has a ``ts-`` twin drawing TS noise (``ts`` for ``gaussian``).
The knob (:attr:`Recipe.knob`, set with ``strength=``) moves a recipe along its
robustness-accuracy frontier: for the HAT family the top of the budget range (image units),
for the pair-term recipes the term's weight. Options refine a recipe: ``config`` holds sampler
options (sigma, band, families...; a recipe without TS draws with ``p_ood = 0`` and refuses a
``p_ood`` above 0 chosen for it), ``adversarial`` the attack's options (share, eps, threat,
steps, ...): a recipe's defining options (``amortised``, ``consistency`` ...) win over them.
Measured costs and gains are in the README and BENCHMARKS.md.

>>> r = make_recipe("ts-hat", config={"sigma": 25 / 255}, strength=4 / 255)
>>> step = TrainStep(model, opt, r.sampler(seed=0), perturbation=r.perturbation(seed=0),
...                  predicts="noise")
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._checks import check_nonnegative
from .._registry import Registry
from ..noise.sampler import TSConfig, TSSampler
from .adversarial import Adversarial, AdversarialConfig, _check_budget


@dataclass(frozen=True)
class Spec:
    """What a recipe name stands for: defaults (the user's options override them), defining
    options (they override the user's) and the knob, the option ``strength`` sets."""

    defaults: Mapping[str, Any] | None = None  # None: no adversarial part
    defining: Mapping[str, Any] = field(default_factory=dict)
    knob: str | None = None  # "eps" (top of the budget) or "consistency" (weight)


BASE = {
    "gaussian": Spec(),
    "hat": Spec({}, {"amortised": False, "consistency": 0.0}, "eps"),
    "free-hat": Spec({}, {"amortised": True, "consistency": 0.0}, "eps"),
    "multi-hat": Spec({"steps": 3, "warmup": 50}, {"amortised": False, "consistency": 0.0}, "eps"),
    "trades": Spec(
        {"eps": 8 / 255, "consistency": 1.0},
        {"amortised": False, "objective": "output", "threat": "linf"},
        "consistency",
    ),
    "yan-hat": Spec(
        {"eps": 5 / 255, "share": 1.0, "consistency": 1.0},
        {"amortised": False, "threat": "l2", "steps": 1, "normalised": True},
        "consistency",
    ),
    "jacobian": Spec(
        {"eps": 1 / 255, "share": 0.25, "consistency": 0.01},
        {"amortised": False, "threat": "random"},
        "consistency",
    ),
}
# name -> (draws TS noise, spec): every recipe in a Gaussian and a TS version
RECIPES: Registry[tuple[bool, Spec]] = Registry(
    "recipe",
    {
        **{name: (False, spec) for name, spec in BASE.items()},
        **{"ts" if n == "gaussian" else f"ts-{n}": (True, spec) for n, spec in BASE.items()},
    },
)


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: the sampler's config and the adversarial share's (or None)."""

    name: str
    config: TSConfig
    adversarial: AdversarialConfig | None

    @property
    def knob(self) -> str | None:
        """The adversarial option ``strength`` sets (None for ``gaussian`` and ``ts``)."""
        return RECIPES[self.name][1].knob if self.name in RECIPES else None

    @property
    def strength(self) -> float | None:
        """The knob's value: the top of the budget, or the pair term's weight."""
        if self.adversarial is None or self.knob is None:
            return None
        return self.adversarial.eps_max if self.knob == "eps" else self.adversarial.consistency

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
    strength: float | None = None,
) -> Recipe:
    """Resolve recipe ``name`` (a key of ``RECIPES``) with sampler and adversarial options, and
    its knob set to ``strength`` (see the module docstring; None: the recipe's default)."""
    if isinstance(name, Recipe):
        if config is not None or adversarial is not None or strength is not None:
            raise TypeError("a resolved Recipe takes no further config, adversarial or strength")
        return name
    if not isinstance(name, str):
        raise TypeError(f"recipe must be a name or a Recipe, got {type(name).__name__}")
    ts, spec = RECIPES.lookup(name)
    given = config
    if config is None:
        config = TSConfig()
    elif isinstance(config, Mapping):
        config = TSConfig.from_dict(config)
    elif not isinstance(config, TSConfig):
        raise TypeError(f"config must be a TSConfig or a mapping, got {type(config).__name__}")
    if not ts:
        if _asks_for_ood(given, config):
            with_ts = "ts" if name == "gaussian" else f"ts-{name}"
            raise ValueError(
                f"recipe {name!r} draws Gaussian noise only, but the config asks for "
                f"p_ood={config.p_ood:g}: use recipe {with_ts!r} for TS noise, or leave p_ood out"
            )
        config = dataclasses.replace(config, p_ood=0.0)
    if spec.defaults is None:
        if adversarial is not None or strength is not None:
            what = "adversarial options" if adversarial is not None else "a strength"
            raise ValueError(
                f"recipe {name!r} has no adversarial part: {what} need one of "
                f"{', '.join(repr(k) for k, v in RECIPES.items() if v[1].knob)}"
            )
        return Recipe(name, config, None)
    if isinstance(adversarial, AdversarialConfig):
        adv = dataclasses.replace(adversarial, **spec.defining)
    elif adversarial is None or isinstance(adversarial, Mapping):
        options = {**spec.defaults, **dict(adversarial or {}), **spec.defining}
        adv = AdversarialConfig.from_dict(options)
    else:
        raise TypeError(
            f"adversarial must be an AdversarialConfig or a mapping, "
            f"got {type(adversarial).__name__}"
        )
    if strength is not None:
        adv = _with_strength(adv, spec.knob, strength)
    return Recipe(name, config, adv)


def _with_strength(adv: AdversarialConfig, knob: str | None, strength: object) -> AdversarialConfig:
    """``adv`` with its knob at ``strength``: the top of a budget range (a fixed budget is
    replaced), or the pair term's weight."""
    if knob == "eps":
        if isinstance(strength, (tuple, list)):
            raise TypeError(f"strength must be one budget (image units), got {strength!r}")
        try:
            top = float(_check_budget(strength))
        except ValueError as err:
            raise ValueError(f"strength: {err}".replace("eps=", "strength=")) from None
        low = adv.eps[0] if isinstance(adv.eps, tuple) else None
        eps: float | tuple[float, float] = top if low is None else (min(low, top), top)
        return dataclasses.replace(adv, eps=eps)
    check_nonnegative("strength", strength, high=1e6)
    if not strength:
        raise ValueError("strength=0 turns the pair term off: use recipe 'gaussian' instead")
    return dataclasses.replace(adv, consistency=float(strength))


def _asks_for_ood(given: object, config: TSConfig) -> bool:
    """Whether the config as given chose out-of-distribution noise: a mapping with ``p_ood``
    above 0, or a ``TSConfig`` whose ``p_ood`` is neither 0 nor the default (a dataclass cannot
    tell a default given again from one left out)."""
    if isinstance(given, Mapping):
        return "p_ood" in given and config.p_ood > 0
    default = inspect.signature(TSConfig).parameters["p_ood"].default
    return config.p_ood not in (0, default)
