"""Input validation shared by every layer: exact errors that name the parameter and its value."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def check_images(x: object, name: str = "images", finite: bool = True) -> Tensor:
    """Require a non-empty floating 4-D tensor (B, C, H, W), finite unless ``finite=False``."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float32, float16, bfloat16), got {x.dtype}"
        )
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    # One cheap reduction: a NaN or Inf anywhere makes the float32 sum non-finite; so do finite
    # values too large to add noise to, which the exact (slower) check then tells apart.
    if finite and not bool(torch.isfinite(x.sum(dtype=torch.float32))):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf")
        big = float(x.abs().max())
        raise ValueError(
            f"{name} has values too large for float32 arithmetic (max |x| = {big:.3g})"
        )
    return x


def check_positive(name: str, value: object, integer: bool = False) -> float:
    """Require a finite number > 0 (an int > 0 when ``integer``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


def check_probability(name: str, value: object) -> float:
    """Require a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def check_interval(name: str, value: object, low: float = 0.0) -> tuple[float, float]:
    """Require a pair ``(a, b)`` of finite numbers with ``low < a < b``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}")
    a, b = value
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must hold two finite numbers, got {value!r}")
    if not (low < a < b):
        raise ValueError(f"{name}=({a}, {b}) must satisfy {low} < low < high (in order)")
    return float(a), float(b)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Require one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value  # type: ignore[return-value]


def check_seed(name: str, value: object) -> int:
    """Require an int seed in ``[0, 2**63)`` (what ``torch.Generator.manual_seed`` takes)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"{name} must be an int in [0, 2**63), got {value!r}")
    return value


def check_type(name: str, value: object, kind: type, what: str, optional: bool = False) -> object:
    """Require an instance of ``kind`` (described as ``what``), or None when ``optional``."""
    if (value is None and optional) or isinstance(value, kind):
        return value
    what = f"{what} or None" if optional else what
    raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
