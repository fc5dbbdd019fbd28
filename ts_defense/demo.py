"""Deprecated: the demo moved to :mod:`ts_defense.app.demo`."""

from ._deprecated import moved_module

moved_module("ts_defense.demo", "ts_defense.app.demo")
