"""The TS sampler: training noise from the Gaussian typical set and from nearby typical sets.

Per sample, a coin with probability ``p_ood`` chooses out-of-distribution noise; its family is
drawn with the ``families`` weights. The model is always told the *nominal* sigma.

>>> sampler = TSSampler(TSConfig(sigma=25 / 255, p_ood=0.5), seed=0)
>>> draw = sampler.draw(clean)          # clean: (B, C, H, W) in [0, 1]
>>> loss = mse(model(draw.noisy), clean)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from .._checks import (
    check_float32,
    check_images,
    check_interval,
    check_positive,
    check_probability,
    check_seed,
    is_finite_number,
    shown,
)
from .._io import plain
from ..seeding import stream_seed
from . import typical
from .families import FAMILIES, GAUSSIAN, MAX_DEVIATION, MAX_WINDOW, SIDES, DrawPipeline, Families
from .sigma import SigmaSchedule

__all__ = ["MAX_DEVIATION", "MAX_WINDOW", "SIDES", "TSConfig", "TSDraw", "TSSampler"]


@dataclass(frozen=True, init=False)
class TSConfig:
    """What the sampler draws. Sigma is in the units of the images (``data_range``).

    sigma: nominal noise level: a number, ``(low, high)`` for blind training (uniform per
        sample), or a :class:`~ts_defense.noise.sigma.SigmaSchedule` (e.g. a choice among values).
    p_ood: probability that a sample gets out-of-distribution noise.
    families: weights of the out-of-distribution families, keyed by registered name (its
        registered parameters) or by family object (:class:`~.families.Radial`,
        :class:`~.families.Local`, :class:`~.families.Structured`, ... with their own
        parameters). A value may be a nested block ``{"weight": w, <parameter>: v}``: the
        families' parameters (``band``, ``window``, ...) are given there only.
        Read back as a mapping name -> weight; ``families.family(name)`` is the family object.
    zero_mean: draw zero-mean noise (each sample's noise sums to zero).
    clip: clamp the noisy image to this range, or None (default: no clipping).
    data_range: the range of the images (sigma at most this).
    """

    sigma: float | tuple[float, float] | SigmaSchedule
    p_ood: float
    families: Families
    zero_mean: bool
    clip: tuple[float, float] | None
    data_range: float

    def __init__(
        self,
        sigma: float | tuple[float, float] | SigmaSchedule = 25 / 255,
        p_ood: float = 0.2,
        families: Mapping[Any, Any] | None = None,
        zero_mean: bool = False,
        clip: tuple[float, float] | None = None,
        data_range: float = 1.0,
    ) -> None:
        if families is None:
            families = {"radial": 1.0, "local": 1.0, "structured": 1.0}
        check_float32("data_range", check_positive("data_range", data_range))
        schedule = SigmaSchedule.parse(sigma)
        if schedule.top > data_range:
            raise ValueError(
                f"sigma={schedule.top} exceeds data_range={data_range}: give sigma in image "
                f"units (25/255 for images in [0, 1])"
            )
        if not is_finite_number(sigma):  # a pair or a schedule: stored as simply as it goes
            sigma = schedule if schedule.plain is None else schedule.plain
        check_probability("p_ood", p_ood)
        fams = Families.parse(families)
        if p_ood > 0 and not any(w > 0 for w in fams.values()):
            raise ValueError(f"p_ood={p_ood} > 0 needs a family with weight > 0: {dict(fams)!r}")
        if not isinstance(zero_mean, bool):
            raise TypeError(f"zero_mean must be a bool, got {zero_mean!r}")
        if clip is not None:
            clip = check_interval("clip", clip, low=-math.inf)
            check_float32("clip", max(map(abs, clip)), low=0.0)
        values = (sigma, p_ood, fams, zero_mean, clip, data_range)
        for f, value in zip(dataclasses.fields(self), values, strict=True):
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> TSConfig:
        """Build from an options mapping (YAML/JSON), e.g. what :meth:`to_dict` wrote. Unknown
        keys are rejected by name, nested ones included; a family's parameter at the top level
        is told where it goes."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known, key=str)
        if unknown:
            raise ValueError(
                f"unknown TS option(s) {', '.join(map(repr, unknown))}; known: {sorted(known)}"
                + "".join(map(_where_it_goes, unknown))
            )
        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        return cls(**opts)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested types that :meth:`from_dict` reads back: ``{"sigma": 0.098 | (low,
        high) | {"kind": ..., "values": [...], "floor": ...}, "p_ood": ..., "families":
        {name: {"weight": w, <parameter>: value}}, "zero_mean": ..., "clip": ...,
        "data_range": ...}``."""
        sigma = self.sigma.to_dict() if isinstance(self.sigma, SigmaSchedule) else self.sigma
        return {
            "sigma": sigma,
            "p_ood": self.p_ood,
            "families": self.families.to_dict(),
            "zero_mean": self.zero_mean,
            "clip": self.clip,
            "data_range": self.data_range,
        }

    @cached_property
    def sigma_schedule(self) -> SigmaSchedule:
        """``sigma`` as a :class:`~.sigma.SigmaSchedule` (what the sampler draws)."""
        return SigmaSchedule.parse(self.sigma)

    @property
    def family_names(self) -> tuple[str, ...]:
        """Index 0 is ``"gaussian"`` (in-distribution); 1.. are the OOD families in order."""
        return ("gaussian", *self.families)

    def only(self, name: str) -> TSConfig:
        """This configuration drawing family ``name`` alone, with its parameters, for every
        sample (``"gaussian"``: in-distribution noise only)."""
        if name == "gaussian":
            return dataclasses.replace(self, p_ood=0.0)
        alone = Families({name: 1.0}, {name: self.families.family(name)})
        return dataclasses.replace(self, p_ood=1.0, families=alone)


def _where_it_goes(key: object) -> str:
    """For a top-level key that is a family's parameter (``band``; ``local_fraction`` for
    ``Local.fraction``): which families take it and how, else nothing."""
    owners = [
        (name, option)
        for name, family in FAMILIES.items()
        for option in family.options()
        if key in (option, f"{name}_{option}")
    ]
    if not owners:
        return ""
    name, option = owners[0]
    example = {"families": {name: {option: FAMILIES[name].to_dict()[option]}}}
    where = ", ".join(f"families.{n}" for n, _ in owners)
    return f"; give {key!r} under {where}, e.g. {example}"


def _choose(
    schedule: SigmaSchedule,
    batch: int,
    device: torch.device,
    sig_random: Tensor | None,
    sig: Tensor | None,
    u: Tensor | None,
    edges: Tensor | None,
    lookup: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Nominal sigma and family per sample from the draw's random tensors (``sig`` given
    overrides the schedule): the sampler's part of the pure draw."""
    if sig is None:
        sig = schedule.from_random(sig_random, batch, device)
    if u is None or edges is None or lookup is None:  # Gaussian noise only
        family = torch.zeros(batch, dtype=torch.long, device=device)
    else:  # u < p_ood splits by the weights; u >= p_ood falls in the last bucket: Gaussian
        family = lookup.index_select(0, torch.bucketize(u, edges, right=True))
    return sig, family


