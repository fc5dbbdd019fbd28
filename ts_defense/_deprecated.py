"""Old import paths kept for a while: they warn (``DeprecationWarning``) and hand out the
objects of the new ones."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Any


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; import it from there (the old path will be removed)",
        DeprecationWarning,
        stacklevel=3,
    )


def moved_module(old: str, new: str, submodules: tuple[str, ...] = ()) -> ModuleType:
    """Warn, then make the module ``old`` (and its ``submodules``) the module ``new``: the
    old path gives the very same objects, so patching one patches the other."""
    _warn(old, new)
    module = importlib.import_module(new)
    sys.modules[old] = module
    for sub in submodules:
        sys.modules[f"{old}.{sub}"] = importlib.import_module(f"{new}.{sub}")
    return module


def moved_attribute(old: str, name: str, moved: Mapping[str, str]) -> Any:
    """For a module ``__getattr__``: the attribute ``name`` from the module ``moved`` says it
    went to, with a warning (an AttributeError for any other name)."""
    if name not in moved:
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    _warn(f"{old}.{name}", f"{moved[name]}.{name}")
    return getattr(importlib.import_module(moved[name]), name)
