"""Input validation shared by every layer: exact errors that name the parameter and its value."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

F32_MAX = float(torch.finfo(torch.float32).max)  # about 3.4e38
F32_TINY = float(torch.finfo(torch.float32).tiny)  # about 1.2e-38: smaller normal numbers vanish
MAX_INT = 2**63  # what torch's int64 holds


def shown(value: object) -> str:
    """``repr(value)`` cut short: error messages stay one short line whatever the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_finite_number(value: object) -> bool:
    """A real number (no bool) that converts to a finite float; huge ints do not overflow here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) < 2**1023


def check_dense(name: str, x: Tensor) -> Tensor:
    """Require a tensor that holds its values in the ordinary way: strided (not sparse, nested
    or MKL-DNN), not quantized, not on the meta device (shapes only: no values to compute)."""
    if x.is_nested:
        kind = "a nested tensor"
    elif x.layout != torch.strided:
        kind = f"a {str(x.layout).removeprefix('torch.').lstrip('_')} tensor"
    elif x.is_quantized:
        kind = "a quantized tensor"
    elif x.is_meta:
        kind = "a tensor on the meta device (a shape without values)"
    else:
        return x
    raise TypeError(f"{name} must be a dense tensor with values (CPU or GPU), got {kind}")


def check_images(
    x: object, name: str = "images", finite: bool = True, data_range: float | None = None
) -> Tensor:
    """Require a non-empty floating 4-D dense tensor (B, C, H, W), finite unless
    ``finite=False``.

    data_range: the images' unit (with ``finite``, read in the same wait for the device): values
    above twice it are refused as images of another scale, 0..255 given for 0..1. No image in
    its own unit reaches twice its range (interpolation and sharpening overshoot by far less),
    while any 0..255 image brighter than 2 grey levels does; noise added to one would be almost
    nothing.
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}"
        )
    check_dense(name, x)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float32, float16, bfloat16), got {x.dtype}"
        )
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if not finite:
        return x
    # One cheap reduction: a NaN or Inf anywhere makes the float32 sum non-finite; so do finite
    # values too large to add noise to, which the exact (slower) check then tells apart.
    total = x.sum(dtype=torch.float32)
    ok = torch.isfinite(total)
    if data_range is not None:
        ok = ok & (x.amax() <= 2 * data_range)
    if bool(ok):  # the one read; what went wrong is only worked out when something did
        return x
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    if not bool(torch.isfinite(total)):
        big = float(x.abs().max())
        raise ValueError(
            f"{name} has values too large for float32 arithmetic (max |x| = {big:.3g})"
        )
    raise ValueError(
        f"{name} reaches {float(x.amax()):.4g}, more than twice data_range={data_range:g}: "
        f"images in 0..255? Divide them by 255 (or give data_range and sigma in the images' unit)"
    )


def check_positive(
    name: str, value: object, integer: bool = False, maximum: float | None = None
) -> float:
    """Require a finite number > 0 (an int in ``[1, 2**63)`` when ``integer``), at most
    ``maximum`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {shown(value)}")
    if integer and not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {shown(value)}")
    if integer and value >= MAX_INT:
        raise ValueError(f"{name} must be an int below 2**63, got {shown(value)}")
    if not is_finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}, got {shown(value)}")
    return value


def check_nonnegative(
    name: str, value: object, high: float = F32_MAX, integer: bool = False
) -> float:
    """Require a finite number (an int when ``integer``) in ``[0, high]``."""
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"{name} must be {kind} >= 0, got {shown(value)}")
    if not is_finite_number(value) or not 0 <= value <= high:
        raise ValueError(f"{name} must be {kind} in [0, {high:.3g}], got {shown(value)}")
    return value


def check_float32(name: str, value: float, low: float = F32_TINY, high: float = F32_MAX) -> float:
    """Require ``low <= value <= high`` (by default: a positive number float32 holds without
    rounding it to 0 or Inf)."""
    if not low <= value <= high:
        raise ValueError(f"{name}={shown(value)} must lie in [{low:.3g}, {high:.3g}]")
    return value


def check_finite(name: str, value: object) -> float:
    """Require a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite number, got {shown(value)}")
    if not is_finite_number(value) or abs(value) > F32_MAX:
        raise ValueError(f"{name} must be a finite number (float32), got {shown(value)}")
    return float(value)


def check_probability(name: str, value: object) -> float:
    """Require a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {shown(value)}")
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {shown(value)}")
    return float(value)


def check_interval(name: str, value: object, low: float = 0.0) -> tuple[float, float]:
    """Require a pair ``(a, b)`` of finite numbers with ``low < a < b``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {shown(value)}")
    a, b = value
    for v in (a, b):
        if not is_finite_number(v):
            raise ValueError(f"{name} must hold two finite numbers, got {shown(value)}")
    if not (low < a < b):
        raise ValueError(
            f"{name}=({shown(a)}, {shown(b)}) must satisfy {low} < low < high (in order)"
        )
    return float(a), float(b)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Require one of ``choices``."""
    if value not in choices:
        known = ", ".join(map(repr, choices))
        raise ValueError(f"unknown {name} {shown(value)}; choose one of {known}")
    return value  # type: ignore[return-value]


def check_seed(name: str, value: object) -> int:
    """Require an int seed in ``[0, 2**63)`` (what ``torch.Generator.manual_seed`` takes)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"{name} must be an int in [0, 2**63), got {shown(value)}")
    return value


def check_type(name: str, value: object, kind: type, what: str, optional: bool = False) -> object:
    """Require an instance of ``kind`` (described as ``what``), or None when ``optional``."""
    if (value is None and optional) or isinstance(value, kind):
        return value
    what = f"{what} or None" if optional else what
    raise TypeError(f"{name} must be {what}, got {type(value).__name__}")


MAX_LAYERS = 10_000
MAX_PARAMS = 2**31  # 8 GiB of float32 weights


def check_network_size(what: str, layers: int, params: int) -> None:
    """Refuse, before anything is allocated, a network too large to build."""
    if layers > MAX_LAYERS or params > MAX_PARAMS:
        raise ValueError(
            f"{what} is too large: {float(layers):.3g} layers, {float(params):.3g} weights "
            f"(limits: {MAX_LAYERS} layers, 2**31 weights)"
        )


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra that adds it."""


def optional_import(module: str, extra: str, needed_by: str) -> ModuleType:
    """``import module``, or a one-line :class:`MissingDependency` saying what ``needed_by``
    lacks and the ``pip install "ts-defense[extra]"`` that adds it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        missing = isinstance(err, ModuleNotFoundError) and err.name in (module, top)
        why = "is not installed" if missing else f"cannot be imported ({err})"
        raise MissingDependency(
            f'{needed_by} needs {top}, which {why}: pip install "ts-defense[{extra}]"'
        ) from err
