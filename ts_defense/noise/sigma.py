"""The nominal sigma schedule: what sigma each training sample is told, drawn per sample.

One object for the sampler and the framework adapters: a ``fixed`` sigma, a ``range`` drawn
uniformly (blind training), or a ``choice`` among values with equal probability. Sigma is in
image units; ``floor`` raises draws below it (a range from 0, as option files write it).

>>> SigmaSchedule.parse((5 / 255, 50 / 255)).draw(4, torch.Generator())   # (4,) float32
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import (
    check_choice,
    check_float32,
    check_interval,
    check_positive,
    is_finite_number,
    shown,
)
from ._fused import const

KINDS = ("fixed", "range", "choice")


@dataclass(frozen=True)
class SigmaSchedule:
    """Nominal sigma per sample: ``kind`` ``"fixed"`` (one value), ``"range"`` (``(low,
    high)``, uniform) or ``"choice"`` (any number of values, equally likely); draws below
    ``floor`` become ``floor``. Build with :meth:`fixed`, :meth:`uniform`, :meth:`choice` or
    :meth:`parse`; ``TSConfig(sigma=...)`` takes a number, a ``(low, high)`` pair or one of these.
    """

    kind: str
    values: tuple[float, ...]
    floor: float = 0.0

    def __post_init__(self) -> None:
        check_choice("sigma kind", self.kind, KINDS)
        if self.floor != 0.0:
            check_float32("sigma floor", check_positive("sigma floor", self.floor))
        values = self.values
        if self.kind == "range":
            values = check_interval("sigma", values, low=0.0 if self.floor == 0 else -math.inf)
        elif not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise TypeError(
                f"sigma values must be a non-empty list of numbers, got {shown(values)}"
            )
        elif self.kind == "fixed" and len(values) != 1:
            raise ValueError(f"a fixed sigma holds one value, got {shown(values)}")
        for v in values:  # > 0, or 0 under a floor
            if not (self.floor and is_finite_number(v) and v == 0):
                check_positive("sigma", v)
        values = tuple(float(v) for v in values)
        check_float32("sigma", max(min(values), self.floor))  # smaller sigmas round to 0
        object.__setattr__(self, "values", values)

    @classmethod
    def fixed(cls, sigma: float) -> SigmaSchedule:
        return cls("fixed", (sigma,))

    @classmethod
    def uniform(cls, low: float, high: float, floor: float = 0.0) -> SigmaSchedule:
        return cls("range", (low, high), floor)

    @classmethod
    def choice(cls, *values: float, floor: float = 0.0) -> SigmaSchedule:
        return cls("choice", values, floor)

    @classmethod
    def parse(cls, value: object) -> SigmaSchedule:
        """A number (fixed), a ``(low, high)`` pair (range), a schedule, or its :meth:`to_dict`
        mapping ``{"kind": ..., "values": [...], "floor": ...}``."""
        if isinstance(value, SigmaSchedule):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"kind", "values", "floor"}, key=str)
            if unknown or "kind" not in value or "values" not in value:
                raise ValueError(
                    f"sigma as a mapping takes kind, values and floor, got {shown(dict(value))}"
                )
            values = value["values"]
            values = tuple(values) if isinstance(values, list) else values
            return cls(value["kind"], values, value.get("floor", 0.0))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls.fixed(value)
        return cls("range", value)  # type: ignore[arg-type]

    @property
    def top(self) -> float:
        """The largest sigma drawn."""
        return max(max(self.values), self.floor)

    @property
    def plain(self) -> float | tuple[float, float] | None:
        """The number or ``(low, high)`` pair this schedule is, or None (a choice, a floor)."""
        if self.floor:
            return None
        return {"fixed": self.values[0], "range": self.values}.get(self.kind)  # type: ignore[return-value]

    def to_dict(self) -> float | list[float] | dict[str, Any]:
        """Plain types that :meth:`parse` reads back: a number, ``[low, high]`` or a mapping."""
        plain = self.plain
        if plain is not None:
            return list(plain) if isinstance(plain, tuple) else plain
        return {"kind": self.kind, "values": list(self.values), "floor": self.floor}

    def draw(self, batch: int, gen: torch.Generator) -> Tensor:
        """``batch`` nominal sigmas (float32), drawn with ``gen`` on its device; no host sync."""
        return self.from_random(self.draw_random(batch, gen), batch, gen.device)

    def draw_random(self, batch: int, gen: torch.Generator) -> Tensor | None:
        """The random part of :meth:`draw`: uniforms (range), indices (choice) or None (fixed)."""
        dev = gen.device
        if self.kind == "range":
            return torch.rand(batch, generator=gen, device=dev)
        if self.kind == "choice":
            return torch.randint(len(self.values), (batch,), generator=gen, device=dev)
        return None

    def from_random(self, random: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """The sigmas of :meth:`draw` from its random part: arithmetic only, so the sampler's
        ``compile=True`` takes it into its graph."""
        if random is None:
            sigma = torch.full((batch,), self.values[0], device=device)
        elif self.kind == "range":
            lo, hi = self.values
            sigma = lo + (hi - lo) * random
        else:  # the values filled on the device once (not copied from the host: no sync)
            sigma = const(device, self.values, (len(self.values),))[random]
        return sigma.clamp_min(self.floor) if self.floor else sigma
