"""The audit itself: every model on every image under white-box PGD at each budget, ObsAtk and
transfer from the public DnCNN-25s, with pass-through PSNR, gain and typicality; per image
(tiles folded back) and in the mean."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..._checks import check_positive, check_seed
from ...evaluation.budget import attacked_metrics
from ...evaluation.metrics import add_noise, denoise, psnr, ssim
from ...evaluation.transfer import TransferResult, transfer_matrix
from ...evaluation.typicality import typicality
from ...models.zoo import load_model
from . import worst
from .images import AuditImage, per_image, prepare
from .models import AuditModel

PUBLIC = ("dncnn-s-25", "kair-dncnn-25")  # transfer sources: public DnCNNs trained at sigma 25
FOLD = {"psnr": "psnr", "pass_through": "psnr", "window_max": "max"}  # how tiles fold (else mean)


@dataclass
class AuditConfig:
    """Options of an audit, in image units ([0, 1]); ``units`` says how reports print them:
    ``"grey levels"`` (x 255, as the command line takes them) or ``"image units"``.

    attack: ``"auto"`` (APGD, the worst case over ``members``, convergence evidence) or
    ``"pgd"`` (the fast path); steps (None: 100 under auto, 10 under pgd) and restarts: see
    :mod:`.worst`."""

    sigma: float = 25 / 255
    budgets: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
    steps: int | None = None
    obsatk_eps: float = 5 / 255
    transfer: bool = True
    tile: int = 256
    seed: int = 0
    units: str = "grey levels"
    attack: str = "auto"
    restarts: int = 1
    members: tuple[str, ...] = worst.MEMBERS

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)
        if not self.budgets:
            raise ValueError("budgets: give at least one")
        self.budgets = tuple(sorted(check_positive("eps", b) for b in self.budgets))
        self.attack, self.steps, self.restarts, self.members = worst.options(
            self.attack, self.steps, self.restarts, self.members
        )
        self.transfer = self.transfer and (self.attack == "pgd" or "transfer" in self.members)
        check_positive("obsatk_eps", self.obsatk_eps)
        check_seed("seed", self.seed)
        if self.units not in ("grey levels", "image units"):
            raise ValueError(f"units must be 'grey levels' or 'image units', got {self.units!r}")

    def show(self, value: float) -> str:
        """A budget or noise level as the user typed it."""
        return f"{value * 255:g}" if self.units == "grey levels" else f"{value:.4g}"


@dataclass
class AuditResult:
    """``data``: everything the report says (JSON-ready); ``examples``: per model, the tensors
    of the strip (clean, noisy, attacked, outputs) of the first image's first tile."""

    data: dict
    examples: dict[str, dict[str, Tensor]] = field(default_factory=dict)


def _pass_seconds(den: torch.nn.Module, batch: Tensor, sigma: float) -> float:
    """Seconds per pixel of one forward + backward pass (after one warm-up pass)."""
    x = batch[:1].clone()
    times = []
    for _ in range(2):
        y = x.clone().requires_grad_(True)
        start = time.perf_counter()
        den(y, sigma).square().sum().backward()
        times.append(time.perf_counter() - start)
    return times[-1] / x.numel()


def estimate_seconds(
    models: list[AuditModel], images: list[tuple[str, Tensor]], config: AuditConfig
) -> float:
    """Run time estimate: one timed forward + backward pass per model, times the passes the
    audit makes (attack steps, and a third of a pass for each forward-only evaluation)."""
    total = 0.0
    for m in models:
        prepared = prepare(images, m.channels, config.tile)
        pixels = sum(im.batch.numel() for im in prepared)
        per_pixel = _pass_seconds(m.denoiser, prepared[0].batch, config.sigma)
        passes, crafting = worst.passes(config, len(PUBLIC))
        total += per_pixel * pixels * passes
    if config.transfer:  # crafting on the public models, as costly as a DnCNN-17 pass
        grey = sum(im.batch.numel() for im in prepare(images, 1, config.tile))
        total += crafting * grey * per_pixel
    return total


def _attack_rows(
    m: AuditModel,
    images: list[AuditImage],
    noisy: list[Tensor],
    attack: str,
    eps: float,
    config: AuditConfig,
    bar: tqdm,
    evidence: worst.Evidence,
) -> tuple[dict[str, list[float]], list[Tensor]]:
    """Per-image metrics of one attack on one model, and the attacked inputs."""
    tiles: dict[str, list[float]] = {}
    attacked = []
    atk = worst.attack(attack, m.denoiser, eps, config)
    for im, y in zip(images, noisy, strict=True):
        adv = atk(y, im.batch)
        evidence.seen(attack, eps, atk, im.batch, y, adv)
        attacked.append(adv)
        metrics = attacked_metrics(
            m.denoiser, im.batch, y, adv, config.sigma, with_ssim=True, nonfinite="nan"
        )
        typ = typicality(im.batch, adv, config.sigma)
        metrics.update(
            d=typ["d"], window_max=typ["window_max"], atypical_windows=typ["atypical_windows"]
        )
        for key, values in metrics.items():
            tiles.setdefault(key, []).extend(values)
        bar.update()
    return {k: per_image(v, images, FOLD.get(k, "mean")) for k, v in tiles.items()}, attacked


