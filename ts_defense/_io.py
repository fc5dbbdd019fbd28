"""Files that may come from anyone: tensors and plain containers only, never code, both ways."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]{1,80})")


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


def safe_load(path: str | Path, what: str = "file") -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that say why.

    A missing file raises ``FileNotFoundError("<what> not found: ...")``; any other file that
    is not a plain tensor file (a pickle whose payload would run code, a torn or foreign file)
    raises a one-line ``ValueError("refusing to load ...")`` saying what the file is instead;
    nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (payloads), RuntimeError (torn zip), EOFError
        raise ValueError(
            f"refusing to load {path}: not a plain tensor {what} "
            f"({_what_it_is(path, err)}); nothing in it was executed"
        ) from err


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
