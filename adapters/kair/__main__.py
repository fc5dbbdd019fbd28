"""``python -m ts_defense.adapters.kair --kair-root PATH --opt options.json [--max-steps N]``

Reads the option file as KAIR does (JSON with ``//`` comments; repeated keys and deep nesting
refused) and checks its ``ts`` blocks (:func:`~ts_defense.adapters.kair.check_options`): a bad
file, a wrong flag or a KAIR checkout that cannot be imported exits 2 with one line, before KAIR
starts. Then installs the TS models and datasets into KAIR's factories and runs KAIR's own
``main_train_psnr.main`` (its other flags pass through). Relative paths in the options are
resolved from the current directory, as when KAIR is run from its folder.
"""

from __future__ import annotations

import argparse
import sys

from ts_defense._checks import check_positive

from .._launch import read_options, refuse
from . import TrainingFinished, check_options, install, kair_root

REQUIREMENTS = "requirement.txt"  # KAIR's list of what it imports (opencv-python, hdf5storage...)


def main(argv: list[str] | None = None) -> None:
    # allow_abbrev=False: KAIR's own flags pass through, never taken for a prefix of ours
    parser = argparse.ArgumentParser(prog="python -m ts_defense.adapters.kair", allow_abbrev=False)
    parser.add_argument("--kair-root", required=True, help="folder of a KAIR checkout")
    parser.add_argument("--opt", required=True, help="KAIR option file (JSON with // comments)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.max_steps is not None:
            check_positive("--max-steps", args.max_steps, integer=True)
        root = kair_root(args.kair_root)
        check_options(read_options(args.opt, "--opt", "json"))
        try:
            install(root, max_steps=args.max_steps)
            import main_train_psnr
        except ImportError as err:
            raise ImportError(
                f"KAIR at {root} cannot be imported ({err}): pip install -r {root / REQUIREMENTS}"
            ) from err
    except (ValueError, TypeError, OSError, ImportError) as err:
        refuse(parser, err)

    sys.argv = ["main_train_psnr.py", "--opt", args.opt, *rest]
    try:
        main_train_psnr.main()
    except TrainingFinished as done:
        print(f"TS training finished: {done}")


if __name__ == "__main__":
    main()
