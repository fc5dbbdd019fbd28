"""Deprecated: the named models moved to :mod:`ts_defense.models.zoo`."""

from .._deprecated import moved_module

moved_module("ts_defense.attacks.zoo", "ts_defense.models.zoo")
