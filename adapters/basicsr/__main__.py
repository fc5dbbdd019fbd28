"""``python -m ts_defense.adapters.basicsr -opt options.yml [--auto_resume] [--debug] ...``

BasicSR's own ``train_pipeline`` with the TS types registered (importing the package did that,
and made BasicSR read the YAML with a safe loader that refuses aliases, repeated keys and deep
nesting); experiments are written under the current directory, as BasicSR's ``train.py`` writes
them under its repository root. The option file is read and its ``ts`` blocks checked
(:func:`~.checks.check_ts_options`) before BasicSR starts: a bad one exits 2 with one line.

The launcher parses BasicSR's flags itself, prefixes refused. BasicSR pastes ``--force_yml``
keys into code that it ``exec``s and ``eval``s list values, so each override is checked here
(plain ``a:b:c`` keys, literal values), applied to the options, and BasicSR gets a plain option
file and no ``--force_yml``. Resume states load with ``weights_only=True`` onto the CPU (BasicSR
1.4.2 maps them to CUDA), so ``--auto_resume`` also works without a GPU.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from ts_defense._io import safe_load

from .._launch import read_options, refuse
from .checks import check_ts_options

PROG = "python -m ts_defense.adapters.basicsr"
KEY_PATH = re.compile(r"[A-Za-z0-9_]+(:[A-Za-z0-9_]+)*")


def build_parser() -> argparse.ArgumentParser:
    """BasicSR 1.4.2's ``train.py`` flags, without abbreviations."""
    p = argparse.ArgumentParser(prog=PROG, allow_abbrev=False)
    p.add_argument("-opt", required=True, help="option YAML file")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    p.add_argument("--auto_resume", action="store_true", help="resume from the latest state")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--local_rank", type=int, default=0)
    p.add_argument("--force_yml", nargs="+", default=None, help="overrides, e.g. train:ema=0.9")
    return p


def _plain(value: object) -> bool:
    if isinstance(value, list):
        return all(map(_plain, value))
    return value is None or isinstance(value, (bool, int, float, str))


def literal(text: str) -> object:
    """An override value as BasicSR reads it (``~``/``none``, ``true``/``false``, ``!!float``,
    numbers, ``[lists]``, else a string), with ``ast.literal_eval`` where BasicSR ``eval``s."""
    low = text.lower()
    if text == "~" or low == "none":
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        value = ast.literal_eval(text.removeprefix("!!float").strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = None
    if text.startswith("!!float") and isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (int, float, list)) and not isinstance(value, bool) and _plain(value):
        return value
    if text.startswith(("[", "!!")):
        raise ValueError(f"value {text!r} is not a literal list or number")
    return text


def apply_overrides(opt: dict, entries: Sequence[str]) -> None:
    """Apply ``--force_yml`` entries ``key:path=value`` to ``opt``; errors name the entry."""
    for entry in entries:
        keys, sep, text = entry.partition("=")
        keys = keys.strip()
        if not sep or not KEY_PATH.fullmatch(keys):
            raise ValueError(f"--force_yml {entry!r}: expected key:path=value with plain keys")
        try:
            value = literal(text.strip())
        except ValueError as err:
            raise ValueError(f"--force_yml {entry!r}: {err}") from None
        *parents, last = keys.split(":")
        node = opt
        for depth, key in enumerate(parents, 1):
            if not isinstance(node.get(key), dict):  # BasicSR creates no new sections either
                raise ValueError(
                    f"--force_yml {entry!r}: no section {':'.join(keys.split(':')[:depth])}"
                )
            node = node[key]
        node[last] = value


def load_resume_state(opt: dict) -> dict | None:
    """BasicSR's ``load_resume_state`` without CUDA: the latest ``<iter>.state`` of the
    experiment (``--auto_resume``) or ``path.resume_state``, loaded onto the CPU with
    ``weights_only=True``; BasicSR then moves optimizer states to the parameters' device."""
    from basicsr.utils import check_resume

    path = None if opt["auto_resume"] else opt["path"].get("resume_state")
    folder = Path("experiments", opt["name"], "training_states")
    if opt["auto_resume"] and folder.is_dir():
        iters = [int(f.stem) for f in folder.glob("*.state") if f.stem.isdigit()]
        if iters:
            path = opt["path"]["resume_state"] = str(folder / f"{max(iters)}.state")
    if not path:
        return None
    state = safe_load(path, "training state")
    check_resume(opt, state["iter"])
    return state


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opt = read_options(args.opt, "-opt", "yaml")
        apply_overrides(opt, args.force_yml or [])
        check_ts_options(opt)  # BasicSR's parse_options checks again (a user's train.py)
    except (OSError, ValueError, TypeError) as err:
        refuse(parser, err)
    from basicsr import train

    train.load_resume_state = load_resume_state
    flags = ["--launcher", args.launcher, "--local_rank", str(args.local_rank)]
    flags += ["--auto_resume"] * args.auto_resume + ["--debug"] * args.debug
    with tempfile.TemporaryDirectory() as tmp:
        opt_file = args.opt
        if args.force_yml:  # BasicSR copies this file into the experiment: overrides included
            opt_file = os.path.join(tmp, os.path.basename(args.opt))
            with open(opt_file, "w") as f:
                yaml.safe_dump(_plain_dict(opt), f, sort_keys=False)
        sys.argv = [PROG, "-opt", opt_file, *flags]
        train.train_pipeline(os.getcwd())


def _plain_dict(value: object) -> object:
    """OrderedDicts (from the loader) as dicts, for ``yaml.safe_dump``."""
    if isinstance(value, dict):
        return {k: _plain_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_dict(v) for v in value]
    return value


if __name__ == "__main__":
    main()
