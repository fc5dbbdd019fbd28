"""The arithmetic of the fused batch draw (:class:`ts_defense.noise.families.DrawPipeline`).

Every built-in family is ``gain * g + offset`` on one white Gaussian ``g`` shared by the batch,
with a gain and an offset per sample (per window for ``local``). :class:`SharedNoise` holds
``g`` and the per-cell statistics the families ask for; each family returns its
:class:`Parts` (the power its noise should have, the power of ``g``), :func:`picked_gain`
picks each sample's parts and takes one square root for the batch. The helpers keep the op
count low (each op is a kernel launch on a GPU): constants are cached per device and
deviations come from uniforms in few ops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

Shape = tuple[int, int, int, int]


def cached(maxsize: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``functools.lru_cache`` for eager draws; under ``torch.compile`` the function itself,
    traced into the graph (dynamo would ignore the cache anyway, with a warning)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        memo = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args: Any) -> Any:
            return fn(*args) if torch.compiler.is_compiling() else memo(*args)

        call.cache_info = memo.cache_info  # type: ignore[attr-defined]
        return call

    return wrap


def rand(shape: int | tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def uniforms(family: Any) -> int:
    """How many uniforms per deviation :func:`power_factor` takes (2 with a random sign)."""
    return 2 if family.sides == "both" else 1


def power_factor(u: Tensor, family: Any) -> Tensor:
    """``1 + 2 d`` for deviations ``d`` uniform in ``family.band`` on ``family.sides``, from
    uniforms ``u`` (``uniforms(family)`` rows: magnitudes, then signs: minus below 1/2) in few
    ops: the factor 2 is folded into the band (exact: a power of two), the sign is a
    ``copysign`` (``tests/test_families.py`` holds it to the plain formula bit for bit)."""
    lo, hi = family.band
    if family.sides != "both":
        two_d = u[0].mul_(2 * (hi - lo)).add_(2 * lo)
        return two_d.add_(1) if family.sides == "above" else torch.rsub(two_d, 1)
    rows = (2, *[1] * (u.dim() - 1))  # magnitudes 2 |d|; signs u - 1/2 (+0 at 1/2: plus)
    u.mul_(const(u.device, (2 * (hi - lo), 1.0), rows))
    magnitude, sign = u.add_(const(u.device, (2 * lo, -0.5), rows)).unbind(0)
    return magnitude.copysign_(sign).add_(1)


@cached(maxsize=256)
def const(device: torch.device, values: tuple[float, ...], shape: tuple[int, ...]) -> Tensor:
    """float32 ``values`` on ``device`` viewed or expanded to ``shape``, built once (filled on
    the device: no host copy). Shared: never written to."""
    table = torch.empty(len(values), device=device)
    for i, v in enumerate(values):
        table[i] = v
    return table.view(-1, *[1] * (len(shape) - 1)).expand(shape)


@cached(maxsize=64)
def window_counts(shape: Shape, window: int, device: torch.device) -> Tensor | float:
    """Entries (channels x pixels) per window of the padded grid: (h, w), or one number when
    the windows tile the image. Built once per (shape, window, device): never written to."""
    _, c, h, w = shape
    if h % window == 0 and w % window == 0:
        return float(c * window * window)

    def sides(size: int) -> Tensor:  # window, ..., window, remainder (no indexed write: a sync)
        n = -(-size // window)
        last = torch.arange(n, device=device) == n - 1
        return torch.where(last, float(size - window * (n - 1)), float(window))

    return c * sides(h)[:, None] * sides(w)[None, :]


def linear_gain(scale: int) -> float:
    """Mean variance of linear interpolation of unit iid nodes over one period."""
    return sum((1 - i / scale) ** 2 + (i / scale) ** 2 for i in range(scale)) / scale


@cached(maxsize=16)  # size x size / scale floats each: a few of the last sizes
def interpolation(size: int, scale: int, device: torch.device) -> Tensor:
    """(size, nodes) matrix of linear interpolation from nodes on every ``scale``-th pixel;
    built once per (size, scale, device). Never written to."""
    nodes = -(-size // scale) + 1
    eye = torch.eye(nodes, device=device)[None]
    full = F.interpolate(eye, size=(nodes - 1) * scale + 1, mode="linear", align_corners=True)
    return full[0, :, :size].T


TINY = torch.finfo(torch.float32).tiny


class Parts(NamedTuple):
    """A built-in family on the batch's shared noise ``g``: ``gain * (g - mean) + smooth`` with
    ``gain = sqrt(target / max(power, TINY))``. ``target`` and ``power`` are per sample (B,) or
    per cell (B, gh, gw); ``neg_mean`` (``-mean``, same shapes) only for zero-mean noise (None:
    no offset); ``smooth`` a field (B, Hp, Wp) or None. :func:`picked_gain` picks each sample's
    parts first, then takes the square root and divides once for the whole batch."""

    target: Tensor
    power: Tensor
    neg_mean: Tensor | None = None
    smooth: Tensor | None = None


class Grid(NamedTuple):
    """Where a batch draw's gains are constant: cells of ``cell`` pixels (the windows of the
    first ``local`` family drawn, else whole images) on the image zero-padded to ``padded``,
    ``grid`` cells down and across. Depends on the shape only, so the random draws can be
    made before any arithmetic."""

    shape: Shape
    window: int | None
    cell: tuple[int, int]
    grid: tuple[int, int]
    padded: tuple[int, int]

    @classmethod
    def of(cls, shape: Shape, window: int | None) -> Grid:
        h, w = shape[2:]
        cell = (window, window) if window is not None else (h, w)
        grid = (-(-h // cell[0]), -(-w // cell[1]))
        return cls(tuple(shape), window, cell, grid, (grid[0] * cell[0], grid[1] * cell[1]))


class once:  # noqa: N801 (a decorator)
    """``functools.cached_property`` without its lock (Python 3.11), which ``torch.compile``
    cannot trace: the value is computed on first read and stored on the instance."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn, self.name = fn, fn.__name__

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


