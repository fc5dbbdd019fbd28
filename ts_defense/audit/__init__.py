"""Deprecated: the audit moved to :mod:`ts_defense.app.audit`."""

from .._deprecated import moved_module

moved_module("ts_defense.audit", "ts_defense.app.audit", ("images", "models", "page", "run"))
