"""Deprecated: the sampler report moved to :mod:`ts_defense.app.report` (its table is
``sampler_table`` there) and its plot to :mod:`ts_defense.app.plots`."""

from ._deprecated import moved_attribute

_MOVED = {
    "family_statistics": "ts_defense.app.report",
    "sampler_report": "ts_defense.app.report",
    "format_table": "ts_defense.app.report:sampler_table",
    "plot_statistics": "ts_defense.app.plots",
}


def __getattr__(name: str) -> object:
    return moved_attribute(__name__, name, _MOVED)
