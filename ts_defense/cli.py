"""Deprecated: the command line moved to :mod:`ts_defense.app.cli`."""

from ._deprecated import moved_module

_cli = moved_module("ts_defense.cli", "ts_defense.app.cli")

if __name__ == "__main__":
    raise SystemExit(_cli.main())
