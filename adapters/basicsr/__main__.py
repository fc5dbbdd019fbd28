"""``python -m ts_defense.adapters.basicsr -opt options.yml [--auto_resume] [--debug] ...``

BasicSR's own ``train_pipeline`` with the TS types registered (importing the package did that,
and made BasicSR read the YAML with a safe loader); experiments are written under the current
directory, as BasicSR's ``train.py`` writes them under its repository root.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

KEY_PATH = re.compile(r"[A-Za-z0-9_]+(:[A-Za-z0-9_]+)*")


def check_force_yml(argv: Sequence[str]) -> None:
    """Refuse ``--force_yml`` entries whose key path is not plain ``a:b:c``: BasicSR pastes the
    keys into a string that it ``exec``s, so a crafted key would run code."""
    entries, inside = [], False
    for arg in argv:
        if arg == "--force_yml":
            inside = True
        elif arg.startswith("-"):
            inside = False
        elif inside:
            entries.append(arg)
    for entry in entries:
        keys, sep, _ = entry.partition("=")
        if not sep or not KEY_PATH.fullmatch(keys.strip()):
            raise SystemExit(f"--force_yml {entry!r}: expected key:path=value with plain keys")


def main() -> None:
    from basicsr.train import train_pipeline

    check_force_yml(sys.argv[1:])
    train_pipeline(os.getcwd())


if __name__ == "__main__":
    main()
