"""``ts`` option blocks of framework option files (BasicSR YAML, KAIR JSON) -> the TS sampler.

Framework option files give sigma in grey levels (0..255) — ``sigma: 25``, ``[0, 50]`` — while
the sampler works in image units ([0, 1]). :func:`sampler_from_options` converts, and every error
names the offending key (``ts: families.radial.band``, ``datasets.train.sigma_range``) so a
wrong option file fails at start-up, not hours into a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ts_defense._checks import check_choice, check_seed, shown
from ts_defense.noise.sampler import TSConfig, TSSampler
from ts_defense.noise.sigma import SigmaSchedule
from ts_defense.training.adversarial import Adversarial
from ts_defense.training.recipes import RECIPES, make_recipe

GREY = 255.0
# option files' sigma_type (Restormer's Dataset_GaussianDenoising) -> SigmaSchedule kind
SIGMA_TYPES = {"constant": "fixed", "random": "range", "choice": "choice"}
# The sampler needs sigma > 0; a range such as Restormer's [0, 50] may draw 0, which becomes a
# thousandth of a grey level (invisible after 8-bit quantisation).
MIN_SIGMA = 1e-3 / GREY


def grey_level(key: str, value: object, what: str = "sigma") -> float:
    """One ``what`` (``"sigma"`` or ``"eps"``) in grey levels (0..255), checked for the units."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{key} must be a finite number of grey levels (0..255), got {value!r}")
    if value < 0 or value > GREY:
        raise ValueError(f"{key}={value!r} is outside 0..255 ({what} is given in grey levels)")
    if 0 < value < 1:
        example = 25 if what == "sigma" else 8
        raise ValueError(
            f"{key}={value!r} looks like [0, 1] units: BasicSR and KAIR options give {what} in "
            f"grey levels 0..255 (write {example}, not {example}/255 = {example / GREY:.3f})"
        )
    return float(value)


def grey_sigma(key: str, value: object, sigma_type: str | None = None) -> SigmaSchedule:
    """The nominal sigma as option files give it, in grey levels, as the sampler's schedule (in
    image units; draws of 0 become ``MIN_SIGMA``). ``sigma_type`` (Restormer's key: constant,
    random in a range, or a choice among values) defaults to constant for a number, else
    random."""
    if sigma_type is None:
        sigma_type = "constant" if isinstance(value, (int, float)) else "random"
    check_choice(f"{key.rsplit('.', 1)[0]}.sigma_type", sigma_type, tuple(SIGMA_TYPES))
    if sigma_type == "constant":
        grey = [grey_level(key, value)]
    elif not isinstance(value, Sequence) or isinstance(value, str) or len(value) < 1:
        raise TypeError(f"{key} must be a list of grey levels for {sigma_type!r}, got {value!r}")
    else:
        grey = [grey_level(f"{key}[{i}]", v) for i, v in enumerate(value)]
    if sigma_type == "random" and (len(grey) != 2 or not grey[0] < grey[1]):
        raise ValueError(f"{key}={list(value)!r} must be a range [low, high] with low < high")
    if max(grey) == 0:
        raise ValueError(f"{key}={value!r}: sigma must be > 0")
    floor = MIN_SIGMA if min(grey) == 0 else 0.0
    return SigmaSchedule(SIGMA_TYPES[sigma_type], tuple(v / GREY for v in grey), floor)


