"""Does TS training make denoisers robust? The evidence of issue 5, as JSON lines and tables.

    python benchmarks/bench_defense.py --part scratch --variants gaussian ts --seeds 0 1
    python benchmarks/bench_defense.py --part finetune --variants gaussian ts hat
    python benchmarks/bench_defense.py --part detect
    python benchmarks/bench_defense.py --part transfer      # after scratch/finetune (weights)
    python benchmarks/bench_defense.py --part cost          # CPU time per training step
    python benchmarks/bench_defense.py --table RESULTS.jsonl  # Markdown tables of a results file
    python benchmarks/bench_defense.py --smoke               # every part at toy sizes (CI)

Parts (each appends one JSON line per model to ``--out`` as soon as it is measured):
``scratch``: small DnCNNs (no BN, residual) trained from scratch on the eight bundled pictures
per variant (``VARIANTS``: Gaussian, blind, TS settings, HAT); ``finetune``: the pretrained
DnCNN-S-25 fine-tuned per variant; both evaluated on Set12 crops by white-box attacks
(denoising-PGD L-inf 3/255 x 5 steps and 8/255 x 10 steps, L2-denoising-PGD, ObsAtk) with the
pass-through PSNR and gain at 8/255 (``ts_defense.robustness``). ``detect``: ROC AUC of the
typical-set detector per attack and budget. ``transfer``: perturbations crafted on the small
baseline and on the two pretrained DnCNNs, evaluated on every saved model and BM3D.
``cost``: CPU time of a Gaussian, TS and HAT training step on one batch, interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved, machine  # noqa: E402

from ts_defense import Denoiser, TrainStep, TSConfig, TSSampler  # noqa: E402
from ts_defense._io import safe_load  # noqa: E402
from ts_defense.attacks import DenoisingPGD, L2DenoisingPGD, ObsAtk  # noqa: E402
from ts_defense.attacks.evaluate import add_noise, evaluate_attack  # noqa: E402
from ts_defense.attacks.report import centre_crop  # noqa: E402
from ts_defense.attacks.transfer import transfer_matrix  # noqa: E402
from ts_defense.attacks.zoo import load_model  # noqa: E402
from ts_defense.data import (  # noqa: E402
    bundled_images,
    set12,
    shared_data_dir,
    tiles,  # noqa: E402
)
from ts_defense.detect import detection_auc  # noqa: E402
from ts_defense.fit import PatchSampler, fit  # noqa: E402
from ts_defense.models import DnCNN, PnPHQS, ProxGradUnfolded, load_dncnn  # noqa: E402
from ts_defense.recipes import make_recipe  # noqa: E402
from ts_defense.robustness import budget_curve, plot_budget_curves  # noqa: E402

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
class Sizes:
    """Experiment sizes (defaults: the full run; ``SMOKE``: seconds)."""

    steps: int = 1000
    finetune_steps: int = 100
    finetune_batch: int = 8
    finetune_lr: float = 1e-4
    depth: int = 8
    features: int = 32
    batch_size: int = 16
    patch_size: int = 40
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


def test_set(images: int, size: int) -> torch.Tensor:
    """The first ``images`` Set12 images, centre-cropped to ``size``."""
    return torch.cat([centre_crop(x, size) for x in set12()[:images]])


def evaluate(
    den: Denoiser, test: torch.Tensor, sizes: Sizes, l2: tuple[str, ...], seed: int = 0
) -> dict:
    """Clean and white-box attacked PSNR (dB), pass-through and gain at PGD 8/255, and the
    L2 attacks named in ``l2``."""
    steps = sizes.attack_steps
    low = budget_curve({"m": den}, test, SIGMA, (0.0, 3 / 255), steps=max(1, steps // 2), seed=seed)
    high = budget_curve({"m": den}, test, SIGMA, (8 / 255,), steps=steps, seed=seed)
    row = {"clean": low["m"]["psnr"][0], "pgd3": low["m"]["psnr"][1], "pgd8": high["m"]["psnr"][0]}
    row |= {"pass8": high["m"]["pass_through"][0], "gain8": high["m"]["gain"][0]}
    noisy = add_noise(test, SIGMA, seed)
    for name in l2:
        ev, _ = evaluate_attack(den, ATTACKS[name](den, steps), test, noisy, SIGMA)
        row[name] = ev.summary()["psnr_attacked"]
    return row


def _timed(train) -> tuple[Denoiser, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    den = train()
    return den, time.perf_counter() - wall, time.process_time() - cpu


def _fit(net: nn.Module, name: str, images: torch.Tensor, **common) -> Denoiser:
    """Train ``net`` (predicting the noise) with variant ``name`` through ``fit``; HAT is the
    library's ``hat`` recipe with ObsAtk's zero-mean L2 threat, as in Yan et al."""
    options = VARIANTS[name]
    plan = HAT_RECIPE if options == HAT else {"config": {"sigma": SIGMA, **options}}
    fit(net, images, predicts="noise", progress=False, **plan, **common)
    return Denoiser(net.eval(), predicts="noise")


def train_scratch(name: str, seed: int, sizes: Sizes, images: torch.Tensor) -> Denoiser:
    """One small DnCNN trained with variant ``name``."""
    torch.manual_seed(seed)
    net = DnCNN(1, sizes.depth, sizes.features, batch_norm=False)
    return _fit(net, name, images, steps=sizes.steps, batch_size=sizes.batch_size,
                patch_size=sizes.patch_size, seed=seed)  # fmt: skip


def train_finetune(name: str, seed: int, sizes: Sizes, images: torch.Tensor) -> Denoiser:
    """The pretrained DnCNN-S-25 fine-tuned with variant ``name`` (batch norm in train mode)."""
    net = load_dncnn(shared_data_dir() / "weights" / "DnCNN-S-25.pth")
    return _fit(net, name, images, steps=sizes.finetune_steps, batch_size=sizes.finetune_batch,
                patch_size=sizes.patch_size, lr=sizes.finetune_lr, seed=seed)  # fmt: skip


def run_training(part: str, names, seeds, sizes: Sizes, out: Path, models_dir: Path) -> None:
    images = bundled_images(size=None)  # eight 256 x 256 pictures
    if part == "scratch":
        trainer, test, l2 = train_scratch, test_set(sizes.test_images, sizes.test_size), ("l2",)
    else:
        trainer, test, l2 = train_finetune, test_set(*sizes.finetune_test), ()
    l2 += ("obsatk",)
    if part == "finetune" and not _recorded(out, part, "pretrained"):
        pretrained = load_model("dncnn-s-25")
        record(out, {"part": part, "variant": "pretrained", "seed": 0, "steps": 0, "train_s": 0.0,
                     "train_cpu_s": 0.0, **evaluate(pretrained, test, sizes, l2)})  # fmt: skip
    for seed in seeds:
        for name in names:
            den, wall, cpu = _timed(partial(trainer, name, seed, sizes, images))
            models_dir.mkdir(parents=True, exist_ok=True)
            n = sizes.steps if part == "scratch" else sizes.finetune_steps
            row = {"part": part, "variant": name, "seed": seed, "steps": n, "train_s": wall}
            key = _model_key(row)  # weights: <part>[steps]-<variant>-s<seed>.pt
            stem = key if key.startswith(part) else f"{part}-{key}"
            torch.save(den.model.state_dict(), models_dir / f"{stem}-s{seed}.pt")
            record(out, {**row, "train_cpu_s": cpu, **evaluate(den, test, sizes, l2)})


# The heterogeneous zoo: name -> (build(), predicts, noise_level, training sigma). Sizes fit a
# 2-core CPU: 1000 steps of batch 16 take 1-6 minutes each (`--part zoo`).
def _drunet() -> nn.Module:
    from spandrel.architectures.DRUNet import DRUNet

    return DRUNet(in_nc=2, out_nc=1, nc=[16, 32, 64, 64], nb=1)


def _swinir() -> nn.Module:
    from spandrel.architectures.SwinIR import SwinIR

    return SwinIR(img_size=40, in_chans=1, embed_dim=24, depths=[2, 2], num_heads=[2, 2],
                  window_size=8, mlp_ratio=2.0, drop_path_rate=0.0)  # fmt: skip


ZOO = {  # DRUNet is trained blind (sigma 10-50): the PnP-HQS schedule queries 50 down to 25
    "drunet": (_drunet, "clean", "map", (10 / 255, 50 / 255)),
    "swinir": (_swinir, "clean", "none", SIGMA),
    "unfolded": (partial(ProxGradUnfolded, 1, 3, 4, 32), "clean", "none", SIGMA),
}
PNP_ITERATIONS = 4


def _zoo_denoiser(arch: str, path: Path) -> Denoiser:
    build, predicts, noise_level, _ = ZOO[arch]
    net = build()
    net.load_state_dict(safe_load(path, "model weights"))
    return Denoiser(net.eval(), predicts=predicts, noise_level=noise_level)


def _pnp(drunet: Denoiser) -> Denoiser:
    hqs = PnPHQS(drunet, iterations=PNP_ITERATIONS)
    return Denoiser(hqs, predicts="clean", noise_level="argument")


def run_zoo(variants, seeds, sizes: Sizes, out: Path, models_dir: Path) -> None:
    """DRUNet, SwinIR and the unfolded model trained per variant (TS options as for the small
    DnCNN, sigma range of the architecture), plus PnP-HQS around each DRUNet; white-box rows."""
    images = bundled_images(size=None)
    test = test_set(sizes.test_images, sizes.test_size)
    for seed in seeds:
        for arch, (build, predicts, noise_level, sigma) in ZOO.items():
            for name in variants:
                if VARIANTS[name] == HAT:
                    raise ValueError("--part zoo trains TS variants only (HAT: --part scratch)")
                torch.manual_seed(seed)
                net = build()
                config = {**VARIANTS[name], "sigma": sigma}
                common = {"steps": sizes.steps, "batch_size": sizes.batch_size, "seed": seed}
                wall, cpu = time.perf_counter(), time.process_time()
                fit(net, images, config=config, predicts=predicts, noise_level=noise_level,
                    patch_size=sizes.patch_size, progress=False, **common)  # fmt: skip
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                models_dir.mkdir(parents=True, exist_ok=True)
                torch.save(net.state_dict(), models_dir / f"zoo-{arch}-{name}-s{seed}.pt")
                den = Denoiser(net.eval(), predicts=predicts, noise_level=noise_level)
                row = {"part": "zoo", "arch": arch, "variant": name, "seed": seed}
                row |= {"steps": sizes.steps, "train_s": wall, "train_cpu_s": cpu}
                record(out, {**row, **evaluate(den, test, sizes, ("l2", "obsatk"))})
                if arch == "drunet":
                    row = {**row, "arch": "pnp-hqs", "steps": 0, "train_s": 0.0}
                    record(out, {**row, "train_cpu_s": 0.0, **evaluate(_pnp(den), test, sizes, ())})


def _recorded(out: Path, part: str, variant: str) -> bool:
    """Whether ``out`` already holds a row of ``variant`` in ``part`` (rows are not repeated)."""
    if not out.exists():
        return False
    rows = (json.loads(line) for line in out.read_text().splitlines() if line)
    return any(r.get("part") == part and r.get("variant") == variant for r in rows)


def detect_tiles(sizes: Sizes) -> torch.Tensor:
    """Set12 images, centre crops cut into tiles (more inputs for the ROC curve)."""
    crops = test_set(sizes.detect_images, sizes.detect_size)
    t = sizes.detect_tile
    return tiles(crops, t)


def run_detect(sizes: Sizes, out: Path, models_dir: Path, which: tuple[str, ...]) -> None:
    """The detector on ``which`` of the pretrained DnCNN-S-25 and the small Gaussian baseline
    (skipping L2-denoising-PGD on the pretrained model: ObsAtk has the same L2 budget)."""
    tiles = detect_tiles(sizes)
    noisy = add_noise(tiles, SIGMA, 0)[0]
    models = {}
    if "pretrained" in which:
        models["dncnn-s-25"] = load_model("dncnn-s-25")
    if "small" in which:
        models["small gaussian"] = _load_small(models_dir / "scratch-gaussian-s0.pt", sizes)
    for model_name, den in models.items():
        for attack, make in ATTACKS.items():
            if attack == "l2" and model_name == "dncnn-s-25":
                continue
            adv = make(den, sizes.attack_steps)(noisy, tiles)
            auc = detection_auc(den, noisy, adv, SIGMA)
            record(out, {"part": "detect", "model": model_name, "attack": attack,
                         "tiles": int(tiles.shape[0]), **auc})  # fmt: skip


def _load_small(path: Path, sizes: Sizes) -> Denoiser:
    net = DnCNN(1, sizes.depth, sizes.features, batch_norm=False)
    net.load_state_dict(safe_load(path, "model weights"))
    return Denoiser(net.eval(), predicts="noise")


def _load_finetuned(path: Path) -> Denoiser:
    net = load_dncnn(shared_data_dir() / "weights" / "DnCNN-S-25.pth")
    net.load_state_dict(safe_load(path, "model weights"))
    return Denoiser(net.eval(), predicts="noise")


def _target_name(path: Path, prefix: str = "") -> str:
    """``scratch-ts-s0.pt`` -> ``ts``; other seeds keep their suffix (``ts-s1``)."""
    return path.stem.removeprefix(prefix).removesuffix("-s0")


def _saved_models(models_dir: Path, sizes: Sizes, zoo: bool = True) -> dict[str, Denoiser]:
    """Every saved scratch and fine-tuned DnCNN (each seed: a spread per variant), the two
    pretrained DnCNN-25s and, with ``zoo``, the seed-0 zoo models with PnP-HQS around each
    DRUNet — under the names of the transfer records."""
    models: dict[str, Denoiser] = {}
    for path in sorted(models_dir.glob("scratch*.pt")):
        models[_target_name(path, "scratch-")] = _load_small(path, sizes)
    for name in ("dncnn-s-25", "kair-dncnn-25"):
        models[name] = load_model(name)
    for path in sorted(models_dir.glob("finetune*.pt")):
        models[_target_name(path)] = _load_finetuned(path)
    for path in sorted(models_dir.glob("zoo-*-s0.pt")) if zoo else ():
        arch, variant = path.stem.removeprefix("zoo-").removesuffix("-s0").split("-", 1)
        suffix = "" if variant == "gaussian" else f"-{variant}"
        models[arch + suffix] = _zoo_denoiser(arch, path)
        if arch == "drunet":
            models["pnp-hqs" + suffix] = _pnp(models[arch + suffix])
    return models


def run_transfer(sizes: Sizes, out: Path, models_dir: Path) -> None:
    """Sources: the small Gaussian baseline, the zoo's Gaussian-trained models and the pretrained
    DnCNNs; targets: every saved model, the pretrained DnCNNs and BM3D."""
    models = _saved_models(models_dir, sizes)
    if sizes.bm3d:
        models["bm3d"] = load_model("bm3d")
    sources = [s for s in ("gaussian", *ZOO, "pnp-hqs", "dncnn-s-25", "kair-dncnn-25")
               if s in models]  # fmt: skip
    attack = partial(DenoisingPGD, sigma=SIGMA, eps=8 / 255, steps=sizes.attack_steps)
    test = test_set(sizes.test_images, sizes.test_size)
    result = transfer_matrix(models, test, SIGMA, attack, sources=sources)
    record(out, {"part": "transfer", "clean": result.clean, "attacked": result.attacked})


def run_protocol(sizes: Sizes, out: Path, models_dir: Path) -> None:
    """The reference code's protocol (Ning et al.): noisy input clamped to [0, 1], PGD towards
    the noisy input (objective ``noisy``), attacked input clamped; every saved DnCNN, each seed."""
    test = test_set(sizes.test_images, sizes.test_size)
    noisy = [y.clamp(0, 1) for y in add_noise(test, SIGMA, 0)]
    models = _saved_models(models_dir, sizes, zoo=False)
    del models["kair-dncnn-25"]  # DnCNN-S-25 stands for the public weights
    for name, den in models.items():
        row = {"part": "protocol", "model": name}
        for key, eps, steps in (("paper3", 3, max(1, sizes.attack_steps // 2)),
                                ("paper8", 8, sizes.attack_steps)):  # fmt: skip
            attack = DenoisingPGD(den, SIGMA, eps=eps / 255, steps=steps, objective="noisy",
                                  clip=(0.0, 1.0))  # fmt: skip
            ev, _ = evaluate_attack(den, attack, test, noisy, SIGMA)
            summary = ev.summary()
            row |= {"clean": summary["psnr_clean"], key: summary["psnr_attacked"]}
        record(out, row)


CURVE_MODELS = ("gaussian", "ts", HAT, "drunet", "swinir", "unfolded", "pnp-hqs", "dncnn-s-25",
                "finetune-ts")  # fmt: skip


def run_curves(sizes: Sizes, out: Path, models_dir: Path, plot: Path) -> None:
    """PSNR against the L-inf budget (white-box PGD) for one model of each kind (seed 0)."""
    test = test_set(sizes.test_images, sizes.test_size)
    saved = _saved_models(models_dir, sizes)
    models = {name: saved[name] for name in CURVE_MODELS if name in saved}
    budgets = tuple(b / 255 for b in sizes.curve_budgets)
    curves = budget_curve(models, test, SIGMA, budgets, steps=sizes.attack_steps, progress=True)
    record(out, {"part": "curves", "steps": sizes.attack_steps, "curves": curves})
    plot_budget_curves(curves, str(plot), pass_through=False)


def run_cost(sizes: Sizes, out: Path, rounds: int) -> None:
    """CPU time of one training step per method on the same batch, interleaved rounds."""
    torch.manual_seed(0)
    net = DnCNN(1, sizes.depth, sizes.features, batch_norm=False)
    den = Denoiser(net, predicts="noise")
    opt = torch.optim.Adam(net.parameters(), lr=1e-6)
    patches = PatchSampler(bundled_images(size=None), sizes.patch_size, torch.Generator())
    clean = patches(sizes.batch_size)
    steps = {
        name: TrainStep(den, opt, TSSampler(TSConfig(sigma=SIGMA, **VARIANTS[name]), seed=0))
        for name in ("gaussian", "ts", "ts-p0.5")
    }
    hat = make_recipe(HAT_RECIPE["recipe"], HAT_RECIPE["config"], HAT_RECIPE["adversarial"])
    steps[HAT] = TrainStep(den, opt, hat.sampler(0), perturbation=hat.perturbation(0))
    cases = {name: partial(step, clean) for name, step in steps.items()}
    ms = interleaved(cases, rounds, clock=time.process_time)
    record(out, {"part": "cost", "rounds": rounds, "batch": list(clean.shape),
                 "ms": {k: 1000 * v for k, v in ms.items()}})  # fmt: skip


def cost_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r.get("part") == "cost"]
    if not rs:
        return ""
    r = rs[-1]
    lines = [f"Batch {r['batch']}, {r['rounds']} interleaved rounds, medians of CPU time.\n"]
    lines += ["| training step | ms | / Gaussian |", "|---|---:|---:|"]
    for name, ms in r["ms"].items():
        lines.append(f"| {name} | {ms:.1f} | {ms / r['ms']['gaussian']:.2f} |")
    return "\n".join(lines)


def record(out: Path, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


# -- tables ------------------------------------------------------------------------------------
METRICS = ("clean", "pgd3", "pgd8", "l2", "obsatk", "pass8", "gain8")


def _cell(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    half = (max(values) - min(values)) / 2
    return f"{np.mean(values):.{digits}f} ± {half:.{digits}f}"


def _model_key(r: dict) -> str:
    """The row's model name in weight files and transfer records: the variant (scratch),
    ``finetune-<variant>``, ``<arch>[-<variant>]`` (zoo); training lengths other than the
    full or smoke default prefix the part (``scratch3000-ts``, ``finetune300-ts``)."""
    if r["part"] == "zoo":
        return r["arch"] + ("" if r["variant"] == "gaussian" else f"-{r['variant']}")
    field = "steps" if r["part"] == "scratch" else "finetune_steps"
    default = {getattr(Sizes(), field), getattr(SMOKE, field)}
    steps = "" if r["steps"] in default else str(r["steps"])
    if r["part"] == "finetune" or steps:
        return f"{r['part']}{steps}-{r['variant']}"
    return r["variant"]


def training_table(rows: list[dict], part: str, transfer: dict | None) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("part") == part:
            arch = f"{r['arch']} " if "arch" in r else ""
            groups[f"{arch}{r['variant']} ({r.get('steps', '?')} steps)"].append(r)
    if not groups:
        return ""
    base = {  # the Gaussian baseline's CPU seconds per architecture and number of steps
        (rs[0].get("arch"), rs[0]["steps"]): np.mean([r["train_cpu_s"] for r in rs])
        for rs in groups.values()
        if rs[0]["variant"] == "gaussian"
    }
    lines = [
        f"| {'model' if part == 'zoo' else 'variant'} | seeds | clean | PGD 3/255 | PGD 8/255 "
        "| L2 rho 0.2 | ObsAtk 5/255 | f(y)+delta 8/255 | gain 8/255 | transfer 8/255 "
        "| train s | CPU ratio |",
        "|---|---|" + "---:|" * 10,
    ]
    source = "dncnn-s-25"  # public weights: a black-box source for every trained model
    for name, rs in groups.items():
        cells = [
            _cell([r[m] for r in rs], 3 if m == "gain8" else 2) if m in rs[0] else "-"
            for m in METRICS
        ]
        t = (transfer or {}).get(source, {})
        keys = [_model_key(r) + (f"-s{r['seed']}" if r["seed"] else "") for r in rs]
        moved = [t[k] for k in keys if k in t]
        cells.append(_cell(moved) if moved else "-")
        cells.append(f"{np.mean([r['train_s'] for r in rs]):.0f}")
        cpu = np.mean([r["train_cpu_s"] for r in rs])
        ref = base.get((rs[0].get("arch"), rs[0]["steps"]))
        cells.append(f"{cpu / ref:.2f}" if ref and cpu else "-")
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(rows: list[dict]) -> str:
    """Each variant minus the Gaussian model of the same part, architecture, steps and seed:
    seed-to-seed spread cancels, so small effects show (mean ± half range over seeds)."""
    trained = [r for r in rows if r.get("part") in ("scratch", "finetune", "zoo")]
    index = {(r["part"], r.get("arch"), r["steps"], r["variant"], r["seed"]): r for r in trained}
    groups: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for (part, arch, steps, variant, seed), r in index.items():
        base = index.get((part, arch, steps, "gaussian", seed))
        if variant != "gaussian" and base is not None:
            groups[(part, arch, steps, variant)].append((r, base))
    if not groups:
        return ""
    metrics = ("clean", "pgd3", "pgd8", "obsatk")
    lines = ["| part | model | seeds | clean | PGD 3/255 | PGD 8/255 | ObsAtk 5/255 |",
             "|---|---|---:|" + "---:|" * len(metrics)]  # fmt: skip
    order = ("scratch", "finetune", "zoo")
    for (part, arch, steps, variant), pairs in sorted(
        groups.items(), key=lambda g: (order.index(g[0][0]), g[0][1] or "", g[0][2])
    ):
        cells = [_cell([r[m] - b[m] for r, b in pairs]) if m in pairs[0][0] else "-"
                 for m in metrics]  # fmt: skip
        model = f"{arch + ' ' if arch else ''}{variant} ({steps} steps)"
        lines.append(f"| {part} | {model} | {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detect_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r.get("part") == "detect"]
    if not rs:
        return ""
    lines = ["| model | attack | tiles | AUC global | AUC window |", "|---|---|---:|---:|---:|"]
    for r in rs:
        lines.append(
            f"| {r['model']} | {r['attack']} | {r['tiles']} | {r['global']:.3f} "
            f"| {r['window']:.3f} |"
        )
    return "\n".join(lines)


def _by_model(items, name=lambda item: item) -> dict[str, list]:
    """Group ``items`` by model name without its seed suffix (``ts-s1`` -> ``ts``)."""
    groups: dict[str, list] = defaultdict(list)
    for item in items:
        groups[re.sub(r"-s\d+$", "", name(item))].append(item)
    return groups


def _drop_row(name: str, clean: list[float], columns: list[list[float]]) -> str:
    """``| name | seeds | clean | attacked (drop) ... |`` over the seeds of one model."""
    cells = [_cell(clean)]
    cells += [f"{_cell(v)} ({np.mean(v) - np.mean(clean):+.2f})" for v in columns]
    return f"| {name} | {len(clean)} | " + " | ".join(cells) + " |"


def transfer_table(row: dict | None) -> str:
    """Attacked PSNR (drop from clean) per target and source; seeds of one model in one row."""
    if row is None:
        return ""
    sources = list(row["attacked"])
    lines = ["| target | seeds | clean | " + " | ".join(f"from {s}" for s in sources) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(sources))
    for name, ts in _by_model(row["clean"]).items():
        columns = [[row["attacked"][s][t] for t in ts] for s in sources]
        lines.append(_drop_row(name, [row["clean"][t] for t in ts], columns))
    return "\n".join(lines)


def curves_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r.get("part") == "curves"]
    if not rs:
        return ""
    curves = rs[-1]["curves"]
    budgets = next(iter(curves.values()))["budget"]
    head = " | ".join("clean" if b == 0 else f"{b * 255:.0f}/255" for b in budgets)
    lines = [f"| model | {head} |", "|---|" + "---:|" * len(budgets)]
    for name, c in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{p:.2f}" for p in c["psnr"]) + " |")
    return "\n".join(lines)


def protocol_table(rows: list[dict]) -> str:
    """Reference-protocol PSNR per model, seeds of one variant in one row."""
    groups = _by_model([r for r in rows if r.get("part") == "protocol"], lambda r: r["model"])
    if not groups:
        return ""
    lines = ["| model | seeds | clean | PGD 3/255 (drop) | PGD 8/255 (drop) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, rs in groups.items():
        columns = [[r[key] for r in rs] for key in ("paper3", "paper8")]
        lines.append(_drop_row(name, [r["clean"] for r in rs], columns))
    return "\n".join(lines)


def tables(rows: list[dict]) -> str:
    transfers = [r for r in rows if r.get("part") == "transfer"]
    transfer = transfers[-1] if transfers else None
    attacked = transfer["attacked"] if transfer else None
    parts = [
        ("From scratch (small DnCNN)", training_table(rows, "scratch", attacked)),
        ("Fine-tuned DnCNN-S-25", training_table(rows, "finetune", attacked)),
        ("Other architectures (zoo)", training_table(rows, "zoo", attacked)),
        ("Paired differences against Gaussian training (same seed, dB)", paired_table(rows)),
        ("Training step cost", cost_table(rows)),
        ("Detector ROC AUC", detect_table(rows)),
        ("Transfer, PGD 8/255 (attacked PSNR, dB)", transfer_table(transfer)),
        ("PSNR against the PGD budget (white-box, dB)", curves_table(rows)),
        ("Reference protocol (clamped, objective noisy)", protocol_table(rows)),
    ]
    return "\n\n".join(f"### {title}\n\n{t}" for title, t in parts if t)


PARTS = ("scratch", "finetune", "zoo", "detect", "transfer", "protocol", "curves", "cost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="every part at toy sizes")
    ap.add_argument("--part", choices=PARTS)
    ap.add_argument("--rounds", type=int, default=30, help="timing rounds of --part cost")
    ap.add_argument("--variants", nargs="+", default=["gaussian", "ts"], choices=list(VARIANTS))
    ap.add_argument("--detect", nargs="+", default=["pretrained", "small"],
                    choices=["pretrained", "small"], help="models for --part detect")  # fmt: skip
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, help="training steps (scratch; default 1000)")
    ap.add_argument("--finetune-steps", type=int, help="fine-tuning steps (default 100)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/defense.jsonl"))
    ap.add_argument("--models-dir", type=Path, default=Path("/tmp/ts_defense_bench/models"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--table", type=Path, help="print the Markdown tables of a results file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table:
        print(tables([json.loads(line) for line in args.table.read_text().splitlines() if line]))
        return
    sizes = SMOKE if args.smoke else Sizes()
    if args.steps:
        sizes = replace(sizes, steps=args.steps)
    if args.finetune_steps:
        sizes = replace(sizes, finetune_steps=args.finetune_steps)
    t0 = time.perf_counter()
    if args.smoke:
        import tempfile

        tmp = Path(tempfile.mkdtemp())
        out, models_dir = tmp / "smoke.jsonl", tmp / "models"
        run_training("scratch", ["gaussian", "ts", HAT], [0], sizes, out, models_dir)
        run_training("finetune", ["ts"], [0], sizes, out, models_dir)
        run_zoo(["gaussian", "ts"], [0], sizes, out, models_dir)
        run_detect(sizes, out, models_dir, ("pretrained", "small"))
        run_transfer(sizes, out, models_dir)
        run_curves(sizes, out, models_dir, tmp / "budget_curves.png")
        run_protocol(sizes, out, models_dir)
        run_cost(sizes, out, rounds=2)
    else:
        out, models_dir = args.out, args.models_dir
        if args.part in ("scratch", "finetune"):
            run_training(args.part, args.variants, args.seeds, sizes, out, models_dir)
        elif args.part == "zoo":
            run_zoo(args.variants, args.seeds, sizes, out, models_dir)
        elif args.part == "detect":
            run_detect(sizes, out, models_dir, tuple(args.detect))
        elif args.part == "transfer":
            run_transfer(sizes, out, models_dir)
        elif args.part == "protocol":
            run_protocol(sizes, out, models_dir)
        elif args.part == "curves":
            run_curves(sizes, out, models_dir, args.out.parent / "budget_curves.png")
        elif args.part == "cost":
            run_cost(sizes, out, args.rounds)
        else:
            ap.error("give --part, --smoke or --table")
    print(f"\nMachine: {machine()}; wall time {time.perf_counter() - t0:.0f} s\n")
    print(tables([json.loads(line) for line in out.read_text().splitlines() if line]))


if __name__ == "__main__":
    main()
