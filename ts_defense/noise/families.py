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

:class:`DrawPipeline` is the one batch draw (the sampler's, eager or compiled, and
:meth:`Family.draw`). It never synchronises the host with the device and its shapes never depend
on the data: every built-in family is a gain and an offset per sample (per window for ``local``)
on one white Gaussian shared by the batch (the arithmetic lives in :mod:`ts_defense.noise._fused`).
Each sample's noise depends only on its own part of that noise and its own family parameters, so
sharing it leaves every family's law unchanged. Every random tensor is drawn first
(:func:`draw_randoms`), so the arithmetic after it (:func:`shape_noise`) is a pure function that
``torch.compile`` can fuse (``TSSampler(compile=True)``).

Register more with :func:`register_family`: a :class:`Family` subclass (a frozen dataclass whose
``draw(shape, generator, zero_mean)`` returns unit-level float32 noise), an instance of one with
its parameters, or (decorator) a function ``fn(shape, generator, zero_mean)`` (the same call).
Such families are drawn for the whole batch and selected with ``torch.where``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._checks import (
    check_choice,
    check_float32,
    check_interval,
    check_positive,
    check_probability,
    is_finite_number,
    shown,
)
from .._registry import Registry
from ._fused import (
    Grid,
    Parts,
    Shape,
    SharedNoise,
    interpolation,
    linear_gain,
    picked_gain,
    power_factor,
    rand,
    to_nominal_power,
    uniforms,
    window_counts,
)

FamilyFn = Callable[[Shape, torch.Generator, bool], Tensor]

SIDES = ("both", "above", "below")
# A deviation d scales the noise power by 1 + 2 d: beyond 1e6 it is no longer "near" the typical
# set, and |n|^2 of any image stays far inside float32.
MAX_DEVIATION = 1e6
MAX_WINDOW = 4096  # window and corr_scale, in pixels
BUILTIN = ("radial", "local", "structured")


class Family:
    """A family of out-of-distribution noise, with its parameters.

    Subclass as a frozen dataclass with a ``name`` and fields of defaults; check the fields in
    ``__post_init__`` with errors that name ``families.<name>.<field>`` (:meth:`key`), and
    implement :meth:`draw` (unit-level float32 noise for a whole batch). The built-in families
    implement :meth:`randoms` and :meth:`parts` instead, which :class:`DrawPipeline` fuses
    into one pass.
    """

    name: ClassVar[str] = ""

    def key(self, field: str) -> str:
        """The option path of ``field`` in error messages: ``families.<name>.<field>``."""
        return f"families.{self.name}.{field}"

    def randoms(self, grid: Grid, gen: torch.Generator) -> tuple[Tensor, ...] | None:
        """The random tensors :meth:`parts` takes, drawn from ``gen`` (all of this family's
        randomness, so :meth:`parts` is a pure function); None: use :meth:`draw`."""
        return None

    def parts(self, base: SharedNoise, randoms: tuple[Tensor, ...]) -> Parts:
        """This family on the batch's shared noise (:class:`Parts`), from its :meth:`randoms`."""
        raise NotImplementedError

    def draw(self, shape: Shape, gen: torch.Generator, zero_mean: bool = False) -> Tensor:
        """Unit-level float32 noise of this family for every sample of ``shape``."""
        if type(self).parts is Family.parts:
            raise NotImplementedError(
                f"noise family {self.name!r} implements neither draw nor parts"
            )
        return DrawPipeline((GAUSSIAN, self), zero_mean)(shape, gen)[2]

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

    def randoms(self, grid: Grid, gen: torch.Generator) -> tuple[Tensor, ...]:
        return (rand((uniforms(self), grid.shape[0]), gen),)  # = one draw per row, on the CPU

    def parts(self, base: SharedNoise, randoms: tuple[Tensor, ...]) -> Parts:
        target = power_factor(randoms[0], self).mul_(base.n)
        return Parts(target, base.centred_power, base.neg_mean)


