"""The TS sampler: training noise from the Gaussian typical set and from nearby typical sets.

Per sample, a coin with probability ``p_ood`` chooses out-of-distribution noise; its family is
drawn with the ``families`` weights. The model is always told the *nominal* sigma.

>>> sampler = TSSampler(TSConfig(sigma=25 / 255, p_ood=0.5), seed=0)
>>> draw = sampler.draw(clean)          # clean: (B, C, H, W) in [0, 1]
>>> loss = mse(model(draw.noisy), clean)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from . import typical
from ._checks import (
    check_choice,
    check_float32,
    check_images,
    check_interval,
    check_positive,
    check_probability,
    check_seed,
    is_finite_number,
    shown,
)
from ._io import plain
from .families import FAMILIES, draw_batch
from .seeding import stream_seed

SIDES = ("both", "above", "below")
# A deviation d scales the noise power by 1 + 2 d: beyond 1e6 it is no longer "near" the typical
# set, and |n|^2 of any image stays far inside float32.
MAX_DEVIATION = 1e6
MAX_WINDOW = 4096  # window and corr_scale, in pixels


@dataclass(frozen=True)
class TSConfig:
    """What the sampler draws. Sigma is in the units of the images (``data_range``).

    sigma: nominal noise level, or ``(low, high)`` for blind training (uniform per sample).
    p_ood: probability that a sample gets out-of-distribution noise.
    families: weights of the out-of-distribution families (names in ``FAMILIES``).
    band: ``(eps_in, eps_out)``, the deviation band just outside the eps_in-typical set.
    sides: ``"both"``, ``"above"`` (more power than nominal) or ``"below"`` (less).
    window, local_fraction: window size and share of atypical windows of ``local``.
    corr_scale, corr_mix: correlation length (pixels) and smooth share range of ``structured``.
    zero_mean: draw zero-mean noise (each sample's noise sums to zero).
    clip: clamp the noisy image to this range, or None (default: no clipping).
    """

    sigma: float | tuple[float, float] = 25 / 255
    p_ood: float = 0.2
    families: Mapping[str, float] = field(
        default_factory=lambda: {"radial": 1.0, "local": 1.0, "structured": 1.0}
    )
    band: tuple[float, float] = (0.05, 0.35)
    sides: str = "both"
    window: int = 8
    local_fraction: float = 0.25
    corr_scale: int = 4
    corr_mix: tuple[float, float] = (0.3, 0.9)
    zero_mean: bool = False
    clip: tuple[float, float] | None = None
    data_range: float = 1.0

    def __post_init__(self) -> None:
        check_float32("data_range", check_positive("data_range", self.data_range))
        if isinstance(self.sigma, (int, float)) and not isinstance(self.sigma, bool):
            low = top = check_positive("sigma", self.sigma)
        else:
            object.__setattr__(self, "sigma", check_interval("sigma", self.sigma))
            low, top = self.sigma
        check_float32("sigma", low)  # smaller sigmas round to 0 in float32
        if top > self.data_range:
            raise ValueError(
                f"sigma={top} exceeds data_range={self.data_range}: give sigma in image units "
                f"(25/255 for images in [0, 1])"
            )
        check_probability("p_ood", self.p_ood)
        if not isinstance(self.families, Mapping):
            raise TypeError(f"families must map family names to weights, got {self.families!r}")
        fams = dict(self.families)
        for name, weight in fams.items():
            if name not in FAMILIES:
                known = ", ".join(sorted(FAMILIES))
                raise ValueError(f"unknown noise family {name!r} in families; known: {known}")
            if not is_finite_number(weight) or weight < 0:
                raise ValueError(
                    f"families[{name!r}] must be a finite weight >= 0, got {shown(weight)}"
                )
        check_float32("sum(families.values())", sum(fams.values()), low=0.0)
        if self.p_ood > 0 and not any(w > 0 for w in fams.values()):
            raise ValueError(f"p_ood={self.p_ood} > 0 needs a family with weight > 0: {fams!r}")
        object.__setattr__(self, "families", fams)
        object.__setattr__(self, "band", check_interval("band", self.band))
        check_float32("band[1]", self.band[1], high=MAX_DEVIATION)
        check_choice("sides", self.sides, SIDES)
        if self.sides != "above" and self.band[1] >= 0.5:
            raise ValueError(
                f"band={self.band}: deviations below the typical set need eps_out < 0.5 "
                f"(|n|^2 >= 0 bounds d >= -1/2); use sides='above' for wider bands"
            )
        check_positive("window", self.window, integer=True, maximum=MAX_WINDOW)
        check_probability("local_fraction", self.local_fraction)
        check_positive("corr_scale", self.corr_scale, integer=True, maximum=MAX_WINDOW)
        mix = check_interval("corr_mix", self.corr_mix, low=-1e-12)
        if mix[1] > 1:
            raise ValueError(f"corr_mix={self.corr_mix} must lie in [0, 1]")
        object.__setattr__(self, "corr_mix", mix)
        if not isinstance(self.zero_mean, bool):
            raise TypeError(f"zero_mean must be a bool, got {self.zero_mean!r}")
        if self.clip is not None:
            clip = check_interval("clip", self.clip, low=-math.inf)
            check_float32("clip", max(map(abs, clip)), low=0.0)
            object.__setattr__(self, "clip", clip)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> TSConfig:
        """Build from an options mapping (YAML/JSON); unknown keys are rejected by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown TS option(s) {', '.join(map(repr, unknown))}; known: {sorted(known)}"
            )
        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        return cls(**opts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def family_names(self) -> tuple[str, ...]:
        """Index 0 is ``"gaussian"`` (in-distribution); 1.. are the OOD families in order."""
        return ("gaussian", *self.families)


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
    """

    def __init__(self, config: TSConfig | None = None, seed: int = 0, **options: Any) -> None:
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
        cfg = self.config
        # Families drawn: only Gaussian when p_ood is 0; never a family of weight 0.
        fams = cfg.families if cfg.p_ood > 0 else {}
        self._names = ("gaussian", *(k if w > 0 else None for k, w in fams.items()))

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The generator used for draws on ``device`` (created and seeded on first use)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if key not in self._generators:
            gen = torch.Generator(device=device)
            gen.manual_seed(stream_seed(self.seed, "noise"))
            if key in self._pending:
                gen.set_state(self._pending.pop(key))
            self._generators[key] = gen
        return self._generators[key]

    def draw_sigma(self, batch: int, gen: torch.Generator) -> Tensor:
        """Nominal sigma per sample: fixed, or uniform in the ``(low, high)`` range."""
        sigma = self.config.sigma
        if isinstance(sigma, tuple):
            lo, hi = sigma
            return lo + (hi - lo) * torch.rand(batch, generator=gen, device=gen.device)
        return torch.full((batch,), float(sigma), device=gen.device)

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

    def draw_family(self, batch: int, gen: torch.Generator) -> Tensor:
        """Family index per sample: one uniform ``u``; ``u < p_ood`` splits by the weights."""
        if len(self._names) == 1:
            return torch.zeros(batch, dtype=torch.long, device=gen.device)
        key = str(gen.device)
        if key not in self._edges:  # cumulative weights times p_ood; filled, not copied
            weights = list(self.config.families.values())
            edges = torch.empty(len(weights), device=gen.device)
            for i, cum in enumerate(itertools.accumulate(weights)):
                edges[i] = self.config.p_ood * cum / sum(weights)
            self._edges[key] = edges
        u = torch.rand(batch, generator=gen, device=gen.device)
        pos = torch.bucketize(u, self._edges[key], right=True)  # len(edges) when u >= p_ood
        return pos.add_(1).remainder_(len(self._names))

    def draw(
        self, clean: Tensor, sigma: Tensor | float | None = None, check_finite: bool = True
    ) -> TSDraw:
        """Draw noise for ``clean`` (B, C, H, W) and return the noisy batch with its record.

        ``sigma`` overrides the configured nominal sigma (a number or a (B,) vector).
        ``check_finite=False`` skips the NaN/Inf check of ``clean``, the one step that waits for
        the device: the draw then never synchronises (with the configured sigma).
        """
        check_images(clean, "clean", finite=check_finite)
        cfg = self.config
        shape = tuple(clean.shape)
        gen = self.generator(clean.device)
        b = shape[0]
        if sigma is None:
            sig = self.draw_sigma(b, gen)
        else:
            sig = self._sigma_override(sigma, clean)
            if sig.numel() not in (1, b):
                raise ValueError(
                    f"sigma must be a number or a ({b},) vector, got {tuple(sig.shape)}"
                )
            sig = sig.reshape(-1).expand(b).contiguous()
        family = self.draw_family(b, gen)
        noise = draw_batch(shape, gen, cfg, family, self._names, sig)
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
