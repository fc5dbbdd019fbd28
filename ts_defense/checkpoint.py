"""Checkpoints that resume TS training bit for bit, written atomically.

A checkpoint holds the model, the optimizer, the sampler's random state and any extra state
(step counter, history, data generator). It is written to a temporary file in the same folder
and moved into place with ``os.replace``, so an interrupted write never replaces a good
checkpoint. It loads with ``weights_only=True``.

With Accelerate, :class:`~ts_defense.TrainStep` registers the sampler for
``accelerator.save_state`` / ``load_state`` instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import safe_load
from .sampler import TSSampler

FORMAT = "ts-defense-checkpoint-1"


def atomic_save(obj: object, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    sampler: TSSampler | None = None,
    **extra: Any,
) -> Path:
    """Write model, optimizer and sampler state (plus ``extra`` plain values) atomically.

    Refuses (``ValueError``) a model whose weights or buffers hold NaN or Inf: a checkpoint on
    disk is always one a run can resume from.
    """
    weights = model.state_dict()
    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"model state {key!r} holds NaN or Inf: refusing to save {path}")
    state: dict[str, Any] = {"format": FORMAT, "model": weights, "extra": extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if sampler is not None:
        state["sampler"] = sampler.state_dict()
    return atomic_save(state, path)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    sampler: TSSampler | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote (``weights_only=True``); return ``extra``."""
    path = Path(path)
    state = safe_load(path, "checkpoint")
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ts-defense checkpoint (format {FORMAT!r})")
    for name, obj in (("optimizer", optimizer), ("sampler", sampler)):
        if obj is not None and name not in state:
            raise ValueError(f"{path} holds no {name} state")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if sampler is not None:
        sampler.load_state_dict(state["sampler"])
    return dict(state["extra"])
