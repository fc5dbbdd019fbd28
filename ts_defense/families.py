"""Families of out-of-distribution noise: noise off the Gaussian typical set, for TS training.

Each family is noise whose nominal level is 1; the sampler scales it by each sample's sigma.
Deviations are scale-free, so the statistics below hold at every sigma.

- ``radial``: the typical set of ``N(0, (1 + 2 d) I)`` with ``|d|`` in the band: an isotropic
  direction at the exact radius ``sqrt(N (1 + 2 d))``.
- ``local``: a gain that is constant on ``window x window`` patches; a ``local_fraction`` of the
  windows is set exactly to a deviation in the band, the rest exactly to ``d = 0``.
- ``structured``: correlated noise of the nominal power (``d = 0`` exactly): white noise mixed
  with a smooth field (bilinearly upsampled by ``corr_scale``, shared across channels).

:func:`draw_batch` draws a whole batch without synchronising the host with the device and with
shapes that never depend on the data: one white Gaussian ``g`` for the batch, and every built-in
family is ``gain * g + offset`` with a gain and offset per sample (per window for ``local``),
picked per sample with ``gather`` (``structured`` adds its smooth field, then is rescaled to the
nominal power). Each sample's noise depends only on its own ``g`` and its own family parameters,
so sharing ``g`` leaves every family's law unchanged.

Register more with :func:`register_family`: ``fn(shape, generator, config)`` returns unit-level
float32 noise of ``shape``; it is drawn for the whole batch and selected with ``torch.where``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .sampler import TSConfig

Shape = tuple[int, int, int, int]
FamilyFn = Callable[[Shape, torch.Generator, "TSConfig"], Tensor]

FAMILIES: dict[str, FamilyFn] = {}
BUILTIN = ("radial", "local", "structured")


def register_family(name: str) -> Callable[[FamilyFn], FamilyFn]:
    """Register a noise family under ``name`` (decorator); the name is usable in ``families``."""

    def wrap(fn: FamilyFn) -> FamilyFn:
        if name in FAMILIES or name == "gaussian":
            raise ValueError(f"noise family {name!r} is already registered")
        FAMILIES[name] = fn
        return fn

    return wrap


def _rand(shape: int | tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def band_deviation(shape: int | tuple[int, ...], cfg: TSConfig, gen: torch.Generator) -> Tensor:
    """Deviations uniform in the band ``[eps_in, eps_out]``, on the configured side(s)."""
    lo, hi = cfg.band
    d = _rand(shape, gen).mul_(hi - lo).add_(lo)
    if cfg.sides == "below":
        return d.neg_()
    if cfg.sides == "both":  # the sign from a second uniform: -1 below 1/2, +1 above
        return d.mul_(_rand(shape, gen).ge_(0.5).mul_(2).sub_(1))
    return d


def window_counts(shape: Shape, window: int, device: torch.device) -> Tensor | float:
    """Entries (channels x pixels) per window of the padded grid: (h, w), or one number when
    the windows tile the image."""
    _, c, h, w = shape
    if h % window == 0 and w % window == 0:
        return float(c * window * window)

    def sides(size: int) -> Tensor:  # window, ..., window, remainder (no indexed write: a sync)
        n = -(-size // window)
        last = torch.arange(n, device=device) == n - 1
        return torch.where(last, float(size - window * (n - 1)), float(window))

    return c * sides(h)[:, None] * sides(w)[None, :]


def _linear_gain(scale: int) -> float:
    """Mean variance of linear interpolation of unit iid nodes over one period."""
    return sum((1 - i / scale) ** 2 + (i / scale) ** 2 for i in range(scale)) / scale


def _interpolation(size: int, scale: int, device: torch.device) -> Tensor:
    """(size, nodes) matrix of linear interpolation from nodes on every ``scale``-th pixel."""
    nodes = -(-size // scale) + 1
    eye = torch.eye(nodes, device=device)[None]
    full = F.interpolate(eye, size=(nodes - 1) * scale + 1, mode="linear", align_corners=True)
    return full[0, :, :size].T


# A family's parts: gain and offset per sample or per cell, and a smooth field to add or None.
Parts = tuple[Tensor, Tensor | None, Tensor | None]
TINY = torch.finfo(torch.float32).tiny


class _Base:
    """The shared white noise ``g`` (zero-padded to whole cells) and its per-cell statistics,
    computed when a family asks for them.

    Cells are the ``local`` windows when that family is drawn, else whole images. ``bands``
    views ``g`` as (B, C, cells down, cell height, Wp): reductions and per-cell factors then
    run along whole contiguous rows (much faster on the CPU than along short runs).
    """

    def __init__(self, shape: Shape, gen: torch.Generator, cfg: TSConfig, windows: bool) -> None:
        b, c, h, w = shape
        self.shape, self.n, self.zero_mean = shape, c * h * w, cfg.zero_mean
        g = torch.randn(shape, generator=gen, device=gen.device)
        cell = (cfg.window, cfg.window) if windows else (h, w)
        pad_h, pad_w = (-h) % cell[0], (-w) % cell[1]
        if pad_h or pad_w:
            g = F.pad(g, (0, pad_w, 0, pad_h))
        self.g, self.cell = g, cell
        self.grid = (g.shape[2] // cell[0], g.shape[3] // cell[1])
        self.bands = g.view(b, c, self.grid[0], cell[0], g.shape[3])

    def cell_sum(self, x: Tensor) -> Tensor:
        """Sum of ``x`` (shaped like ``bands``) over each cell, (B, gh, gw)."""
        b, c = self.shape[:2]
        return x.sum(3).view(b, c, self.grid[0], self.grid[1], self.cell[1]).sum((1, 4))

    @cached_property
    def energy(self) -> Tensor:
        """``|g|^2`` per cell, (B, gh, gw)."""
        b, c, hp, wp = self.g.shape  # norms first: no temporary the size of g
        if self.grid == (1, 1):
            return torch.linalg.vector_norm(self.g.flatten(1), dim=1).square_().view(b, 1, 1)
        runs = self.g.view(b, c, hp, self.grid[1], self.cell[1])
        runs = torch.linalg.vector_norm(runs, dim=4).square_()  # (B, C, Hp, gw)
        return runs.view(b, c, self.grid[0], self.cell[0], self.grid[1]).sum((1, 3))

    @cached_property
    def sums(self) -> Tensor:
        """Sum of ``g`` per cell, (B, gh, gw)."""
        return self.cell_sum(self.bands)

    @cached_property
    def mean(self) -> Tensor | None:
        """Sample mean of ``g`` when the noise is zero-mean, else None."""
        return self.sums.sum((1, 2)) / self.n if self.zero_mean else None

    @cached_property
    def centred_power(self) -> Tensor:
        """``|g - mean|^2`` per sample."""
        power = self.energy.sum((1, 2))
        return power if self.mean is None else power - self.n * self.mean.square()

    def cells(self, x: Tensor) -> Tensor:
        """``x`` of shape (B,) or (B, gh, gw) as (B, gh, gw)."""
        b = self.shape[0]
        return (x.view(b, 1, 1) if x.dim() == 1 else x).expand(b, *self.grid)

    def spread(self, x: Tensor) -> Tensor:
        """Per-cell ``x`` (B, gh, gw) broadcastable to ``bands``."""
        if self.grid[1] > 1:
            x = x.repeat_interleave(self.cell[1], 2)
        return x.view(self.shape[0], 1, self.grid[0], 1, -1)

    def about_mean(self, gain: Tensor) -> Parts:
        """Scale ``g`` by ``gain`` about its sample mean when the noise is zero-mean."""
        return gain, None if self.mean is None else -gain * self.mean, None


def _gaussian(base: _Base, gen: torch.Generator, cfg: TSConfig) -> Parts:
    n = base.n
    gain = math.sqrt(n / max(n - 1, 1)) if cfg.zero_mean else 1.0
    return base.about_mean(torch.full((base.shape[0],), gain, device=base.g.device))


def _radial(base: _Base, gen: torch.Generator, cfg: TSConfig) -> Parts:
    d = band_deviation(base.shape[0], cfg, gen)
    ratio = d.mul_(2).add_(1).mul_(base.n).div_(base.centred_power.clamp_min(TINY))
    return base.about_mean(ratio.sqrt_())


def _local(base: _Base, gen: torch.Generator, cfg: TSConfig) -> Parts:
    b, grid = base.shape[0], base.grid
    counts = window_counts(base.shape, cfg.window, base.g.device)
    n_win = grid[0] * grid[1]
    k = max(1, round(cfg.local_fraction * n_win))
    chosen = _rand((b, n_win), gen).topk(k, 1).indices
    d = torch.zeros(b, n_win, device=base.g.device)
    d = d.scatter_(1, chosen, band_deviation((b, k), cfg, gen)).view(b, *grid)
    energy = base.energy
    if cfg.zero_mean:  # zero-mean in every window, hence zero-mean overall
        mean = base.sums / counts
        centred = base.bands - base.spread(mean)
        padding = base.cell[0] * base.cell[1] * base.shape[1] - counts  # entries at -mean
        energy = base.cell_sum(centred.square_()) - padding * mean.square()
    gain = (d.mul_(2).add_(1).mul_(counts) / energy.clamp_min(TINY)).sqrt_()
    return gain, -gain * mean if cfg.zero_mean else None, None


def _structured(base: _Base, gen: torch.Generator, cfg: TSConfig) -> Parts:
    """``sqrt(1 - a) g + smooth``; :func:`draw_batch` then centres it (zero-mean) and scales it
    to the nominal power, from the drawn noise itself."""
    b = base.shape[0]
    s = cfg.corr_scale
    up_h, up_w = (_interpolation(size, s, base.g.device) for size in base.g.shape[2:])
    coarse = torch.randn((b, up_h.shape[1], up_w.shape[1]), generator=gen, device=gen.device)
    lo, hi = cfg.corr_mix
    a = _rand(b, gen).mul_(hi - lo).add_(lo)
    coarse *= (a.sqrt() / _linear_gain(s)).view(b, 1, 1)  # unit power times the smooth share
    smooth = up_h @ coarse @ up_w.T  # (B, Hp, Wp), bilinear; g is zero beyond (h, w)
    zero = torch.zeros(b, device=base.g.device) if cfg.zero_mean else None
    return (1 - a).sqrt_(), zero, smooth


_FUSED = {"gaussian": _gaussian, "radial": _radial, "local": _local, "structured": _structured}


def _pick(family: Tensor, candidates: Sequence[Tensor]) -> Tensor:
    """Per sample ``b``: ``candidates[family[b]][b]`` (each candidate (B, ...))."""
    stacked = torch.stack(candidates)
    index = family.view(1, -1, *[1] * (stacked.dim() - 2)).expand(1, *stacked.shape[1:])
    return stacked.gather(0, index)[0]


def _to_nominal_power(noise: Tensor, picked: Tensor, sig: Tensor, zero_mean: bool) -> Tensor:
    """Centre (if ``zero_mean``) and rescale the ``picked`` samples to power ``N sig^2``."""
    b, n = noise.shape[0], noise[0].numel()
    power = torch.linalg.vector_norm(noise, dim=(1, 2, 3)).square_()
    if zero_mean:
        mean = noise.sum((1, 2, 3)) / n
        power = power - n * mean.square()
        noise.sub_(torch.where(picked, mean, 0.0).view(b, 1, 1, 1))
    scale = (n * sig.square() / power.clamp_min(TINY)).sqrt_()
    return noise.mul_(torch.where(picked, scale, 1.0).view(b, 1, 1, 1))


def draw_batch(
    shape: Shape,
    gen: torch.Generator,
    cfg: TSConfig,
    family: Tensor,
    names: Sequence[str | None],
    sigma: Tensor | None = None,
) -> Tensor:
    """Noise (B, C, H, W) float32: sample ``b`` from family ``names[family[b]]`` at level
    ``sigma[b]`` (default 1). ``names[0]`` is ``"gaussian"``; ``None`` marks a family never
    picked (weight 0): it is not drawn."""
    b, c, h, w = shape
    sig = torch.ones(b, device=gen.device) if sigma is None else sigma
    if tuple(names) == ("gaussian",) and not cfg.zero_mean:  # scale g in place
        return torch.randn(shape, generator=gen, device=gen.device).mul_(sig.view(b, 1, 1, 1))
    base = _Base(shape, gen, cfg, windows="local" in names)
    parts = {k: _FUSED[nm](base, gen, cfg) for k, nm in enumerate(names) if nm in _FUSED}
    slots = [parts.get(k, parts[0]) for k in range(len(names))]
    per_cell = sig.view(b, 1, 1)
    base.bands.mul_(base.spread(_pick(family, [base.cells(p[0]) for p in slots]) * per_cell))
    if cfg.zero_mean:  # then every family has an offset
        base.bands.add_(base.spread(_pick(family, [base.cells(p[1]) for p in slots]) * per_cell))
    noise = base.g[..., :h, :w]
    for k, (_, _, smooth) in parts.items():
        if smooth is not None:  # ``structured``: add its smooth field where picked
            picked = family == k
            coef = torch.where(picked, sig, 0.0).view(b, 1, 1, 1)
            noise.addcmul_(smooth[:, None, :h, :w], coef)
            noise = _to_nominal_power(noise, picked, sig, cfg.zero_mean)
    for k, name in enumerate(names):  # registered families: whole batch, then torch.where
        if name is not None and name not in _FUSED:
            drawn = FAMILIES[name](shape, gen, cfg).float() * sig.view(b, 1, 1, 1)
            noise = torch.where((family == k).view(b, 1, 1, 1), drawn, noise)
    return noise


def _only(name: str) -> FamilyFn:
    def fn(shape: Shape, gen: torch.Generator, cfg: TSConfig) -> Tensor:
        one = torch.ones(shape[0], dtype=torch.long, device=gen.device)
        return draw_batch(shape, gen, cfg, one, ("gaussian", name))

    fn.__name__ = name
    fn.__doc__ = f"Unit-level ``{name}`` noise for every sample of ``shape``."
    return fn


for _name in BUILTIN:
    FAMILIES[_name] = _only(_name)
