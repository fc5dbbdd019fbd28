"""Files that may come from anyone: tensors and plain containers only, never code, both ways."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]{1,80})")
_SAFETENSORS_HEADER = 100_000_000  # the format's own limit on its JSON header, in bytes


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then the JSON header."""
    return head[8:9] == b"{" and 1 < int.from_bytes(head[:8], "little") <= _SAFETENSORS_HEADER


def _load_safetensors(path: Path, what: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file (a format that holds no code) on the CPU."""
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{path} is a safetensors {what}: reading it needs the safetensors package "
            f"(pip install safetensors)",
            name="safetensors",
        ) from err
    try:
        return load_file(path, device="cpu")
    except Exception as err:  # SafetensorError: a torn header or data shorter than declared
        raise ValueError(
            f"refusing to load {path}: not a plain tensor {what} (a truncated or damaged "
            f"safetensors file); nothing in it was executed"
        ) from err


def _non_finite(obj: object) -> str | None:
    """The key of the first floating tensor in ``obj`` holding NaN or Inf, else None (walked
    without recursion: a hostile file may nest lists deeply)."""
    stack: list[tuple[str, object]] = [("", obj)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, Tensor):
            floating = item.is_floating_point() or item.is_complex()
            if floating and not bool(item.isfinite().all()):
                return key or "the tensor"
            continue
        pairs = item.items() if isinstance(item, Mapping) else ()
        if isinstance(item, (list, tuple)):
            pairs = enumerate(item)
        stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in reversed(list(pairs)))
    return None


def _what_it_is(path: Path, err: Exception) -> str:
    """One line on what a refused file is, from its first bytes and the error (never its text)."""
    named = _GLOBAL.search(str(err))
    if named:
        return f"a pickle that would call {named.group(1)}, i.e. code, not plain tensors"
    if "Weights only load failed" in str(err):
        return "a pickle holding objects other than tensors and plain containers"
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        return "a truncated, damaged or foreign zip file"
    if head[:1] == b"\x80":
        return "a truncated or damaged pickle"
    return "neither a torch file nor a pickle"


def safe_load(path: str | Path, what: str = "file", finite: bool = False) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that say why.

    A safetensors file (whatever its name) is read with the ``safetensors`` package, imported
    only then. A missing file raises ``FileNotFoundError("<what> not found: ...")``; any other
    file that is not a plain tensor file (a pickle whose payload would run code, a torn or
    foreign file) raises a one-line ``ValueError("refusing to load ...")`` saying what the file
    is instead; nothing in it is executed. ``finite`` (weights) refuses a floating tensor holding
    NaN or Inf, naming the file and the tensor's key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    if _is_safetensors(head):
        loaded: object = _load_safetensors(path, what)
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError (payloads), RuntimeError (torn zip), EOFError
            raise ValueError(
                f"refusing to load {path}: not a plain tensor {what} "
                f"({_what_it_is(path, err)}); nothing in it was executed"
            ) from err
    key = _non_finite(loaded) if finite else None
    if key is not None:
        raise ValueError(
            f"refusing to load {path}: {what} tensor {key!r} holds NaN or Inf (weights of a "
            f"diverged or damaged run)"
        )
    return loaded


def plain(obj: object, name: str) -> object:
    """``obj`` with numpy numbers, numpy arrays and paths turned into what :func:`safe_load` reads.

    Keeps tensors, numbers, strings, bytes, None, dtypes, devices, and lists, tuples and dicts of
    them; anything else is a ``TypeError`` naming ``name`` (and the key inside it).
    """
    if type(obj).__module__ == "numpy":  # numpy scalars (float64 is a float!) and arrays
        return plain(obj.item(), name) if getattr(obj, "ndim", 1) == 0 else torch.as_tensor(obj)
    if obj is None or isinstance(obj, (Tensor, bool, torch.dtype, torch.device)):
        return obj
    for kind in (str, bytes, int, float, complex):  # subclasses (enums...) become plain
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {plain(k, name): plain(v, f"{name}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{name}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{name} is a {type(obj).__name__}: a saved state holds only tensors, numbers, strings, "
        f"lists and dicts"
    )