def sampler_from_options(
    block: object, key: str = "ts", sigma: SigmaSchedule | None = None, seed: int = 0
) -> TSSampler:
    """Build the sampler from a ``ts`` options block; errors name ``key`` and the option.

    The block holds :class:`TSConfig` options (``p_ood``, ``families`` with nested blocks such
    as ``{local: {weight: 1, window: 4}}``, ...) plus ``sigma`` (grey levels)
    with ``sigma_type``, and ``seed`` (default ``seed``). Where the framework's own options
    already give sigma (a dataset's ``sigma_range``, read with :func:`grey_sigma`), pass it as
    ``sigma`` and the block must not repeat it. The sampler draws the nominal sigma itself
    (``sampler.config.sigma_schedule``).
    """
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        raise TypeError(f"{key} must be a mapping of TS options, got {type(block).__name__}")
    opts: dict[str, Any] = dict(block)
    for reserved in ("data_range",):
        if reserved in opts:
            raise ValueError(f"{key}.{reserved} is fixed by the framework (images in [0, 1])")
    for model_only in ("recipe", "adversarial", "strength"):
        if model_only in opts:
            raise ValueError(
                f"{key}.{model_only} belongs to the model's ts block (BasicSR model_type TSModel, "
                f"KAIR model ts_plain): a dataset cannot attack the model it feeds"
            )
    if "compile" in opts:
        raise ValueError(
            f"{key}.compile belongs to the model's ts block (BasicSR model_type TSModel, KAIR "
            f"model ts_plain): data loaders draw on the CPU, where the compiled draw is slower"
        )
    if sigma is None:
        if "sigma" not in opts:
            raise ValueError(f"{key}.sigma is required: the nominal sigma in grey levels, e.g. 25")
        sigma = grey_sigma(f"{key}.sigma", opts.pop("sigma"), opts.pop("sigma_type", None))
    elif "sigma" in opts or "sigma_type" in opts:
        raise ValueError(f"{key}.sigma is set by the dataset options here; remove it from {key}")
    seed = check_seed(f"{key}.seed", opts.pop("seed", seed))
    try:
        config = TSConfig.from_dict({**opts, "sigma": sigma})
    except (TypeError, ValueError) as err:
        raise type(err)(f"{key}: {err}") from err
    return TSSampler(config, seed=seed)


def training_from_options(
    block: object, key: str = "ts", seed: int = 0
) -> tuple[TSSampler, Adversarial | None]:
    """A model's ``ts`` block -> sampler and adversarial share (None without one).

    Besides the sampler's options the block takes ``recipe`` (a name of
    ``ts_defense.training.recipes.RECIPES``, default ``"ts"``), ``adversarial`` (the share's
    options, with ``eps`` in grey levels: ``8`` or ``[0, 8]``), ``strength`` (the recipe's knob:
    the top of the budget in grey levels for the HAT family, the pair term's weight for
    ``trades``, ``yan-hat``, ``jacobian``) and ``compile`` (``TSSampler(compile=...)``: the
    draw's arithmetic as one ``torch.compile`` graph, for GPUs).
    """
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        raise TypeError(f"{key} must be a mapping of TS options, got {type(block).__name__}")
    opts = dict(block)
    recipe = opts.pop("recipe", "ts")
    adversarial = opts.pop("adversarial", None)
    if isinstance(adversarial, Mapping) and "eps" in adversarial:
        eps = grey_budget(f"{key}.adversarial.eps", adversarial["eps"])
        adversarial = {**adversarial, "eps": eps}
    strength = opts.pop("strength", None)
    if strength is not None and isinstance(recipe, str) and recipe in RECIPES:
        if RECIPES[recipe][1].knob == "eps":
            strength = grey_level(f"{key}.strength", strength, "eps") / GREY
    compile = opts.pop("compile", False)
    if not isinstance(compile, bool):
        raise TypeError(f"{key}.compile must be true or false, got {shown(compile)}")
    seed = check_seed(f"{key}.seed", opts.pop("seed", seed))
    sampler = sampler_from_options(opts, key, seed=seed)
    try:
        plan = make_recipe(recipe, sampler.config, adversarial, strength)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{key}: {err}") from err
    return TSSampler(plan.config, seed=seed, compile=compile), plan.perturbation(seed)


def grey_budget(key: str, value: object) -> float | tuple[float, float]:
    """An attack budget in grey levels (a number or ``[low, high]``) -> image units."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{key} must be a number or [low, high] in grey levels, got {value!r}")
        return tuple(grey_level(f"{key}[{i}]", v, "eps") / GREY for i, v in enumerate(value))
    return grey_level(key, value, "eps") / GREY


def draw_noisy(sampler: TSSampler, clean: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """TS-noisy ``clean`` with per-sample nominal sigma: ``(noisy, sigma (B,), ood (B,))``."""
    draw = sampler.draw(clean)
    return draw.noisy, draw.sigma, draw.ood


def worker_sampler(cache: dict[int, TSSampler], config: TSConfig) -> TSSampler:
    """The sampler of the current data-loader process, seeded with torch's per-process seed:
    reproducible from the framework's manual seed, distinct across workers and epochs."""
    seed = torch.initial_seed() % 2**63
    if seed not in cache:
        cache[seed] = TSSampler(config, seed=seed)
    return cache[seed]