class SharedNoise:
    """The shared white noise ``g`` (zero-padded to whole cells of ``grid``) and its per-cell
    statistics, computed when a family asks for them.

    ``bands`` views ``g`` as (B, C, cells down, cell height, Wp): reductions and per-cell
    factors then run along whole contiguous rows (much faster on the CPU than along short runs).
    """

    def __init__(self, grid: Grid, g: Tensor, zero_mean: bool) -> None:
        b, c, h, w = grid.shape
        self.shape, self.n, self.zero_mean = grid.shape, c * h * w, zero_mean
        pad_h, pad_w = grid.padded[0] - h, grid.padded[1] - w
        if pad_h or pad_w:
            g = F.pad(g, (0, pad_w, 0, pad_h))
        self.g, self.cell, self.grid = g, grid.cell, grid.grid
        self.bands = g.view(b, c, self.grid[0], self.cell[0], g.shape[3])

    def cell_sum(self, x: Tensor) -> Tensor:
        """Sum of ``x`` (shaped like ``bands``) over each cell, (B, gh, gw)."""
        b, c = self.shape[:2]
        return x.sum(3).view(b, c, self.grid[0], self.grid[1], self.cell[1]).sum((1, 4))

    @once
    def energy(self) -> Tensor:
        """``|g|^2`` per cell, (B, gh, gw)."""
        b, c, hp, wp = self.g.shape  # norms first: no temporary the size of g
        if self.grid == (1, 1):
            return torch.linalg.vector_norm(self.g.flatten(1), dim=1).square_().view(b, 1, 1)
        runs = self.g.view(b, c, hp, self.grid[1], self.cell[1])
        runs = torch.linalg.vector_norm(runs, dim=4).square_()  # (B, C, Hp, gw)
        return runs.view(b, c, self.grid[0], self.cell[0], self.grid[1]).sum((1, 3))

    @once
    def sums(self) -> Tensor:
        """Sum of ``g`` per cell, (B, gh, gw)."""
        return self.cell_sum(self.bands)

    @once
    def mean(self) -> Tensor | None:
        """Sample mean of ``g`` when the noise is zero-mean, else None."""
        return self.sums.sum((1, 2)) / self.n if self.zero_mean else None

    @once
    def neg_mean(self) -> Tensor | None:
        """``-mean`` when the noise is zero-mean, else None."""
        return None if self.mean is None else self.mean.neg()

    @once
    def centred_power(self) -> Tensor:
        """``|g - mean|^2`` per sample."""
        power = self.energy.sum((1, 2))
        return power if self.mean is None else power - self.n * self.mean.square()

    def ones(self, value: float = 1.0) -> Tensor:
        """``value`` for every sample, (B,), or every cell, (B, gh, gw): a cached constant
        (never written to)."""
        cells = self.grid if self.grid != (1, 1) else ()
        return const(self.g.device, (value,), (self.shape[0], *cells))

    def cells(self, x: Tensor) -> Tensor:
        """``x`` of shape (B,) or (B, gh, gw) as (B, gh, gw)."""
        b = self.shape[0]
        return x.view(b, 1, 1).expand(b, *self.grid) if x.dim() == 1 else x

    def spread(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        """Per-cell ``x`` (B, gh, gw), times a per-sample ``scale`` (B,) if given, broadcastable
        to ``bands``; one op (the product repeats ``x`` along the rows)."""
        b, (gh, gw), cw = self.shape[0], self.grid, self.cell[1]
        if x.dim() == 1:  # per sample (one cell)
            return (x if scale is None else x * scale).view(b, 1, 1, 1, 1)
        if scale is not None:
            if gw > 1:
                x = torch.mul(x.unsqueeze(3).expand(b, gh, gw, cw), scale.view(b, 1, 1, 1))
            else:
                x = x * scale.view(b, 1, 1)
        elif gw > 1:
            x = x.repeat_interleave(cw, 2)
        return x.view(b, 1, gh, 1, -1)


def picked_gain(base: SharedNoise, family: Tensor, slots: Sequence[Parts]) -> tuple[Tensor, ...]:
    """Per sample ``b``: the gain of ``slots[family[b]]`` and, for zero-mean noise, its
    ``-mean``, each (B,) or (B, gh, gw): the parts are picked with one stack and one gather,
    then the gain is taken once for the batch (no division when every power is 1)."""
    b, one, zero = base.shape[0], base.ones(), base.ones(0.0)
    divide = any(p.power is not one for p in slots)
    columns = [
        (
            p.target,
            *[p.power] * divide,
            *[zero if p.neg_mean is None else p.neg_mean] * base.zero_mean,
        )
        for p in slots
    ]
    m, cells = len(columns[0]), base.grid != (1, 1)
    shape = (b, *base.grid) if cells else (b,)  # one cell: per sample, no views to cells
    each = base.cells if cells else lambda x: x if x.dim() == 1 else x.view(b)
    stacked = torch.stack([each(x) for c in columns for x in c])
    index = family.view(1, 1, b, *[1] * (len(shape) - 1)).expand(1, m, *shape)
    picked = stacked.view(len(slots), m, *shape).gather(0, index)[0].unbind(0)
    gain = picked[0].div_(picked[1].clamp_min_(TINY)) if divide else picked[0]
    return gain.sqrt_(), *picked[1 + divide :]


def to_nominal_power(noise: Tensor, picked: Tensor, sig: Tensor, zero_mean: bool) -> Tensor:
    """Centre (if ``zero_mean``) and rescale the ``picked`` samples to power ``N sig^2``."""
    b, n = noise.shape[0], noise[0].numel()
    power = torch.linalg.vector_norm(noise, dim=(1, 2, 3)).square_()
    if zero_mean:
        mean = noise.sum((1, 2, 3)) / n
        power = power - n * mean.square()
        noise.sub_(torch.where(picked, mean, 0.0).view(b, 1, 1, 1))
    scale = (n * sig.square() / power.clamp_min(TINY)).sqrt_()
    return noise.mul_(torch.where(picked, scale, 1.0).view(b, 1, 1, 1))
