"""ts-defense: out-of-distribution typical-set (TS) training for robust image denoisers.

Layers, each importing only from those before it: :mod:`ts_defense.typical` (statistics),
:mod:`ts_defense.sampler` (the TS sampler), training (:mod:`~ts_defense.training`,
:mod:`~ts_defense.fit`, :mod:`~ts_defense.recipes`), attacks and their measurement
(:mod:`ts_defense.attacks`, :mod:`~ts_defense.robustness`, :mod:`~ts_defense.detect`), the
adapters for BasicSR and KAIR, and the application (:mod:`ts_defense.app`: command line, demo,
reports, audit, plots). Models and named pretrained weights are in :mod:`ts_defense.models`.
"""

from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .denoiser import Denoiser
from .families import FAMILIES, Family, Local, Radial, Structured, register_family
from .fit import History, PatchSampler, fit
from .sampler import TSConfig, TSDraw, TSSampler
from .sigma import SigmaSchedule
from .training import LOSSES, RankState, StepResult, TrainStep, rank_seed, ts_loss
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
    "History",
    "LOSSES",
    "PatchSampler",
    "RankState",
    "StepResult",
    "TrainStep",
    "atomic_save",
    "fit",
    "load_checkpoint",
    "rank_seed",
    "save_checkpoint",
    "ts_loss",
    "Denoiser",
    "FAMILIES",
    "Family",
    "Local",
    "Radial",
    "SigmaSchedule",
    "Structured",
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
