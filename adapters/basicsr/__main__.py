"""``python -m ts_defense.adapters.basicsr -opt options.yml [--auto_resume] [--debug] ...``

BasicSR's own ``train_pipeline`` with the TS types registered (importing the package did that);
experiments are written under the current directory, as BasicSR's ``train.py`` writes them
under its repository root.
"""

from __future__ import annotations

import os


def main() -> None:
    from basicsr.train import train_pipeline

    train_pipeline(os.getcwd())


if __name__ == "__main__":
    main()
