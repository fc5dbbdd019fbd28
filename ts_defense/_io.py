"""Loading files that may come from anyone: tensors and plain containers only, never code."""

from __future__ import annotations

from pathlib import Path

import torch


def safe_load(path: str | Path, what: str = "file") -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that say why.

    A missing file raises ``FileNotFoundError("<what> not found: ...")``; a file that is not a
    plain tensor file (a pickle whose payload would run code, a pickled class, a torn or foreign
    file) raises ``ValueError("refusing to load ...")`` — nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (payloads), RuntimeError (torn zip), EOFError
        raise ValueError(
            f"refusing to load {path}: not a plain tensor {what} ({type(err).__name__}: {err})"
        ) from err
