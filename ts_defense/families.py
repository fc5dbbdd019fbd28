"""Families of out-of-distribution noise (DESIGN.md §3), drawn at unit sigma.

Each family maps ``(shape, generator, config)`` to float32 noise of that shape whose nominal
level is 1; the sampler scales it by each sample's sigma. Deviations are scale-free, so the
statistics below hold at every sigma.

- ``radial``: the typical set of ``N(0, (1 + 2 d) I)`` with ``|d|`` in the band: an isotropic
  direction at the exact radius ``sqrt(N (1 + 2 d))``.
- ``local``: a gain that is constant on ``window x window`` patches; a ``local_fraction`` of the
  windows is set exactly to a deviation in the band, the rest exactly to ``d = 0``.
- ``structured``: correlated noise of the nominal power (``d = 0`` exactly): white noise mixed
  with a smooth field (bilinearly upsampled by ``corr_scale``, shared across channels).

Register more with :func:`register_family`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .sampler import TSConfig

FamilyFn = Callable[[tuple[int, int, int, int], torch.Generator, "TSConfig"], Tensor]

FAMILIES: dict[str, FamilyFn] = {}


def register_family(name: str) -> Callable[[FamilyFn], FamilyFn]:
    """Register a noise family under ``name`` (decorator); the name is usable in ``families``."""

    def wrap(fn: FamilyFn) -> FamilyFn:
        if name in FAMILIES or name == "gaussian":
            raise ValueError(f"noise family {name!r} is already registered")
        FAMILIES[name] = fn
        return fn

    return wrap


def _randn(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float32)


def band_deviation(n: int, cfg: TSConfig, gen: torch.Generator) -> Tensor:
    """``n`` deviations uniform in the band ``[eps_in, eps_out]``, on the configured side(s)."""
    lo, hi = cfg.band
    d = lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device)
    if cfg.sides == "below":
        return -d
    if cfg.sides == "both":
        sign = torch.rand(n, generator=gen, device=gen.device) < 0.5
        return torch.where(sign, -d, d)
    return d


def _to_radius(g: Tensor, radius: Tensor) -> Tensor:
    """Scale each sample of ``g`` to the L2 norm ``radius`` (B,)."""
    norm = g.flatten(1).norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
    return g.mul_((radius / norm).view(-1, 1, 1, 1))


def gaussian(shape: tuple[int, int, int, int], gen: torch.Generator, cfg: TSConfig) -> Tensor:
    """In-distribution draws: ``N(0, I)``; zero-mean if asked, rescaled to keep unit power."""
    g = _randn(shape, gen)
    if cfg.zero_mean:
        n_dims = math.prod(shape[1:])
        g = (g - g.mean((1, 2, 3), keepdim=True)).mul_(math.sqrt(n_dims / max(n_dims - 1, 1)))
    return g


@register_family("radial")
def radial(shape: tuple[int, int, int, int], gen: torch.Generator, cfg: TSConfig) -> Tensor:
    g = _randn(shape, gen)
    if cfg.zero_mean:
        g = g - g.mean((1, 2, 3), keepdim=True)
    d = band_deviation(shape[0], cfg, gen)
    return _to_radius(g, torch.sqrt(math.prod(shape[1:]) * (1 + 2 * d)))


def window_counts(shape: tuple[int, int, int, int], window: int, device: torch.device) -> Tensor:
    """Number of entries (channels x pixels) in each window of the padded grid, (1, 1, h, w)."""
    _, c, h, w = shape
    rows = torch.full((-(-h // window),), float(window), device=device)
    cols = torch.full((-(-w // window),), float(window), device=device)
    rows[-1] = h - window * (rows.numel() - 1)
    cols[-1] = w - window * (cols.numel() - 1)
    return (c * rows[:, None] * cols[None, :])[None, None]


def _tiles(x: Tensor, window: int) -> Tensor:
    """View (B, C, H, W) as (B, C, h, window, w, window) tiles, zero-padding the far border."""
    b, c, h, w = x.shape
    ph, pw = (-h) % window, (-w) % window
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x.view(b, c, (h + ph) // window, window, (w + pw) // window, window)


@register_family("local")
def local(shape: tuple[int, int, int, int], gen: torch.Generator, cfg: TSConfig) -> Tensor:
    b, c, h, w = shape
    win = cfg.window
    tiles = _tiles(_randn(shape, gen), win)  # no copy when the windows tile the image
    grid = (tiles.shape[2], tiles.shape[4])
    counts = window_counts(shape, win, tiles.device).view(1, 1, grid[0], 1, grid[1], 1)
    if cfg.zero_mean:  # zero-mean in every window, hence zero-mean overall
        tiles -= tiles.sum((1, 3, 5), keepdim=True) / counts
        if tiles.shape[2] * win != h or tiles.shape[4] * win != w:  # keep the padding zero
            tiles.view(b, c, grid[0] * win, grid[1] * win)[..., h:, :] = 0
            tiles.view(b, c, grid[0] * win, grid[1] * win)[..., :, w:] = 0
    full = tiles.view(b, c, grid[0] * win, grid[1] * win)
    energy = F.avg_pool2d(full.square().sum(1, keepdim=True), win) * (win * win)
    energy = energy.view(b, 1, grid[0], 1, grid[1], 1)
    n_win = grid[0] * grid[1]
    k = max(1, round(cfg.local_fraction * n_win))
    chosen = torch.rand(b, n_win, generator=gen, device=gen.device).topk(k, 1).indices
    d = torch.zeros(b, n_win, device=gen.device)
    d.scatter_(1, chosen, band_deviation(b * k, cfg, gen).view(b, k))
    d = d.view(b, 1, grid[0], 1, grid[1], 1)
    tiles *= torch.sqrt(counts * (1 + 2 * d) / energy.clamp_min(torch.finfo(tiles.dtype).tiny))
    return full[..., :h, :w]


def _upsample_linear(x: Tensor, scale: int, dim: int, size: int) -> Tensor:
    """Linear interpolation by an integer ``scale`` along ``dim`` (nodes every ``scale``)."""
    t = torch.arange(scale, device=x.device, dtype=x.dtype) / scale
    lo, hi = x.narrow(dim, 0, x.shape[dim] - 1), x.narrow(dim, 1, x.shape[dim] - 1)
    shape = [1] * (x.dim() + 1)
    shape[dim + 1] = scale
    t = t.view(shape)
    out = torch.lerp(lo.unsqueeze(dim + 1), hi.unsqueeze(dim + 1), t)
    return out.flatten(dim, dim + 1).narrow(dim, 0, size)


def _linear_gain(scale: int) -> float:
    """Mean variance of linear interpolation of unit iid nodes over one period."""
    t = torch.arange(scale, dtype=torch.float64) / scale
    return float(((1 - t) ** 2 + t**2).mean())


@register_family("structured")
def structured(shape: tuple[int, int, int, int], gen: torch.Generator, cfg: TSConfig) -> Tensor:
    b, c, h, w = shape
    s = cfg.corr_scale
    white = _randn(shape, gen)
    coarse = _randn((b, 1, -(-h // s) + 1, -(-w // s) + 1), gen)
    lo, hi = cfg.corr_mix
    a = (lo + (hi - lo) * torch.rand(b, generator=gen, device=gen.device)).view(b, 1, 1, 1)
    coarse *= torch.sqrt(a) / _linear_gain(s)  # unit power on average, times the smooth share
    smooth = _upsample_linear(_upsample_linear(coarse, s, 2, h), s, 3, w)
    g = white.mul_(torch.sqrt(1 - a)).add_(smooth)
    if cfg.zero_mean:
        g = g - g.mean((1, 2, 3), keepdim=True)
    n_dims = c * h * w
    return _to_radius(g, torch.full((b,), math.sqrt(n_dims), device=g.device))
