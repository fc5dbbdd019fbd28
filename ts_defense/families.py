"""Families of out-of-distribution noise: noise off the Gaussian typical set, for TS training.

Each family is a small frozen object that owns and validates its parameters; its noise has the
nominal level 1 and the sampler scales it by each sample's sigma. Deviations are scale-free, so
the statistics below hold at every sigma.

- :class:`Radial` ``(band, sides)``: the typical set of ``N(0, (1 + 2 d) I)`` with ``|d|`` in
  the band: an isotropic direction at the exact radius ``sqrt(N (1 + 2 d))``.
- :class:`Local` ``(window, fraction, band, sides)``: a gain that is constant on
  ``window x window`` patches; a ``fraction`` of the windows is set exactly to a deviation in the
  band, the rest exactly to ``d = 0``.
- :class:`Structured` ``(corr_scale, corr_mix)``: correlated noise of the nominal power
  (``d = 0`` exactly): white noise mixed with a smooth field (bilinearly upsampled by
  ``corr_scale``, shared across channels).

:func:`draw_batch` draws a whole batch without synchronising the host with the device and with
shapes that never depend on the data: one white Gaussian ``g`` for the batch, and every built-in
family is ``gain * g + offset`` with a gain and offset per sample (per window for ``local``),
picked per sample with ``gather`` (``structured`` adds its smooth field, then is rescaled to the
nominal power). Each sample's noise depends only on its own ``g`` and its own family parameters,
so sharing ``g`` leaves every family's law unchanged.

Register more with :func:`register_family`: a :class:`Family` subclass (a frozen dataclass whose
``draw(shape, generator, zero_mean)`` returns unit-level float32 noise), an instance of one with
its parameters, or (decorator) a function ``fn(shape, generator, config)``. Such families are
drawn for the whole batch and selected with ``torch.where``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import (
    check_choice,
    check_float32,
    check_interval,
    check_positive,
    check_probability,
    is_finite_number,
    shown,
)

Shape = tuple[int, int, int, int]
FamilyFn = Callable[[Shape, torch.Generator, Any], Tensor]

SIDES = ("both", "above", "below")
# A deviation d scales the noise power by 1 + 2 d: beyond 1e6 it is no longer "near" the typical
# set, and |n|^2 of any image stays far inside float32.
MAX_DEVIATION = 1e6
MAX_WINDOW = 4096  # window and corr_scale, in pixels
BUILTIN = ("radial", "local", "structured")


def _rand(shape: int | tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def band_deviation(shape: int | tuple[int, ...], family: Any, gen: torch.Generator) -> Tensor:
    """Deviations uniform in ``family.band`` ``[eps_in, eps_out]``, on ``family.sides``."""
    lo, hi = family.band
    d = _rand(shape, gen).mul_(hi - lo).add_(lo)
    if family.sides == "below":
        return d.neg_()
    if family.sides == "both":  # the sign from a second uniform: -1 below 1/2, +1 above
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

    Cells are the windows of the (first) ``local`` family drawn, else whole images. ``bands``
    views ``g`` as (B, C, cells down, cell height, Wp): reductions and per-cell factors then
    run along whole contiguous rows (much faster on the CPU than along short runs).
    """

    def __init__(
        self, shape: Shape, gen: torch.Generator, zero_mean: bool, window: int | None
    ) -> None:
        b, c, h, w = shape
        self.shape, self.n, self.zero_mean, self.window = shape, c * h * w, zero_mean, window
        g = torch.randn(shape, generator=gen, device=gen.device)
        cell = (window, window) if window is not None else (h, w)
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


