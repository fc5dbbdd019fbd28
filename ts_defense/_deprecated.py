"""Old import paths kept for a while: they warn (``DeprecationWarning``) and hand out the
objects of the new ones."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Mapping
from types import ModuleType
from typing import Any


def _warn(old: str, new: str, shim: str) -> None:
    """Warn that ``old`` moved to ``new``, on behalf of the code that used the old path: the
    first frame outside this module, the shim module ``shim`` and the import machinery (so that
    Python's default filters show it to a script or a notebook)."""
    level, frame = 1, sys._getframe(0)
    while frame is not None:
        machinery = frame.f_code.co_filename.startswith("<frozen importlib")
        if not machinery and frame.f_globals.get("__name__") not in (__name__, shim):
            break
        level += not machinery  # warnings does not count the import machinery's frames
        frame = frame.f_back
    warnings.warn(
        f"{old} moved to {new}; import it from there (the old path will be removed)",
        DeprecationWarning,
        stacklevel=level,
    )


def moved_module(old: str, new: str, submodules: tuple[str, ...] = ()) -> ModuleType:
    """Warn, then make the module ``old`` (and its ``submodules``) the module ``new``: the
    old path gives the very same objects, so patching one patches the other."""
    _warn(old, new, old)
    module = importlib.import_module(new)
    sys.modules[old] = module
    for sub in submodules:
        sys.modules[f"{old}.{sub}"] = importlib.import_module(f"{new}.{sub}")
    return module


def moved_attribute(old: str, name: str, moved: Mapping[str, str]) -> Any:
    """For a module ``__getattr__``: the attribute ``name`` from where ``moved`` says it went
    (``"module"``, or ``"module:new_name"`` for a renamed one), with a warning; an
    AttributeError for any other name."""
    if name not in moved:
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    module, _, attr = moved[name].partition(":")
    attr = attr or name
    _warn(f"{old}.{name}", f"{module}.{attr}", old)
    return getattr(importlib.import_module(module), attr)
