"""Report folders that never tear: checked before anything is computed, written as a unit.

Every command (``demo``, ``sampler-report``, ``attack``, ``transfer``, ``evaluate``,
``compare``) writes its report set through :func:`write_set`:

- :func:`check_out` refuses, before the work starts, a folder that cannot take a report: an
  empty path, a file, the current folder or one above it, a folder inside the package's own
  source, a folder holding sub-folders or links, and one where nothing can be written (no
  permission, a read-only tree) — one line naming the option.
- The set is written into a new folder beside the target (``.NAME.new-*``), each file through a
  temporary file and ``os.replace``; plain files of the old folder that the new set does not
  replace (another command's report) are hard-linked into it; then the new folder takes the
  target's place in one step (Linux: ``renameat2(RENAME_EXCHANGE)`` swaps the two folders; where
  that call is missing the old folder is renamed aside first, and a kill between the two renames
  leaves it whole as ``.NAME.old-*``, put back by the next write). A kill at any moment leaves
  the old report or the new one, whole; the next write removes what a killed one left.
- A failure while writing (or rendering) keeps what was computed: the files are written to a
  fallback folder in the temporary directory, and the error (:class:`ReportWriteError`, one
  line) says where.

JSON is written strict (:func:`json_text`): never ``NaN`` or ``Infinity``.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

PACKAGE = Path(__file__).resolve().parents[1]  # ts_defense/


def _adapters() -> Path:
    """Where ``ts_defense.adapters`` lives: inside the package when installed from a wheel,
    the checkout's top-level ``adapters/`` in an editable install."""
    spec = importlib.util.find_spec("ts_defense.adapters")
    locations = spec.submodule_search_locations if spec is not None else None
    return Path(next(iter(locations))).resolve() if locations else PACKAGE / "adapters"


SOURCES = (PACKAGE, _adapters())


class Savable(Protocol):
    """A matplotlib Figure, or anything else that saves itself into a binary file."""

    def savefig(self, fname: Any, **options: Any) -> object: ...


Content = str | bytes | Savable


class ReportWriteError(OSError):
    """The report could not be written where asked; the message names the fallback folder."""


def json_text(data: object, indent: int | None = 2) -> str:
    """Strict JSON (``allow_nan=False``) ending in a newline (``indent=None``: one line, for
    JSON-lines files); non-finite numbers become ``null`` (none should reach a report: PSNR is
    capped, means of finite values are finite)."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False, default=str) + "\n"


def _finite(obj: object) -> object:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _probe(folder: Path, option: str, shown: str) -> None:
    """Create and remove a file in ``folder``: the one test that also holds for root, ACLs
    and read-only mounts."""
    try:
        fd, name = tempfile.mkstemp(prefix=".ts-defense-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{option} {shown}: cannot write in {folder} ({reason})") from err


def check_out(path: str | os.PathLike, option: str = "out_dir") -> Path:
    """``path`` as a Path if a report folder can be written there; else a one-line ValueError
    naming ``option`` (``--out`` on the command line). Call it before computing."""
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(
            f"{option} {text!r}: give a folder name (an empty path would write into the current "
            f"folder)"
        )
    out = Path(text)
    shown = str(out)
    resolved = out.resolve()
    for root in SOURCES:
        if resolved == root or root in resolved.parents:
            raise ValueError(
                f"{option} {shown} is inside the package's own source folder {root}: write "
                f"reports elsewhere"
            )
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ValueError(
            f"{option} {shown} is the current folder or holds it: a report is written as a "
            f"folder of its own, give one (e.g. reports/run1)"
        )
    if out.is_symlink():
        raise ValueError(f"{option} {shown} is a link: give the folder itself ({resolved})")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {shown} exists and is not a folder: give a folder")
    if out.is_dir():
        others = [p.name for p in out.iterdir() if p.is_symlink() or not p.is_file()]
        if others:
            raise ValueError(
                f"{option} {shown} holds sub-folders or links ({', '.join(sorted(others)[:3])}):"
                f" a report replaces its folder whole, give a new or empty folder or one a report"
                f" was written to"
            )
        _probe(out, option, shown)
        _probe(out.parent, option, shown)
        return out
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{option} {shown}: {ancestor} is a file, not a folder")
    _probe(ancestor, option, shown)
    return out


def write_file(path: str | os.PathLike, content: Content) -> Path:
    """Write one file atomically: a temporary file beside it, flushed, then ``os.replace``.
    A figure is saved in the format of the file's suffix at its own dpi."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                f.write(content)
            else:
                content.savefig(f, format=path.suffix[1:] or "png", dpi="figure")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_set(
    out: str | os.PathLike,
    files: Mapping[str, Content],
    option: str = "out_dir",
    what: str = "report",
) -> dict[str, Path]:
    """Write the report set ``files`` (file name -> text, bytes or figure) into the folder
    ``out`` as one unit (see the module notes); return the paths written.

    A failure while writing is a :class:`ReportWriteError` naming the fallback folder that
    holds what could be written."""
    for name in files:
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"report file names are plain names, got {name!r}")
    out = check_out(out, option)
    try:
        _replace_folder(out, files)
    except Exception as err:
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        raise ReportWriteError(
            f"could not write the {what} to {out} ({reason}); {_fallback(files, what)}"
        ) from err
    return {name: out / name for name in files}


def _replace_folder(out: Path, files: Mapping[str, Content]) -> None:
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    _tidy(out)
    stage = parent / f".{out.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        for name, content in files.items():
            write_file(stage / name, content)
        if not out.exists():
            os.rename(stage, out)  # atomic; replaces an empty folder made meanwhile
            return
        for old in out.iterdir():
            if old.name in files or old.name.endswith(".tmp"):
                continue
            if old.is_symlink() or not old.is_file():  # appeared after check_out: keep it
                raise OSError(errno.ENOTEMPTY, f"{old} appeared in the report folder", str(out))
            try:
                os.link(old, stage / old.name)
            except OSError:
                shutil.copy2(old, stage / old.name)
        shutil.copymode(out, stage)  # the folder keeps the permissions it had
        if _exchange(stage, out):  # stage now holds the old report
            shutil.rmtree(stage, ignore_errors=True)
            return
        aside = parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, aside)
        os.rename(stage, out)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where missing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False  # old kernel or a file system without the call
    raise OSError(code, os.strerror(code), str(b))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _tidy(out: Path) -> None:
    """Remove what killed writes of ``out`` left beside it; put back an old report left aside."""
    for left in out.parent.iterdir():
        if not left.name.startswith(f".{out.name}.") or not left.is_dir():
            continue
        kind, _, rest = left.name[len(out.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("new", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            os.rename(left, out)
        else:
            shutil.rmtree(left, ignore_errors=True)


def _fallback(files: Mapping[str, Content], what: str) -> str:
    """Write what can be written of ``files`` into a new temporary folder; say where."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"ts-defense-{what.replace(' ', '-')}-"))
    except OSError as err:
        return f"could not keep it elsewhere either ({err.strerror})"
    saved, failed = [], []
    for name, content in files.items():
        try:
            write_file(folder / name, content)
            saved.append(name)
        except Exception:
            failed.append(name)
    if not saved:
        return f"nothing could be kept either (tried {folder})"
    lost = f" (not {', '.join(failed)})" if failed else ""
    return f"what was computed is in {folder}{lost}"
