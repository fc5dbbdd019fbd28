"""The parts of the benchmark: each trains or loads its models, measures them and appends one
JSON line per measurement to the results file as soon as it has it."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ts_defense import Denoiser, TrainStep, TSConfig, TSSampler
from ts_defense.app.output import json_text
from ts_defense.app.plots import budget_curves_figure, save_figure
from ts_defense.attacks import DenoisingPGD
from ts_defense.data import bundled_images, centre_crop, set12, tiles
from ts_defense.evaluation.budget import budget_curve
from ts_defense.evaluation.detect import detection_auc
from ts_defense.evaluation.metrics import add_noise, evaluate_attack
from ts_defense.evaluation.transfer import transfer_matrix
from ts_defense.models.zoo import load_model
from ts_defense.training.fit import PatchSampler
from ts_defense.training.recipes import make_recipe

from ..common import interleaved
from .config import ATTACKS, CURVE_MODELS, HAT, HAT_RECIPE, SIGMA, VARIANTS, Sizes
from .models import ZOO, load_small, pnp, saved_models, train_finetune, train_scratch, train_zoo
from .tables import model_key, parse


def record(out: Path, row: dict) -> None:
    """Append ``row`` to the results file ``out`` (and print it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json_text(row, indent=None))
    print(json_text(row, indent=None), end="", flush=True)


def _recorded(out: Path, part: str, variant: str) -> bool:
    """Whether ``out`` already holds a row of ``variant`` in ``part`` (rows are not repeated)."""
    rows = parse(out.read_text()) if out.exists() else []
    return any(r.get("part") == part and r.get("variant") == variant for r in rows)


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


def _timed(train: Callable[[], Denoiser]) -> tuple[Denoiser, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    den = train()
    return den, time.perf_counter() - wall, time.process_time() - cpu


def run_training(part: str, names, seeds, sizes: Sizes, out: Path, models_dir: Path) -> None:
    """``scratch`` (small DnCNNs) or ``finetune`` (DnCNN-S-25): train each variant and seed,
    save the weights, record the white-box evaluation."""
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
            key = model_key(row)  # weights: <part>[steps]-<variant>-s<seed>.pt
            stem = key if key.startswith(part) else f"{part}-{key}"
            torch.save(den.model.state_dict(), models_dir / f"{stem}-s{seed}.pt")
            record(out, {**row, "train_cpu_s": cpu, **evaluate(den, test, sizes, l2)})


def run_zoo(variants, seeds, sizes: Sizes, out: Path, models_dir: Path) -> None:
    """DRUNet, SwinIR and the unfolded model trained per variant (TS options as for the small
    DnCNN, sigma range of the architecture), plus PnP-HQS around each DRUNet; white-box rows."""
    images = bundled_images(size=None)
    test = test_set(sizes.test_images, sizes.test_size)
    for seed in seeds:
        for arch in ZOO:
            for name in variants:
                den, wall, cpu = _timed(partial(train_zoo, arch, name, seed, sizes, images))
                models_dir.mkdir(parents=True, exist_ok=True)
                torch.save(den.model.state_dict(), models_dir / f"zoo-{arch}-{name}-s{seed}.pt")
                row = {"part": "zoo", "arch": arch, "variant": name, "seed": seed}
                row |= {"steps": sizes.steps, "train_s": wall, "train_cpu_s": cpu}
                record(out, {**row, **evaluate(den, test, sizes, ("l2", "obsatk"))})
                if arch == "drunet":
                    row = {**row, "arch": "pnp-hqs", "steps": 0, "train_s": 0.0}
                    record(out, {**row, "train_cpu_s": 0.0, **evaluate(pnp(den), test, sizes, ())})


def detect_tiles(sizes: Sizes) -> torch.Tensor:
    """Set12 images, centre crops cut into tiles (more inputs for the ROC curve)."""
    return tiles(test_set(sizes.detect_images, sizes.detect_size), sizes.detect_tile)


def run_detect(sizes: Sizes, out: Path, models_dir: Path, which: tuple[str, ...]) -> None:
    """The detector on ``which`` of the pretrained DnCNN-S-25 and the small Gaussian baseline
    (skipping L2-denoising-PGD on the pretrained model: ObsAtk has the same L2 budget)."""
    inputs = detect_tiles(sizes)
    noisy = add_noise(inputs, SIGMA, 0)[0]
    models = {}
    if "pretrained" in which:
        models["dncnn-s-25"] = load_model("dncnn-s-25")
    if "small" in which:
        models["small gaussian"] = load_small(models_dir / "scratch-gaussian-s0.pt", sizes)
    for model_name, den in models.items():
        for attack, make in ATTACKS.items():
            if attack == "l2" and model_name == "dncnn-s-25":
                continue
            adv = make(den, sizes.attack_steps)(noisy, inputs)
            auc = detection_auc(den, noisy, adv, SIGMA)
            record(out, {"part": "detect", "model": model_name, "attack": attack,
                         "tiles": int(inputs.shape[0]), **auc})  # fmt: skip


def run_transfer(sizes: Sizes, out: Path, models_dir: Path) -> None:
    """Sources: the small Gaussian baseline, the zoo's Gaussian-trained models and the pretrained
    DnCNNs; targets: every saved model, the pretrained DnCNNs and BM3D."""
    models = saved_models(models_dir, sizes)
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
    models = saved_models(models_dir, sizes, zoo=False)
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


def run_curves(sizes: Sizes, out: Path, models_dir: Path, plot: Path) -> None:
    """PSNR against the L-inf budget (white-box PGD) for one model of each kind (seed 0)."""
    test = test_set(sizes.test_images, sizes.test_size)
    saved = saved_models(models_dir, sizes)
    models = {name: saved[name] for name in CURVE_MODELS if name in saved}
    budgets = tuple(b / 255 for b in sizes.curve_budgets)
    curves = budget_curve(models, test, SIGMA, budgets, steps=sizes.attack_steps, progress=True)
    record(out, {"part": "curves", "steps": sizes.attack_steps, "curves": curves})
    save_figure(budget_curves_figure(curves, pass_through=False, steps=sizes.attack_steps), plot)


def run_cost(sizes: Sizes, out: Path, rounds: int) -> None:
    """CPU time of one training step per method on the same batch, interleaved rounds."""
    torch.manual_seed(0)
    net = sizes.build()
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
