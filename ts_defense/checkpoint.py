"""Checkpoints that resume TS training bit for bit, written atomically.

A checkpoint holds the model, the optimizer, the sampler's random state and any extra state
(step counter, history, data generator). It is written to a temporary file in the same folder
and moved into place with ``os.replace``, so an interrupted write never replaces a good
checkpoint. It loads with ``weights_only=True``.

With Accelerate, :class:`~ts_defense.TrainStep` registers the sampler for
``accelerator.save_state`` / ``load_state`` instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import safe_load
from .sampler import TSSampler

FORMAT = "ts-defense-checkpoint-1"


def _abandoned(tmp: Path, stem: str) -> bool:
    """Whether ``tmp`` (``<stem><pid>.<random>.tmp``) was left by a writer that no longer runs."""
    pid = tmp.name[len(stem) :].split(".")[0]
    if not pid.isdigit():
        return True  # an older naming scheme
    if int(pid) == os.getpid():
        return False  # another thread of this process may be writing it
    if os.name != "posix":  # no harmless probe (os.kill ends the process): go by age
        return time.time() - tmp.stat().st_mtime > 3600
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs under another user
        return False
    return False


def _write_error(path: Path, err: BaseException) -> OSError:
    cause = next((e for e in (err, err.__context__) if isinstance(e, OSError)), None)
    reason = cause.strerror if cause is not None and cause.strerror else str(err).splitlines()[0]
    out = OSError(f"could not write {path} ({reason}); the file already there, if any, is intact")
    out.errno = cause.errno if cause is not None else None
    return out


def check_file_path(name: str, path: object) -> Path:
    """Require a file path: a non-empty ``str`` or ``PathLike`` that is not a directory."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path, got {type(path).__name__}")
    if not os.fspath(path):
        raise ValueError(f"{name} must be a file path, got {path!r}")
    if Path(path).is_dir():
        raise ValueError(f"{name}={str(path)!r} is a directory, not a file path")
    return Path(path)


def atomic_save(obj: object, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then ``os.replace``.

    The file gets the permissions the umask gives new files. Temporary files of ``path`` left by
    writers that were killed mid-write are removed first. A failed write (full disk, read-only
    folder) raises a one-line ``OSError`` naming ``path`` and leaves ``path`` as it was.
    """
    path = check_file_path("path", path)
    stem = f".{path.name}."
    tmp = path.parent / f"{stem}{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(glob.escape(stem) + "*.tmp"):
            if _abandoned(old, stem):
                old.unlink(missing_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)):  # torch wraps a full disk in RuntimeError
            raise _write_error(path, err) from err
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
