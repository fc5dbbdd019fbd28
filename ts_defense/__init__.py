"""ts-defense: out-of-distribution typical-set (TS) training for robust image denoisers.

The folders are the layers, each importing only from those before it: :mod:`.noise`
(typical-set statistics, sigma schedules, noise families, the TS sampler), :mod:`.models` (the
:class:`Denoiser` convention, DnCNN and the other definitions, the named pretrained models),
:mod:`.attacks` (torchattacks-compatible attacks on denoisers), :mod:`.training` (the TS step,
adversarial training, recipes, ``fit``, checkpoints), :mod:`.evaluation` (metrics, transfer,
budget curves, typicality and detection), the adapters for BasicSR and KAIR, and :mod:`.app`
(command line, demo, reports, audit, plots). Private helpers live at the root.
"""

from .models.denoiser import Denoiser
from .noise.families import FAMILIES, Family, Local, Radial, Structured, register_family
from .noise.sampler import TSConfig, TSDraw, TSSampler
from .noise.sigma import SigmaSchedule
from .noise.typical import (
    chebyshev_bound,
    deviation,
    entropy_rate,
    is_typical,
    laurent_massart_bound,
    shell_radii,
    window_deviation,
)
from .training.checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .training.fit import History, PatchSampler, fit
from .training.step import LOSSES, RankState, StepResult, TrainStep, rank_seed, ts_loss

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