@dataclass
class TSDraw:
    """One batch drawn by :class:`TSSampler`.

    noisy: ``clean + noise`` (clipped if configured), in the dtype of ``clean``.
    noise: the drawn noise, float32 (before clipping).
    sigma: nominal sigma per sample, (B,) float32 — what the model is told.
    family: family index per sample, (B,) int64; 0 is Gaussian, see ``family_names``.
    """

    noisy: Tensor
    noise: Tensor
    sigma: Tensor
    family: Tensor
    family_names: tuple[str, ...]

    @property
    def ood(self) -> Tensor:
        """Which samples got out-of-distribution noise, (B,) bool."""
        return self.family > 0

    @property
    def sigma_map(self) -> Tensor:
        """Nominal noise-level map (B, 1, H, W) for FFDNet/DRUNet-style models."""
        b, _, h, w = self.noise.shape
        return self.sigma.view(b, 1, 1, 1).expand(b, 1, h, w)

    @cached_property
    def deviation(self) -> Tensor:
        """Deviation of each sample's noise from the nominal-sigma entropy rate, (B,).

        Same as ``typical.deviation(noise, sigma)`` without its checks (no host sync)."""
        return typical.sample_deviation(self.noise, self.sigma)


class TSSampler:
    """Draws TS training noise for batches of clean images; reproducible from ``seed``.

    One ``torch.Generator`` per device, seeded from ``seed`` (its ``"noise"`` stream);
    :meth:`state_dict` and :meth:`load_state_dict` save and restore it so a resumed run
    continues the same stream. A draw never waits for the device (no host synchronisation)
    unless it checks ``clean`` for NaN/Inf (``check_finite``, on by default).

    ``compile=True`` draws the random tensors eagerly (the same stream) and runs the rest of
    the draw as one ``torch.compile`` graph, compiled once per batch shape: fewer kernel
    launches on a GPU, the eager draw's noise to float32 rounding; slower on the CPU.
    """

    def __init__(
        self,
        config: TSConfig | None = None,
        seed: int = 0,
        *,
        compile: bool = False,
        **options: Any,
    ) -> None:
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False, got {shown(compile)}")
        if config is not None and options:
            raise TypeError("pass either a TSConfig or keyword options, not both")
        if config is not None and not isinstance(config, TSConfig):
            raise TypeError(
                f"config must be a TSConfig, got {type(config).__name__} (options go by keyword)"
            )
        self.config = config if config is not None else TSConfig.from_dict(options)
        self.seed = check_seed("seed", seed)
        self._generators: dict[str, torch.Generator] = {}
        self._pending: dict[str, Tensor] = {}
        self._edges: dict[str, Tensor] = {}
        self._lookup: dict[str, Tensor] = {}
        cfg = self.config
        # Families drawn: only Gaussian when p_ood is 0; never a family of weight 0.
        fams = cfg.families if cfg.p_ood > 0 else {}
        slots = (GAUSSIAN, *(fams.family(k) if w > 0 else None for k, w in fams.items()))
        choose = functools.partial(_choose, cfg.sigma_schedule)
        self._pipeline = DrawPipeline(slots, cfg.zero_mean, choose, compile)

    @property
    def compile(self) -> bool:
        """Whether the draw's arithmetic runs as one ``torch.compile`` graph."""
        return self._pipeline.compile

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The generator used for draws on ``device`` (created and seeded on first use)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if key not in self._generators:
            try:
                gen = torch.Generator(device=device)
            except RuntimeError as err:  # e.g. "meta": torch draws no random numbers there
                raise ValueError(f"the sampler cannot draw on device {key!r}: {err}") from err
            gen.manual_seed(stream_seed(self.seed, "noise"))
            if key in self._pending:
                gen.set_state(self._pending.pop(key))
            self._generators[key] = gen
        return self._generators[key]

    def _sigma_override(self, sigma: Tensor | float, clean: Tensor) -> Tensor:
        """The ``sigma`` given to :meth:`draw` as float32, checked to lie in
        ``(0, data_range]`` as the configured sigma does (so the noise stays finite)."""
        top = self.config.data_range
        if not isinstance(sigma, Tensor):
            check_float32("sigma", check_positive("sigma", sigma), high=top)
        sig = typical.sigma_tensor(sigma, clean)  # finite and > 0 in float32
        if isinstance(sigma, Tensor) and not bool((sig <= top).all()):
            raise ValueError(f"sigma exceeds data_range={top:g}: give sigma in image units")
        return sig

    def _tables(self, device: torch.device) -> tuple[Tensor | None, Tensor | None]:
        """The cumulative family weights times ``p_ood`` and the bucket -> family table, built
        once per device (None with Gaussian noise only)."""
        if len(self._pipeline.families) == 1:
            return None, None
        key = str(device)
        if key not in self._edges:  # cumulative weights times p_ood; filled, not copied
            weights = list(self.config.families.values())
            edges = torch.empty(len(weights), device=device)
            for i, cum in enumerate(itertools.accumulate(weights)):
                edges[i] = self.config.p_ood * cum / sum(weights)
            self._edges[key] = edges
        if key not in self._lookup:  # bucket -> family: (bucket + 1) % len(slots), as a table
            k = len(self._pipeline.families)
            self._lookup[key] = torch.arange(1, k + 1, device=device).remainder_(k)
        return self._edges[key], self._lookup[key]

    def draw(
        self, clean: Tensor, sigma: Tensor | float | None = None, check_finite: bool = True
    ) -> TSDraw:
        """Draw noise for ``clean`` (B, C, H, W) and return the noisy batch with its record.

        ``sigma`` overrides the configured nominal sigma (a number or a (B,) vector).
        ``check_finite=False`` skips the NaN/Inf check of ``clean``, the one step that waits for
        the device: the draw then never synchronises (with the configured sigma).
        """
        check_images(clean, "clean", finite=check_finite, data_range=self.config.data_range)
        cfg = self.config
        shape = tuple(clean.shape)
        gen = self.generator(clean.device)
        b = shape[0]
        sig, sig_random = None, None
        if sigma is None:
            sig_random = cfg.sigma_schedule.draw_random(b, gen)
        else:
            sig = self._sigma_override(sigma, clean)
            if sig.numel() not in (1, b):
                raise ValueError(
                    f"sigma must be a number or a ({b},) vector, got {tuple(sig.shape)}"
                )
            sig = sig.reshape(-1).expand(b).contiguous()
        edges, lookup = self._tables(gen.device)
        u = None if edges is None else torch.rand(b, generator=gen, device=gen.device)
        chosen = (sig_random, sig, u, edges, lookup)
        sig, family, noise = self._pipeline(shape, gen, chosen)
        noisy = clean.float() + noise if clean.dtype != torch.float32 else clean + noise
        if cfg.clip is not None:
            noisy = noisy.clamp_(*cfg.clip)
        return TSDraw(noisy.to(clean.dtype), noise, sig, family, cfg.family_names)

    def state_dict(self) -> dict[str, Any]:
        """Seed, generator states (per device) and configuration, in plain types."""
        states = {k: g.get_state() for k, g in self._generators.items()}
        states.update({k: v for k, v in self._pending.items() if k not in states})
        return {
            "seed": self.seed,
            "generators": states,
            "config": plain(self.config.to_dict(), "config"),
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore the random state saved by :meth:`state_dict`; everything is checked first.

        strict: refuse (``ValueError``) a state saved under another :class:`TSConfig`;
        ``strict=False`` continues the saved stream under this sampler's configuration.
        """
        if not isinstance(state, Mapping) or "generators" not in state or "seed" not in state:
            raise ValueError("state must come from TSSampler.state_dict() (keys seed, generators)")
        gens = state["generators"]
        if not isinstance(gens, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Tensor) and v.dtype == torch.uint8
            for k, v in gens.items()
        ):
            raise ValueError("state['generators'] must map device names to uint8 generator states")
        for key, value in gens.items():
            _check_generator_state(key, value)
        seed = check_seed("state['seed']", state["seed"])
        if strict and state.get("config") is not None:
            self._check_same_config(state["config"])
        self.seed = seed
        self._generators.clear()
        self._pending = {k: v.cpu() for k, v in gens.items()}

    def _check_same_config(self, saved: object) -> None:
        if not isinstance(saved, Mapping):
            raise ValueError(f"state['config'] must be a mapping of TS options, got {saved!r}")
        try:
            other = TSConfig.from_dict(saved)
        except (ValueError, TypeError) as err:
            raise ValueError(f"state['config']: {err}") from err
        changed = [
            f"{f.name}={getattr(other, f.name)!r} there, {getattr(self.config, f.name)!r} here"
            for f in dataclasses.fields(TSConfig)
            if getattr(other, f.name) != getattr(self.config, f.name)
        ]
        if changed:
            raise ValueError(
                f"state was saved under another TS configuration ({'; '.join(changed)}); "
                f"pass strict=False to continue its stream under this one"
            )


def _check_generator_state(device: str, value: Tensor) -> None:
    """Refuse a generator state that ``device``'s generator would not take (where it exists)."""
    try:
        where = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"state['generators'] names no device: {device!r}") from err
    try:
        gen = torch.Generator(device=where)
    except RuntimeError:
        return  # a device this machine lacks (a GPU checkpoint resumed on the CPU): unused here
    try:
        gen.set_state(value.cpu())
    except RuntimeError as err:
        raise ValueError(
            f"state['generators'][{device!r}] is not a {device} generator state "
            f"({value.numel()} bytes)"
        ) from err
