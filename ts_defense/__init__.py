"""ts-defense: out-of-distribution typical-set (TS) training for robust image denoisers.

Layers (each usable alone): :mod:`ts_defense.typical` (statistics), :mod:`ts_defense.sampler`
(the TS sampler); training, attacks, adapters and the command line build on them.
"""

from .denoiser import Denoiser
from .families import FAMILIES, register_family
from .sampler import TSConfig, TSDraw, TSSampler
from .typical import (
    chebyshev_bound,
    deviation,
    entropy_rate,
    is_typical,
    laurent_massart_bound,
    shell_radii,
    window_deviation,
)

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "FAMILIES",
    "TSConfig",
    "TSDraw",
    "TSSampler",
    "chebyshev_bound",
    "deviation",
    "entropy_rate",
    "is_typical",
    "laurent_massart_bound",
    "register_family",
    "shell_radii",
    "window_deviation",
]