@dataclass(frozen=True, kw_only=True)
class Local(_Banded):
    """A gain constant on ``window x window`` patches: a ``fraction`` of the windows at a
    deviation in the band (as :class:`Radial`), the others exactly at ``d = 0``."""

    window: int = 8
    fraction: float = 0.25
    name: ClassVar[str] = "local"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.key("window"), self.window, integer=True, maximum=MAX_WINDOW)
        check_probability(self.key("fraction"), self.fraction)

    def _picks(self, cells: tuple[int, int]) -> tuple[int, int, int]:
        """Windows per sample, windows set off the typical set, uniforms per deviation."""
        n_win = cells[0] * cells[1]
        return n_win, max(1, round(self.fraction * n_win)), uniforms(self)

    def randoms(self, grid: Grid, gen: torch.Generator) -> tuple[Tensor, ...] | None:
        if grid.window != self.window:  # another local family set the cells: drawn alone
            return None
        n_win, k, rows = self._picks(grid.grid)  # one draw: the windows' keys, then the deviations
        return (rand(grid.shape[0] * (n_win + rows * k), gen),)

    def parts(self, base: SharedNoise, randoms: tuple[Tensor, ...]) -> Parts:
        b, grid = base.shape[0], base.grid
        counts = window_counts(base.shape, self.window, base.g.device)
        n_win, k, rows = self._picks(grid)
        u = randoms[0]
        chosen = u[: b * n_win].view(b, n_win).topk(k, 1).indices
        factor = power_factor(u[b * n_win :].view(rows, b, k), self)  # 1 + 2 d
        factor = torch.ones(b, n_win, device=base.g.device).scatter_(1, chosen, factor)
        target = factor.view(b, *grid).mul_(counts)
        if not base.zero_mean:
            return Parts(target, base.energy)
        mean = base.sums / counts  # zero-mean in every window, hence zero-mean overall
        centred = base.bands - base.spread(mean)
        padding = base.cell[0] * base.cell[1] * base.shape[1] - counts  # entries at -mean
        energy = base.cell_sum(centred.square_()) - padding * mean.square()
        return Parts(target, energy, mean.neg_())


