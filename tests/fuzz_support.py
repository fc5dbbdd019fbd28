"""Fuzzing helpers: every public call either returns finite, well-shaped tensors or raises a
documented exception whose message names one of the parameters."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import torch
from hypothesis import strategies as st

DOCUMENTED = (ValueError, TypeError, FileNotFoundError)
CASES: Counter[str] = Counter()

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


# Tensors that are no ordinary (B, C, H, W) batch, each with what its refusal says: every entry
# that takes images refuses them with one line naming the argument (issue 27.4).
EXOTIC = {
    "meta": (lambda: torch.empty(2, 1, 8, 8, device="meta"), "a tensor on the meta device"),
    "sparse": (lambda: torch.zeros(2, 1, 8, 8).to_sparse(), "a sparse_coo tensor"),
    "nested": (
        lambda: torch.nested.nested_tensor([torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)]),
        "a nested tensor",
    ),
    "quantized": (
        lambda: torch.quantize_per_tensor(torch.zeros(2, 1, 8, 8), 0.1, 0, torch.quint8),
        "a quantized tensor",
    ),
    "mkldnn": (lambda: torch.zeros(2, 1, 8, 8).to_mkldnn(), "a mkldnn tensor"),
    "complex": (
        lambda: torch.zeros(2, 1, 8, 8, dtype=torch.complex64),
        "a floating dtype .* got torch.complex64",
    ),
    "integer": (
        lambda: torch.zeros(2, 1, 8, 8, dtype=torch.int64),
        "a floating dtype .* got torch.int64",
    ),
}


def exotic_tensor(kind: str) -> torch.Tensor:
    """The ``EXOTIC`` tensor ``kind`` (without torch's warnings that nested tensors are new)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EXOTIC[kind][0]()


def _values(out: object):
    """The tensors and Python floats in ``out``, through dicts, sequences and objects."""
    if isinstance(out, (torch.Tensor, float)):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from _values(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from _values(v)
    elif hasattr(out, "__dict__"):
        for v in vars(out).values():
            yield from _values(v)


def outcome(
    name: str, call, params: tuple[str, ...], also: tuple[type, ...] = (), floats: bool = True
):
    """Run ``call``; a documented error (``DOCUMENTED`` or ``also``) must name one of ``params``;
    results must be finite: tensors, and Python floats unless ``floats=False`` (for results that
    record a non-finite value on purpose, checked by the caller)."""
    CASES[name] += 1
    try:
        out = call()
    except (*DOCUMENTED, *also) as err:
        msg = str(err)
        assert any(p in msg for p in params), (
            f"{name}: {type(err).__name__}({msg!r}) names none of {params}"
        )
        return None
    for v in _values(out):
        if isinstance(v, float):
            assert not floats or math.isfinite(v), f"{name} returned a non-finite float {v!r}"
        elif v.is_floating_point() or v.is_complex():
            assert bool(torch.isfinite(v).all()), f"{name} returned a non-finite tensor"
    return out


@st.composite
def tensors(draw, min_dims: int = 0, max_dims: int = 5, max_side: int = 6):
    """Tensors of random dtype and shape (4-D most often), sometimes with NaN/Inf or huge values."""
    ndim = draw(st.one_of(st.just(4), st.integers(min_dims, max_dims)))
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(ndim))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30, 255.0]))
    x = x * scale
    poison = draw(st.sampled_from([None, math.nan, math.inf, -math.inf]))
    if poison is not None and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = poison
    if dtype.is_complex:
        return x.to(torch.complex64)
    if dtype.is_floating_point:
        return x.to(dtype)
    return x.nan_to_num(0).clamp(-100, 100).to(dtype)


sigmas = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1e-30, 1e30, 25 / 255]),
    st.integers(-3, 3),
    st.none(),
    st.text(max_size=3),
)

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.floats(-1, 2), max_size=3),
    st.dictionaries(st.sampled_from(["radial", "local", "structured", "x"]), st.floats(-1, 3)),
)
"""Option values of every kind: numbers (NaN, Inf), bools, None, strings, lists, dicts."""
