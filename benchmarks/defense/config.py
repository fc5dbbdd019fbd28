"""What the defense benchmark runs: the training variants, the experiment sizes (full and
smoke), the white-box attacks, the models of the budget curves and the parts of the command."""

from __future__ import annotations

from dataclasses import dataclass

from ts_defense.attacks import DenoisingPGD, L2DenoisingPGD, ObsAtk
from ts_defense.models import SmallDnCNN

SIGMA = 25 / 255
HAT = "hat"  # not a TS option set: the library's recipe below
HAT_RECIPE = {"recipe": "hat", "adversarial": {"threat": "l2"}, "config": {"sigma": SIGMA}}

# name -> TSConfig options (sigma is added), or HAT. Family parameters go in nested blocks.
LOWFREQ = {"weight": 1.0, "corr_scale": 12, "corr_mix": (0.2, 0.6)}
WIDE = {"band": (0.1, 1.0), "sides": "above"}
ATTACK = {"band": (0.1, 0.25), "sides": "above"}
VARIANTS: dict[str, dict | str] = {
    "gaussian": {"p_ood": 0.0},
    "blind": {"sigma": (15 / 255, 35 / 255), "p_ood": 0.0},
    "ts": {},  # the library default (p_ood 0.2 since issue 5's evidence)
    HAT: HAT,
    "ts-p0.5": {"p_ood": 0.5},  # the first default
    "ts-p0.8": {"p_ood": 0.8},
    "ts-lowfreq": {"families": {"structured": LOWFREQ}, "p_ood": 0.8},
    "ts-lowfreq-radial": {"families": {"structured": LOWFREQ, "radial": 1.0}, "p_ood": 0.8},
    # ablation of the default: one family at a time, the band, the OOD share
    "ts-radial": {"families": {"radial": 1.0}},
    "ts-local": {"families": {"local": 1.0}},
    "ts-structured": {"families": {"structured": 1.0}},
    "ts-wideband": {"families": {"radial": WIDE, "local": WIDE, "structured": 1.0}},
    # the band where the attacks land: y - x of PGD 8/255 deviates by +0.12..+0.21
    "ts-attackband": {
        "families": {"radial": ATTACK, "local": ATTACK, "structured": 1.0},
        "p_ood": 0.5,
    },
}


@dataclass(frozen=True)
class Sizes(SmallDnCNN):
    """Experiment sizes (defaults: the full run; ``SMOKE``: seconds). The small DnCNN trained
    from scratch and its training length are the library's ``SmallDnCNN``."""

    finetune_steps: int = 100
    finetune_batch: int = 8
    finetune_lr: float = 1e-4
    test_images: int = 6
    test_size: int = 128
    finetune_test: tuple[int, int] = (4, 96)  # images, crop: DnCNN-17 attacks cost 8x more
    detect_images: int = 12
    detect_size: int = 96
    detect_tile: int = 32
    attack_steps: int = 10
    curve_budgets: tuple[float, ...] = (0, 2, 4, 8, 12)  # x 1/255
    bm3d: bool = True


SMOKE = Sizes(
    steps=2,
    finetune_steps=1,
    finetune_batch=2,
    depth=3,
    features=8,
    batch_size=4,
    patch_size=16,
    test_images=2,
    test_size=32,
    finetune_test=(1, 32),
    detect_images=2,
    detect_size=32,
    detect_tile=16,
    attack_steps=2,
    curve_budgets=(0, 8),
    bm3d=False,
)

# (name, factory(model, steps) -> attack); L2 budgets: rho 0.2 of the noise norm and ObsAtk
# RMS 5/255 are the same L2 radius; alpha = 2.5 / steps of the radius (explicit: the library
# default alpha scales with eps, which under-steps L2 attacks).
ATTACKS = {
    "pgd3": lambda den, steps: DenoisingPGD(den, SIGMA, eps=3 / 255, steps=max(1, steps // 2)),
    "pgd8": lambda den, steps: DenoisingPGD(den, SIGMA, eps=8 / 255, steps=steps),
    "l2": lambda den, steps: L2DenoisingPGD(den, SIGMA, rho=0.2, steps=steps, alpha=2.5 / steps),
    "obsatk": lambda den, steps: ObsAtk(den, SIGMA, eps=5 / 255, steps=steps, alpha=2.5 / steps),
}

# one model of each kind in the budget curves (seed 0), under the names of the transfer records
CURVE_MODELS = ("gaussian", "ts", HAT, "drunet", "swinir", "unfolded", "pnp-hqs", "dncnn-s-25",
                "finetune-ts")  # fmt: skip

PARTS = ("scratch", "finetune", "zoo", "detect", "transfer", "protocol", "curves", "cost")