@dataclass(frozen=True, kw_only=True)
class Structured(Family):
    """Correlated noise of the nominal power: ``sqrt(1 - a) g + smooth``, the smooth field
    bilinearly upsampled from nodes every ``corr_scale`` pixels, its share ``a`` uniform in
    ``corr_mix``."""

    corr_scale: int = 4
    corr_mix: tuple[float, float] = (0.3, 0.9)
    name: ClassVar[str] = "structured"

    def __post_init__(self) -> None:
        check_positive(self.key("corr_scale"), self.corr_scale, integer=True, maximum=MAX_WINDOW)
        mix = check_interval(self.key("corr_mix"), self.corr_mix, low=-1e-12)
        if mix[1] > 1:
            raise ValueError(f"{self.key('corr_mix')}={self.corr_mix} must lie in [0, 1]")
        object.__setattr__(self, "corr_mix", mix)

    def randoms(self, grid: Grid, gen: torch.Generator) -> tuple[Tensor, ...]:
        nodes = tuple(-(-size // self.corr_scale) + 1 for size in grid.padded)
        coarse = torch.randn((grid.shape[0], *nodes), generator=gen, device=gen.device)
        return coarse, rand(grid.shape[0], gen)

    def parts(self, base: SharedNoise, randoms: tuple[Tensor, ...]) -> Parts:
        """:func:`shape_noise` then centres it (zero-mean) and scales it to the nominal power,
        from the drawn noise itself."""
        b = base.shape[0]
        s = self.corr_scale
        up_h, up_w = (interpolation(size, s, base.g.device) for size in base.g.shape[2:])
        coarse, a = randoms
        lo, hi = self.corr_mix
        a = a.mul_(hi - lo).add_(lo)
        coarse *= (a.sqrt() / linear_gain(s)).view(b, 1, 1)  # unit power times the smooth share
        smooth = up_h @ coarse @ up_w.T  # (B, Hp, Wp), bilinear; g is zero beyond (h, w)
        return Parts(torch.rsub(a, 1), base.ones(), None, smooth)  # gain sqrt(1 - a)


class _Gaussian(Family):
    """In-distribution noise: ``g`` itself (index 0 of every draw; not a registered family)."""

    name: ClassVar[str] = "gaussian"

    def randoms(self, grid: Grid, gen: torch.Generator) -> tuple[Tensor, ...]:
        return ()

    def parts(self, base: SharedNoise, randoms: tuple[Tensor, ...]) -> Parts:
        n = base.n  # zero-mean: |g - mean|^2 has n - 1 degrees of freedom, rescaled to n
        power = n / max(n - 1, 1) if base.zero_mean else 1.0
        return Parts(base.ones(power), base.ones(), base.neg_mean)


GAUSSIAN = _Gaussian()


@dataclass(frozen=True, kw_only=True)
class FunctionFamily(Family):
    """A family registered as a function ``fn(shape, generator, zero_mean)`` (no parameters):
    its :meth:`draw`."""

    fn: FamilyFn
    label: str

    @property  # type: ignore[override]
    def name(self) -> str:
        return self.label

    def options(self) -> tuple[str, ...]:
        return ()

    def draw(self, shape: Shape, gen: torch.Generator, zero_mean: bool = False) -> Tensor:
        return self.fn(shape, gen, zero_mean)


FAMILIES: Registry[Family] = Registry(
    "noise family", [(f.name, f()) for f in (Radial, Local, Structured)]
)


def register_family(name: str, family: Family | type[Family] | FamilyFn | None = None) -> Any:
    """Register a noise family under ``name``, usable in ``TSConfig.families``.

    ``register_family("fine", Local(window=4))`` registers a family object with its parameters
    (a :class:`Family` subclass registers its defaults); ``@register_family("pink")`` decorates a
    :class:`Family` subclass or a function ``fn(shape, generator, zero_mean)`` (what
    :meth:`Family.draw` takes), returned unchanged.
    """

    def add(member: Any) -> Any:
        if name == "gaussian":  # index 0 of every draw, not a family to pick
            raise ValueError("noise family 'gaussian' is already registered")
        if isinstance(member, type) and issubclass(member, Family):
            FAMILIES.register(name, member())
        elif isinstance(member, Family):
            FAMILIES.register(name, member)
        elif callable(member):
            FAMILIES.register(name, FunctionFamily(fn=member, label=name))
        else:
            raise TypeError(
                f"register_family({name!r}) takes a Family or a function, got {shown(member)}"
            )
        return member

    return add if family is None else add(family)


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
    """``TSConfig.families``: family name -> weight, and each name's family object
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

    def first(self, *kinds: type[Family]) -> Any:
        """The first listed family of one of ``kinds`` (``Radial``, ``Local``, ...), else the
        first kind's defaults: e.g. the band and window a report shows."""
        listed = (m for m in self._members.values() if isinstance(m, kinds))
        return next(listed, None) or kinds[0]()

    @classmethod
    def parse(cls, value: object) -> Families:
        """Read ``families``: keys are registered names or family objects, values weights or
        nested blocks ``{"weight": w, <parameter>: value}`` (weight 1 when left out)."""
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
        return cls(weights, members)


def _resolve(key: object) -> tuple[str, Family]:
    """A key of ``families``: a registered name or a family object -> (name, family)."""
    if isinstance(key, Family):
        return _registered_name(key), key
    member = FAMILIES.lookup(key)  # a str, then
    return str(key), member


def _float32(device_type: str) -> AbstractContextManager[Any]:
    """Autocast off on ``device_type``: noise is computed in float32 whatever the caller's
    mixed precision (the same bits with and without it)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()


Choose = Callable[..., tuple[Tensor, Tensor]]


def every_sample_first(batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Level 1 and ``families[1]`` for every sample: what :meth:`Family.draw` asks for."""
    return torch.ones(batch, device=device), torch.ones(batch, dtype=torch.long, device=device)


class DrawPipeline:
    """The one batch draw: the sampler's (eager or ``compile=True``) and :meth:`Family.draw`.

    ``families[0]`` is :data:`GAUSSIAN`; ``None`` marks a family never picked (weight 0): it is
    not drawn. A call ``pipeline(shape, generator, chosen)`` draws every random tensor first
    (:func:`draw_randoms`), then runs the pure part (through ``torch.compile`` when
    ``compile``): ``choose(batch, device, *chosen)`` gives each sample's level and family index
    (``chosen``: the tensors it takes, drawn by the caller before the call), then
    :func:`shape_noise`; the families without parts come last (:func:`draw_others`). It returns
    the level (B,), the family index (B,) and the float32 noise (B, C, H, W).
    """

    def __init__(
        self,
        families: Sequence[Family | None],
        zero_mean: bool,
        choose: Choose = every_sample_first,
        compile: bool = False,
    ) -> None:
        self.families, self.zero_mean = tuple(families), zero_mean
        self.choose, self.compile = choose, compile
        self.__setstate__({})

    def __getstate__(self) -> dict[str, Any]:  # a compiled function does not pickle: rebuilt
        return {k: v for k, v in self.__dict__.items() if k != "_run"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # Not fullgraph: past torch's recompile limit (8 batch shapes) dynamo then runs new
        # shapes eagerly, where fullgraph=True would raise (tests check it is one graph).
        self._run = torch.compile(self._pure, dynamic=False) if self.compile else self._pure

    def _pure(
        self, grid: Grid, chosen: tuple[Tensor | None, ...], g: Tensor, randoms: list[Any]
    ) -> tuple[Tensor, Tensor, Tensor]:
        sig, family = self.choose(grid.shape[0], g.device, *chosen)
        return (
            sig,
            family,
            shape_noise(grid, self.families, self.zero_mean, family, sig, g, randoms),
        )

    def __call__(
        self, shape: Sequence[int], gen: torch.Generator, chosen: tuple[Tensor | None, ...] = ()
    ) -> tuple[Tensor, Tensor, Tensor]:
        grid, g, randoms = draw_randoms(tuple(shape), gen, self.families)
        with _float32(gen.device.type):  # autocast would run the matmuls in half precision
            sig, family, noise = self._run(grid, chosen, g, randoms)
            noise = draw_others(noise, gen, self.families, family, sig, self.zero_mean, randoms)
        return sig, family, noise


def draw_randoms(
    shape: Shape, gen: torch.Generator, families: Sequence[Family | None]
) -> tuple[Grid, Tensor, list[tuple[Tensor, ...] | None]]:
    """Every random tensor :func:`shape_noise` takes, in a fixed order: the shared white noise
    ``g``, then each family's :meth:`Family.randoms` (None for a family drawn by itself)."""
    window = next((f.window for f in families if isinstance(f, Local)), None)
    grid = Grid.of(shape, window)
    g = torch.randn(shape, generator=gen, device=gen.device)
    return grid, g, [None if m is None else m.randoms(grid, gen) for m in families]


def shape_noise(
    grid: Grid,
    families: Sequence[Family | None],
    zero_mean: bool,
    family: Tensor,
    sig: Tensor,
    g: Tensor,
    randoms: Sequence[tuple[Tensor, ...] | None],
) -> Tensor:
    """The noise of a draw from its random tensors (:func:`draw_randoms`), for the
    families with parts; a pure function of tensors (it writes into them), so ``torch.compile``
    can fuse it (the sampler's ``compile=True``). Families drawn by themselves keep the
    Gaussian noise here; :func:`draw_others` puts theirs in."""
    b, _, h, w = grid.shape
    if len(families) == 1 and not zero_mean:  # Gaussian only: scale g in place
        return g.mul_(sig.view(b, 1, 1, 1))
    base = SharedNoise(grid, g, zero_mean)
    pairs = enumerate(zip(families, randoms, strict=True))
    parts = {k: m.parts(base, r) for k, (m, r) in pairs if r is not None}
    slots = [parts.get(k, parts[0]) for k in range(len(families))]
    gain, *neg_mean = picked_gain(base, family, slots)
    base.bands.mul_(base.spread(gain, sig))
    if zero_mean:  # the offset -gain * mean
        base.bands.add_(base.spread(gain.mul_(neg_mean[0]), sig))
    noise = base.g[..., :h, :w]
    for k, (*_, smooth) in parts.items():
        if smooth is not None:  # ``structured``: add its smooth field where picked
            picked = family == k
            coef = torch.where(picked, sig, 0.0).view(b, 1, 1, 1)
            noise.addcmul_(smooth[:, None, :h, :w], coef)
            noise = to_nominal_power(noise, picked, sig, zero_mean)
    return noise


def draw_others(
    noise: Tensor,
    gen: torch.Generator,
    families: Sequence[Family | None],
    family: Tensor,
    sig: Tensor,
    zero_mean: bool,
    randoms: Sequence[tuple[Tensor, ...] | None],
) -> Tensor:
    """``noise`` with the samples of the families without parts (registered functions, a
    second ``local``) drawn now, each for the whole batch and put in with ``torch.where``."""
    shape, b = tuple(noise.shape), noise.shape[0]
    for k, member in enumerate(families):
        if member is not None and randoms[k] is None:
            drawn = member.draw(shape, gen, zero_mean).float() * sig.view(b, 1, 1, 1)
            noise = torch.where((family == k).view(b, 1, 1, 1), drawn, noise)
    return noise