def _transfer(
    models: list[AuditModel],
    images: list[tuple[str, Tensor]],
    config: AuditConfig,
    data_dir: Path | None,
    bar: tqdm,
) -> tuple[TransferResult | None, str]:
    """Transfer of PGD at the largest budget from the public DnCNN-25s onto the grey models."""
    grey = [m for m in models if m.channels == 1]
    if not config.transfer:
        return None, "transfer left out (--no-transfer)"
    if not grey:
        return None, "transfer skipped: the public DnCNN-25s are grey, the models are colour"
    try:
        public = {name: load_model(name, data_dir) for name in PUBLIC}
    except (FileNotFoundError, ValueError) as err:
        return None, f"transfer skipped: {err}"
    targets = {**public, **{m.name: m.denoiser for m in grey}}
    eps = config.budgets[-1]
    factory = partial(worst.attack, "pgd", eps=eps, config=config)
    batches = [im.batch for im in prepare(images, 1, config.tile)]
    result = transfer_matrix(
        targets, batches, config.sigma, factory, list(PUBLIC), config.seed, nonfinite="nan"
    )
    name, done = worst.TABLE[config.attack].upper(), worst.done(*worst.runs(config))
    result.meta["description"] = (
        f"{name} eps {config.show(eps)} ({config.units}), {done},\ncrafted on the public "
        f"DnCNN-25s; sigma {config.show(config.sigma)}"
    )
    bar.update(len(PUBLIC))
    return result, f"transfer: {name} at eps {config.show(eps)} crafted on {', '.join(PUBLIC)}"


def _audit_model(
    m: AuditModel, images: list[tuple[str, Tensor]], config: AuditConfig, bar: tqdm
) -> tuple[dict, dict[str, Tensor]]:
    prepared = prepare(images, m.channels, config.tile)
    noisy = add_noise([im.batch for im in prepared], config.sigma, config.seed)
    evidence, key = worst.Evidence(m.denoiser, config), worst.TABLE[config.attack]
    clean_psnr, clean_ssim, typ_noisy = [], [], []
    for im, y in zip(prepared, noisy, strict=True):
        out = denoise(m.denoiser, y, config.sigma)
        clean_psnr += psnr(im.batch, out, nonfinite="nan")
        clean_ssim += ssim(im.batch, out, nonfinite="nan")
        typ_noisy += typicality(im.batch, y, config.sigma)["atypical_windows"]
    row: dict = {
        "psnr_clean": per_image(clean_psnr, prepared, "psnr"),
        "ssim_clean": per_image(clean_ssim, prepared),
        "atypical_windows_noisy": per_image(typ_noisy, prepared),
        key: {},
    }
    for eps in config.budgets:
        row[key][config.show(eps)], attacked = _attack_rows(
            m, prepared, noisy, "pgd", eps, config, bar, evidence
        )
    row["obsatk"], _ = _attack_rows(
        m, prepared, noisy, "obsatk", config.obsatk_eps, config, bar, evidence
    )
    row.update(evidence.row(prepared, per_image))
    x, y, adv = prepared[0].batch[:1], noisy[0][:1], attacked[0][:1]
    example = {
        "clean": x,
        "noisy": y,
        "attacked": adv,
        "output": denoise(m.denoiser, y, config.sigma),
        "output_attacked": denoise(m.denoiser, adv, config.sigma),
    }
    return row, example


def _means(row: dict) -> dict:
    return {k: _means(v) if isinstance(v, dict) else float(np.mean(v)) for k, v in row.items()}


def run_audit(
    models: list[AuditModel],
    images: list[tuple[str, Tensor]],
    config: AuditConfig | None = None,
    data_dir: Path | None = None,
    progress: bool = True,
) -> AuditResult:
    """Audit every model on ``images`` (``(name, (1, C, H, W))`` pairs in [0, 1])."""
    config = config or AuditConfig()
    if not models or not images:
        raise ValueError("run_audit needs at least one model and one image")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ, got {names}")
    worst.check_models([m.channels for m in models], config)
    jobs = len(models) * len(images) * (len(config.budgets) + 1) + len(PUBLIC) * config.transfer
    data: dict = {
        "config": {**asdict(config), "budgets_as_typed": [config.show(b) for b in config.budgets]},
        "images": [name for name, _ in images],
        "models": {},
    }
    examples = {}
    with tqdm(total=jobs, desc="auditing", disable=not progress) as bar:
        for m in models:
            bar.set_postfix_str(m.name)
            row, examples[m.name] = _audit_model(m, images, config, bar)
            data["models"][m.name] = {
                "source": m.source,
                "channels": m.channels,
                "per_image": row,
                "mean": _means(row),
            }
        bar.set_postfix_str("transfer")
        result, note = _transfer(models, images, config, data_dir, bar)
    data["transfer_note"] = note
    data["transfer"] = result.to_dict() if result is not None else None
    if result is not None:
        for m in models:
            if m.name in result.targets:
                folded = {
                    s: per_image(
                        result.per_image[s][m.name], prepare(images, 1, config.tile), "psnr"
                    )
                    for s in result.sources
                }
                data["models"][m.name]["per_image"]["transfer"] = folded
                data["models"][m.name]["mean"]["transfer"] = _means(folded)
    worst.finish(data, config)
    return AuditResult(data, examples)
