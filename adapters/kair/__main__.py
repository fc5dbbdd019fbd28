"""``python -m ts_defense.adapters.kair --kair-root PATH --opt options.json [--max-steps N]``

Installs the TS models and datasets into KAIR's factories and runs KAIR's own
``main_train_psnr.main`` (its other flags pass through). Relative paths in the options are
resolved from the current directory, as when KAIR is run from its folder.
"""

from __future__ import annotations

import argparse
import sys

from ts_defense._checks import check_positive

from . import TrainingFinished, install


def main(argv: list[str] | None = None) -> None:
    # allow_abbrev=False: KAIR's own flags pass through, never taken for a prefix of ours
    parser = argparse.ArgumentParser(prog="python -m ts_defense.adapters.kair", allow_abbrev=False)
    parser.add_argument("--kair-root", required=True, help="folder of a KAIR checkout")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.max_steps is not None:
            check_positive("--max-steps", args.max_steps, integer=True)
        install(args.kair_root, max_steps=args.max_steps)
    except (ValueError, OSError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    import main_train_psnr

    sys.argv = ["main_train_psnr.py", *rest]
    try:
        main_train_psnr.main()
    except TrainingFinished as done:
        print(f"TS training finished: {done}")


if __name__ == "__main__":
    main()
