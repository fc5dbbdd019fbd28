"""Deprecated: the attack and transfer reports moved to :mod:`ts_defense.app.report`."""

from .._deprecated import moved_module

moved_module("ts_defense.attacks.report", "ts_defense.app.report")
