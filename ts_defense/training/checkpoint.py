"""Checkpoints that resume TS training bit for bit, written atomically, checked on load.

A checkpoint holds the model, the optimizer, the sampler's random state and any extra state
(step counter, history, data generator), plus a SHA-256 digest of all of it. It is written to a
temporary file in the same folder and moved into place with ``os.replace``, so an interrupted
write never replaces a good checkpoint. It loads with ``weights_only=True`` and only if the
digest matches (a damaged file is refused, not half-loaded).

With Accelerate, :class:`~ts_defense.TrainStep` registers the sampler for
``accelerator.save_state`` / ``load_state`` instead.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_type
from .._io import plain, safe_load
from ..noise.sampler import TSSampler

FORMAT = "ts-defense-checkpoint-2"


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


def digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of everything in ``state`` but its ``"digest"``: structure, values, tensor bytes."""
    h = hashlib.sha256()

    def feed(obj: object) -> None:
        if isinstance(obj, Tensor):
            flat = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
            h.update(flat.view(torch.uint8).numpy())
        elif isinstance(obj, Mapping):
            h.update(f"D{len(obj)}".encode())
            for key, value in obj.items():
                feed(key)
                feed(value)
        elif isinstance(obj, (list, tuple)):
            h.update(f"L{len(obj)}".encode())
            for value in obj:
                feed(value)
        else:
            h.update(f"{type(obj).__name__}:{obj!r};".encode())

    feed({k: v for k, v in state.items() if k != "digest"})
    return h.hexdigest()


def _check_parts(model: object, optimizer: object, sampler: object) -> None:
    check_type("model", model, nn.Module, "an nn.Module")
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch Optimizer", optional=True)
    check_type("sampler", sampler, TSSampler, "a TSSampler", optional=True)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    sampler: TSSampler | None = None,
    **extra: Any,
) -> Path:
    """Write model, optimizer and sampler state (plus ``extra`` plain values) atomically.

    numpy numbers and arrays and paths (in ``extra`` or the optimizer's settings) are stored as
    Python numbers, tensors and strings, so that the file loads with ``weights_only=True``; other
    objects are a ``TypeError``. Refuses (``ValueError``) a model whose weights or buffers hold
    NaN or Inf: a checkpoint on disk is always one a run can resume from.
    """
    _check_parts(model, optimizer, sampler)
    weights = model.state_dict()
    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"model state {key!r} holds NaN or Inf: refusing to save {path}")
    state: dict[str, Any] = {"format": FORMAT, "model": weights, "extra": plain(extra, "extra")}
    if optimizer is not None:
        state["optimizer"] = plain(optimizer.state_dict(), "optimizer state")
    if sampler is not None:
        state["sampler"] = sampler.state_dict()
    state["digest"] = digest(state)
    return atomic_save(state, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents :func:`save_checkpoint` wrote (``weights_only=True``), digest checked: a file
    whose digest does not match its contents is refused (``ValueError``)."""
    path = Path(path)
    state = safe_load(path, "checkpoint")
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ts-defense checkpoint (format {FORMAT!r})")
    if state.get("digest") != digest(state):
        raise ValueError(
            f"refusing to load {path}: its contents do not match their digest (the file was "
            f"damaged or altered); nothing was restored"
        )
    return dict(state)


def restore_checkpoint(
    state: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    sampler: TSSampler | None = None,
    strict: bool = True,
    path: str | Path = "checkpoint",
) -> dict[str, Any]:
    """Load what :func:`read_checkpoint` read into the parts given; return ``extra``.

    ``strict``: the model's keys must match and the sampler's TS configuration must be the one
    it was saved with (``strict=False`` loads matching weights and resumes the stream under a
    new config). ``path`` names the file in messages.
    """
    _check_parts(model, optimizer, sampler)
    for name, obj in (("optimizer", optimizer), ("sampler", sampler)):
        if obj is not None and name not in state:
            raise ValueError(f"{path} holds no {name} state")
    if sampler is not None:  # first: it checks everything before it changes anything
        sampler.load_state_dict(state["sampler"], strict=strict)
    try:
        model.load_state_dict(state["model"], strict=strict)
    except RuntimeError as err:  # torch lists missing and unexpected keys over many lines
        reason = " ".join(str(err).split())
        raise ValueError(f"{path} holds weights of another model: {reason}") from err
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return dict(state["extra"])


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    sampler: TSSampler | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote (:func:`read_checkpoint`, then
    :func:`restore_checkpoint`); return ``extra``."""
    _check_parts(model, optimizer, sampler)
    return restore_checkpoint(read_checkpoint(path), model, optimizer, sampler, strict, path)