class Family:
    """A family of out-of-distribution noise, with its parameters.

    Subclass as a frozen dataclass with a ``name`` and fields of defaults; check the fields in
    ``__post_init__`` with errors that name ``families.<name>.<field>`` (:meth:`key`), and
    implement :meth:`draw` (unit-level float32 noise for a whole batch). The built-in families
    implement :meth:`parts` instead, which :func:`draw_batch` fuses into one pass.
    """

    name: ClassVar[str] = ""
    # TSConfig's flat keywords (``band``, ``window``, ...) -> the field of this family they set
    FLAT: ClassVar[Mapping[str, str]] = {}

    def key(self, field: str) -> str:
        """The option path of ``field`` in error messages: ``families.<name>.<field>``."""
        return f"families.{self.name}.{field}"

    def parts(self, base: _Base, gen: torch.Generator) -> Parts | None:
        """Gain, offset and smooth field on the batch's shared noise; None: use :meth:`draw`."""
        return None

    def draw(self, shape: Shape, gen: torch.Generator, zero_mean: bool = False) -> Tensor:
        """Unit-level float32 noise of this family for every sample of ``shape``."""
        if type(self).parts is Family.parts:
            raise NotImplementedError(
                f"noise family {self.name!r} implements neither draw nor parts"
            )
        one = torch.ones(shape[0], dtype=torch.long, device=gen.device)
        return draw_batch(shape, gen, (GAUSSIAN, self), one, zero_mean=zero_mean)

    def __call__(self, shape: Shape, gen: torch.Generator, config: Any = None) -> Tensor:
        """``FAMILIES[name](shape, generator, config)``: :meth:`draw` with ``config.zero_mean``."""
        return self.draw(shape, gen, bool(getattr(config, "zero_mean", False)))

    def options(self) -> tuple[str, ...]:
        """The names of this family's parameters."""
        return (
            tuple(f.name for f in dataclasses.fields(self))
            if dataclasses.is_dataclass(self)
            else ()
        )

    def to_dict(self) -> dict[str, Any]:
        """The parameters in plain types (pairs as lists)."""
        values = {k: getattr(self, k) for k in self.options()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def with_options(self, options: Mapping[str, Any], key: str) -> Family:
        """A copy with ``options`` (a nested block of an options file) set; ``key`` names the
        block in errors, unknown options included."""
        unknown = sorted(set(options) - set(self.options()), key=str)
        if unknown:
            known = ", ".join(["weight", *sorted(self.options())])
            raise ValueError(
                f"unknown option(s) {', '.join(map(shown, unknown))} in {key}; known: {known}"
            )
        return dataclasses.replace(self, **options) if options else self  # type: ignore[type-var]


@dataclass(frozen=True, kw_only=True)
class _Banded(Family):
    """A family with deviations in a band ``(eps_in, eps_out)`` on ``sides`` of the typical set."""

    band: tuple[float, float] = (0.05, 0.35)
    sides: str = "both"

    def __post_init__(self) -> None:
        band = check_interval(self.key("band"), self.band)
        check_float32(self.key("band[1]"), band[1], high=MAX_DEVIATION)
        check_choice(self.key("sides"), self.sides, SIDES)
        if self.sides != "above" and band[1] >= 0.5:
            raise ValueError(
                f"{self.key('band')}={band}: deviations below the typical set need eps_out < 0.5 "
                f"(|n|^2 >= 0 bounds d >= -1/2); use sides='above' for wider bands"
            )
        object.__setattr__(self, "band", band)


@dataclass(frozen=True, kw_only=True)
class Radial(_Banded):
    """An isotropic direction at the exact radius of a deviation ``d`` drawn uniformly in the
    band: ``band=(eps_in, eps_out)``, ``sides`` ``"both"``, ``"above"`` (more power than
    nominal) or ``"below"`` (less)."""

    name: ClassVar[str] = "radial"
    FLAT: ClassVar[Mapping[str, str]] = {"band": "band", "sides": "sides"}

    def parts(self, base: _Base, gen: torch.Generator) -> Parts:
        d = band_deviation(base.shape[0], self, gen)
        ratio = d.mul_(2).add_(1).mul_(base.n).div_(base.centred_power.clamp_min(TINY))
        return base.about_mean(ratio.sqrt_())


@dataclass(frozen=True, kw_only=True)
class Local(_Banded):
    """A gain constant on ``window x window`` patches: a ``fraction`` of the windows at a
    deviation in the band (as :class:`Radial`), the others exactly at ``d = 0``."""

    window: int = 8
    fraction: float = 0.25
    name: ClassVar[str] = "local"
    FLAT: ClassVar[Mapping[str, str]] = {
        "band": "band",
        "sides": "sides",
        "window": "window",
        "local_fraction": "fraction",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.key("window"), self.window, integer=True, maximum=MAX_WINDOW)
        check_probability(self.key("fraction"), self.fraction)

    def parts(self, base: _Base, gen: torch.Generator) -> Parts | None:
        if base.window != self.window:  # another local family set the cells: drawn alone
            return None
        b, grid = base.shape[0], base.grid
        counts = window_counts(base.shape, self.window, base.g.device)
        n_win = grid[0] * grid[1]
        k = max(1, round(self.fraction * n_win))
        chosen = _rand((b, n_win), gen).topk(k, 1).indices
        d = torch.zeros(b, n_win, device=base.g.device)
        d = d.scatter_(1, chosen, band_deviation((b, k), self, gen)).view(b, *grid)
        energy = base.energy
        if base.zero_mean:  # zero-mean in every window, hence zero-mean overall
            mean = base.sums / counts
            centred = base.bands - base.spread(mean)
            padding = base.cell[0] * base.cell[1] * base.shape[1] - counts  # entries at -mean
            energy = base.cell_sum(centred.square_()) - padding * mean.square()
        gain = (d.mul_(2).add_(1).mul_(counts) / energy.clamp_min(TINY)).sqrt_()
        return gain, -gain * mean if base.zero_mean else None, None


@dataclass(frozen=True, kw_only=True)
class Structured(Family):
    """Correlated noise of the nominal power: ``sqrt(1 - a) g + smooth``, the smooth field
    bilinearly upsampled from nodes every ``corr_scale`` pixels, its share ``a`` uniform in
    ``corr_mix``."""

    corr_scale: int = 4
    corr_mix: tuple[float, float] = (0.3, 0.9)
    name: ClassVar[str] = "structured"
    FLAT: ClassVar[Mapping[str, str]] = {"corr_scale": "corr_scale", "corr_mix": "corr_mix"}

    def __post_init__(self) -> None:
        check_positive(self.key("corr_scale"), self.corr_scale, integer=True, maximum=MAX_WINDOW)
        mix = check_interval(self.key("corr_mix"), self.corr_mix, low=-1e-12)
        if mix[1] > 1:
            raise ValueError(f"{self.key('corr_mix')}={self.corr_mix} must lie in [0, 1]")
        object.__setattr__(self, "corr_mix", mix)

    def parts(self, base: _Base, gen: torch.Generator) -> Parts:
        """:func:`draw_batch` then centres it (zero-mean) and scales it to the nominal power,
        from the drawn noise itself."""
        b = base.shape[0]
        s = self.corr_scale
        up_h, up_w = (_interpolation(size, s, base.g.device) for size in base.g.shape[2:])
        coarse = torch.randn((b, up_h.shape[1], up_w.shape[1]), generator=gen, device=gen.device)
        lo, hi = self.corr_mix
        a = _rand(b, gen).mul_(hi - lo).add_(lo)
        coarse *= (a.sqrt() / _linear_gain(s)).view(b, 1, 1)  # unit power times the smooth share
        smooth = up_h @ coarse @ up_w.T  # (B, Hp, Wp), bilinear; g is zero beyond (h, w)
        zero = torch.zeros(b, device=base.g.device) if base.zero_mean else None
        return (1 - a).sqrt_(), zero, smooth


class _Gaussian(Family):
    """In-distribution noise: ``g`` itself (index 0 of every draw; not a registered family)."""

    name: ClassVar[str] = "gaussian"

    def parts(self, base: _Base, gen: torch.Generator) -> Parts:
        n = base.n
        gain = math.sqrt(n / max(n - 1, 1)) if base.zero_mean else 1.0
        return base.about_mean(torch.full((base.shape[0],), gain, device=base.g.device))


GAUSSIAN = _Gaussian()


@dataclass(frozen=True, kw_only=True)
class FunctionFamily(Family):
    """A family registered as a function ``fn(shape, generator, config)`` (no parameters); the
    sampler passes its :class:`~ts_defense.TSConfig` as ``config``."""

    fn: FamilyFn
    label: str

    @property  # type: ignore[override]
    def name(self) -> str:
        return self.label

    def options(self) -> tuple[str, ...]:
        return ()

    def draw(self, shape: Shape, gen: torch.Generator, zero_mean: bool = False) -> Tensor:
        return self.fn(shape, gen, self)

    def __call__(self, shape: Shape, gen: torch.Generator, config: Any = None) -> Tensor:
        return self.fn(shape, gen, config)


FAMILIES: dict[str, Family] = {}


def register_family(name: str, family: Family | type[Family] | FamilyFn | None = None) -> Any:
    """Register a noise family under ``name``, usable in ``TSConfig.families``.

    ``register_family("fine", Local(window=4))`` registers a family object with its parameters
    (a :class:`Family` subclass registers its defaults); ``@register_family("pink")`` decorates a
    :class:`Family` subclass or a function ``fn(shape, generator, config)``, returned unchanged.
    """

    def add(member: Any) -> Any:
        if name in FAMILIES or name == "gaussian":
            raise ValueError(f"noise family {name!r} is already registered")
        if isinstance(member, type) and issubclass(member, Family):
            FAMILIES[name] = member()
        elif isinstance(member, Family):
            FAMILIES[name] = member
        elif callable(member):
            FAMILIES[name] = FunctionFamily(fn=member, label=name)
        else:
            raise TypeError(
                f"register_family({name!r}) takes a Family or a function, got {shown(member)}"
            )
        return member

    if not isinstance(name, str) or not name:
        raise TypeError(f"a noise family's name must be a non-empty str, got {shown(name)}")
    return add if family is None else add(family)


for _cls in (Radial, Local, Structured):
    FAMILIES[_cls.name] = _cls()


def _registered_name(member: Family) -> str:
    """The name under which ``member``'s kind of family is registered."""
    if isinstance(member, FunctionFamily) or type(FAMILIES.get(member.name)) is type(member):
        if member.name in FAMILIES:
            return member.name
    for name, known in FAMILIES.items():
        if type(known) is type(member):
            return name
    raise ValueError(
        f"noise family {shown(member)} in families is not registered: "
        f"register_family(name, {type(member).__name__}) first"
    )


class Families(Mapping[str, float]):
    """``TSConfig.families``: family name -> weight, as before, and each name's family object
    with its parameters (:meth:`family`)."""

    def __init__(self, weights: Mapping[str, float], members: Mapping[str, Family]) -> None:
        self._weights, self._members = dict(weights), dict(members)

    def __getitem__(self, name: str) -> float:
        return self._weights[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def family(self, name: str) -> Family:
        """The family object drawn under ``name``."""
        return self._members[name]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Families):
            return self._weights == other._weights and self._members == other._members
        return dict(self) == other if isinstance(other, Mapping) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        items = (f"{n!r}: {w!r} * {self._members[n]!r}" for n, w in self._weights.items())
        return "{" + ", ".join(items) + "}"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{name: {"weight": w, <parameter>: value, ...}}`` in plain types."""
        return {n: {"weight": w, **self._members[n].to_dict()} for n, w in self._weights.items()}

    def flat(self, keyword: str) -> Any:
        """The value of a flat TSConfig keyword (``band``, ``window``, ...): from the first family
        that has it, else the default of the built-in family that has it."""
        members = [*self._members.values(), Radial(), Local(), Structured()]
        member = next(m for m in members if keyword in type(m).FLAT)
        return getattr(member, type(member).FLAT[keyword])

    @classmethod
    def parse(cls, value: object, flat: Mapping[str, Any] | None = None) -> Families:
        """Read ``families``: keys are registered names or family objects, values weights or
        nested blocks ``{"weight": w, <parameter>: value}`` (weight 1 when left out). ``flat``
        keywords (``band``, ``window``, ...) then set that parameter of every family that has
        it; one that no family listed uses is still checked against the built-in defaults."""
        if isinstance(value, Families):
            weights, members = dict(value._weights), dict(value._members)
        elif isinstance(value, Mapping):
            weights, members = {}, {}
            for key, spec in value.items():
                name, member = _resolve(key)
                if name in weights:
                    raise ValueError(f"families: noise family {name!r} is given twice")
                weight = spec
                if isinstance(spec, Mapping):
                    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
                    weight = opts.pop("weight", 1.0)
                    member = member.with_options(opts, f"families.{name}")
                if not is_finite_number(weight) or weight < 0:
                    raise ValueError(
                        f"families[{name!r}] must be a finite weight >= 0, got {shown(weight)}"
                    )
                weights[name], members[name] = weight, member
        else:
            raise TypeError(f"families must map family names to weights, got {shown(value)}")
        check_float32("sum(families.values())", sum(weights.values()), low=0.0)
        for name, member in members.items():
            members[name] = _with_flat(member, flat or {})
        for default in (Radial(), Local(), Structured()):
            if not any(isinstance(m, type(default)) for m in members.values()):
                _with_flat(default, flat or {})
        return cls(weights, members)


def _resolve(key: object) -> tuple[str, Family]:
    """A key of ``families``: a registered name or a family object -> (name, family)."""
    if isinstance(key, Family):
        return _registered_name(key), key
    if isinstance(key, str) and key in FAMILIES:
        return key, FAMILIES[key]
    known = ", ".join(sorted(FAMILIES))
    raise ValueError(f"unknown noise family {shown(key)} in families; known: {known}")


def _with_flat(member: Family, flat: Mapping[str, Any]) -> Family:
    """``member`` with the flat keywords it uses set; errors name the keyword as given."""
    used = {k: f for k, f in type(member).FLAT.items() if k in flat}
    if not used:
        return member
    try:
        return dataclasses.replace(member, **{f: flat[k] for k, f in used.items()})  # type: ignore[type-var]
    except (TypeError, ValueError) as err:
        message = str(err)
        for keyword, f in used.items():
            message = message.replace(member.key(f), keyword)
        raise type(err)(message) from err


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
    families: Sequence[Family | None],
    family: Tensor,
    sigma: Tensor | None = None,
    zero_mean: bool = False,
    config: Any = None,
) -> Tensor:
    """Noise (B, C, H, W) float32: sample ``b`` from ``families[family[b]]`` at level
    ``sigma[b]`` (default 1), zero-mean per sample when ``zero_mean``. ``families[0]`` is
    :data:`GAUSSIAN`; ``None`` marks a family never picked (weight 0): it is not drawn. ``config``
    is what functions registered with :func:`register_family` get as their third argument."""
    if not isinstance(families, Sequence):  # draw_batch(shape, gen, config, family, names, sigma)
        warnings.warn(
            "draw_batch(shape, gen, config, family, names, sigma) is deprecated: pass the family "
            "objects, draw_batch(shape, gen, families, family, sigma, zero_mean)",
            DeprecationWarning,
            stacklevel=2,
        )
        config, names, sigma = families, sigma, zero_mean if isinstance(zero_mean, Tensor) else None
        zero_mean = config.zero_mean
        fams = config.families
        families = [GAUSSIAN, *(None if n is None else fams.family(n) for n in names[1:])]
    b, c, h, w = shape
    sig = torch.ones(b, device=gen.device) if sigma is None else sigma
    if len(families) == 1 and not zero_mean:  # Gaussian only: scale g in place
        return torch.randn(shape, generator=gen, device=gen.device).mul_(sig.view(b, 1, 1, 1))
    window = next((f.window for f in families if isinstance(f, Local)), None)
    base = _Base(shape, gen, zero_mean, window)
    parts: dict[int, Parts] = {}
    for k, member in enumerate(families):
        got = None if member is None else member.parts(base, gen)
        if got is not None:
            parts[k] = got
    slots = [parts.get(k, parts[0]) for k in range(len(families))]
    per_cell = sig.view(b, 1, 1)
    base.bands.mul_(base.spread(_pick(family, [base.cells(p[0]) for p in slots]) * per_cell))
    if zero_mean:  # then every family has an offset
        base.bands.add_(base.spread(_pick(family, [base.cells(p[1]) for p in slots]) * per_cell))
    noise = base.g[..., :h, :w]
    for k, (_, _, smooth) in parts.items():
        if smooth is not None:  # ``structured``: add its smooth field where picked
            picked = family == k
            coef = torch.where(picked, sig, 0.0).view(b, 1, 1, 1)
            noise.addcmul_(smooth[:, None, :h, :w], coef)
            noise = _to_nominal_power(noise, picked, sig, zero_mean)
    for k, member in enumerate(families):  # the others: whole batch, then torch.where
        if member is not None and k not in parts:
            if isinstance(member, FunctionFamily):
                drawn = member(shape, gen, member if config is None else config)
            else:
                drawn = member.draw(shape, gen, zero_mean)
            drawn = drawn.float() * sig.view(b, 1, 1, 1)
            noise = torch.where((family == k).view(b, 1, 1, 1), drawn, noise)
    return noise
