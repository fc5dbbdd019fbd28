"""The audit itself: every model on every image under white-box attacks at each budget (APGD
under ``--attack auto``, PGD under ``pgd``), zero-mean L2 (ObsAtk) and transfer from the public
DnCNN-25s, with pass-through PSNR, gain and typicality; per image (tiles folded back) and in
the mean; under ``auto`` also the worst case and the evidence of convergence (:mod:`.worst`).

Tiles go through the models in batches of at most :func:`batch_size` tiles, so that the memory
of an audit does not grow with its images; the test noise of each tile is seeded by the seed,
the image's name and the tile's index, so every model of a comparison sees the same noisy
tiles whatever its batch size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..._checks import check_nonnegative, check_positive, check_seed
from ...attacks.base import is_differentiable
from ...evaluation.budget import attacked_metrics
from ...evaluation.metrics import add_noise, denoise, psnr, ssim
from ...evaluation.transfer import TransferResult, transfer_matrix
from ...evaluation.typicality import typicality
from ...models.denoiser import Denoiser
from ...models.dncnn import DnCNN
from ...models.zoo import load_model
from . import worst
from .images import TILES, Picture, Tiles, item_seed, per_image, plan
from .models import AuditModel

PUBLIC = ("dncnn-s-25", "kair-dncnn-25")  # transfer sources: public DnCNNs trained at sigma 25
# how tiles fold into one value per image (else their mean): PSNRs through their MSE, clean and
# attacked alike, so that a drop compares like with like
FOLD = {"psnr": "psnr", "psnr_clean": "psnr", "pass_through": "psnr", "window_max": "max"}
BATCH_MEMORY = 1 << 30  # bytes a batch of tiles may take in an attack step (default)
MAX_BATCH = 16  # tiles per batch at most
PROBE = 64  # side of the probe that measures a model's memory per pixel
LONG_RUN = 600  # seconds: a longer estimate comes with the options that shorten it


@dataclass
class AuditConfig:
    """Options of an audit, in image units ([0, 1]); ``units`` says how reports print them:
    ``"grey levels"`` (x 255, as the command line takes them) or ``"image units"``.

    tile, tiles: images are scored on at most ``tiles`` ``tile`` x ``tile`` tiles each, drawn
    at random from the image's grid (``"all"``: every tile; ``tile=0``: images whole); see
    :mod:`.images`. batch_memory: the bytes a batch of tiles may take (sets the batch size).
    attack: ``"auto"`` (APGD, the worst case over ``members``, convergence evidence) or
    ``"pgd"`` (the fast path); steps (None: 100 under auto, 10 under pgd) and restarts: see
    :mod:`.worst`.
    """

    sigma: float = 25 / 255
    budgets: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
    steps: int | None = None
    obsatk_eps: float = 5 / 255
    transfer: bool = True
    tile: int = 64
    tiles: int | str = TILES
    seed: int = 0
    units: str = "grey levels"
    batch_memory: int = BATCH_MEMORY
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
        check_nonnegative("tile", self.tile, integer=True)
        if 0 < self.tile < 8:
            raise ValueError(f"tile must be 0 (never cut) or at least 8 pixels, got {self.tile}")
        if self.tiles != "all":
            check_positive("tiles", self.tiles, integer=True)
        check_seed("seed", self.seed)
        check_positive("batch_memory", self.batch_memory, integer=True)
        if self.units not in ("grey levels", "image units"):
            raise ValueError(f"units must be 'grey levels' or 'image units', got {self.units!r}")

    def show(self, value: float) -> str:
        """A budget or noise level as the user typed it."""
        return f"{value * 255:g}" if self.units == "grey levels" else f"{value:.4g}"

    def protocol(self) -> str:
        """How the images are scored, in words."""
        if not self.tile:
            return "whole images"
        larger = f"images larger than {self.tile} x {self.tile}"
        if self.tiles == "all":
            return f"{larger} cut into tiles of that size, all scored"
        return (
            f"{larger} scored on at most {self.tiles} random tiles of that size (--tiles all: "
            f"every tile)"
        )


@dataclass
class AuditResult:
    """``data``: everything the report says (JSON-ready); ``examples``: per model, the tensors
    of the strip (clean, noisy, attacked, outputs) of the first image's first tile."""

    data: dict
    examples: dict[str, dict[str, Tensor]] = field(default_factory=dict)


Images = Sequence[Picture | tuple[str, Tensor]]


def _pictures(images: Images) -> list[Picture]:
    return [im if isinstance(im, Picture) else Picture.from_tensor(*im) for im in images]


# -- memory and time -----------------------------------------------------------------------------
def _saved_bytes(den: Denoiser, x: Tensor, sigma: float) -> int:
    """Bytes autograd keeps for the backward pass of ``den`` on ``x`` (weights left out)."""
    weights = {p.untyped_storage().data_ptr() for p in den.parameters()}
    kept: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        den(x.clone().requires_grad_(True), sigma)
    return sum(kept.values())


def batch_size(
    den: Denoiser, channels: int, size: tuple[int, int], sigma: float, memory: int
) -> int:
    """Tiles of ``size`` per batch: ``memory`` over what one tile takes in an attack step.

    A tile takes what autograd keeps for one forward pass of the model (measured on a probe of
    at most ``PROBE`` x ``PROBE`` pixels and scaled to the tile: it grows with the model's
    depth and width), times 1.5 for the gradients in flight, plus twelve float32 copies of the
    tile (the attack's start, step and gradient, the metrics' float64 copies). The attack's
    steps run one after the other and its budget changes no tensor's size. Between 1 and
    ``MAX_BATCH``.
    """
    h, w = size
    ph, pw = min(h, PROBE), min(w, PROBE)
    per_pixel = _saved_bytes(den, torch.zeros(1, channels, ph, pw), sigma) / (ph * pw)
    tile = 1.5 * per_pixel * h * w + 12 * 4 * channels * h * w
    return int(max(1, min(MAX_BATCH, memory // tile)))


def _pass_seconds(den: Denoiser, x: Tensor, sigma: float) -> float:
    """Seconds per pixel of one forward + backward pass (after one warm-up pass)."""
    times = []
    for _ in range(2):
        y = x.clone().requires_grad_(True)
        start = time.perf_counter()
        den(y, sigma).square().sum().backward()
        times.append(time.perf_counter() - start)
    return times[-1] / x.numel()


@dataclass
class _Costs:
    """Measured seconds per pixel of a forward + backward pass: per model, and of a DnCNN-17
    (the public models the transfer crafts on)."""

    models: list[float]
    public: float


def _attackable(models: list[AuditModel]) -> None:
    for m in models:
        if not is_differentiable(m.denoiser):
            raise ValueError(
                f"model {m.name!r} has no gradient, and the audit attacks each model white-box: "
                f"use it as a transfer target instead (ts-defense transfer --models ... {m.name})"
            )


def _measure(models: list[AuditModel], tiles: list[Tiles], config: AuditConfig) -> _Costs:
    _attackable(models)
    costs = []
    for m in models:
        _, x = next(tiles[0].batches(1, m.channels))
        costs.append(_pass_seconds(m.denoiser, x, config.sigma))
    public = 0.0
    if config.transfer and any(m.channels == 1 for m in models):
        _, x = next(tiles[0].batches(1, 1))
        with torch.random.fork_rng(devices=[]):  # its random weights leave the global stream
            dncnn = Denoiser(DnCNN(), predicts="noise").eval()
        public = _pass_seconds(dncnn, x, config.sigma)
    return _Costs(costs, public)


def _seconds(
    models: list[AuditModel], pictures: list[Picture], config: AuditConfig, costs: _Costs
) -> float:
    """The run time the passes of an audit take at the measured costs."""
    pixels = sum(t.pixels for t in plan(pictures, config.tile, config.tiles, config.seed))
    passes, crafting = worst.passes(config, len(PUBLIC))  # forwards: 1/3 pass
    total = sum(
        cost * pixels * m.channels * passes for m, cost in zip(models, costs.models, strict=True)
    )
    return total + crafting * pixels * costs.public * config.transfer


def estimate_seconds(models: list[AuditModel], images: Images, config: AuditConfig) -> float:
    """Run time estimate: one timed forward + backward pass per model, times the passes the
    audit makes (attack steps, and a third of a pass for each forward-only evaluation)."""
    pictures = _pictures(images)
    tiles = plan(pictures, config.tile, config.tiles, config.seed)
    return _seconds(models, pictures, config, _measure(models, tiles, config))


def estimate_text(models: list[AuditModel], images: Images, config: AuditConfig) -> str:
    """What the command prints before it starts: the estimate, and when it is over
    ``LONG_RUN`` seconds, the options that would bring it down with their estimates."""
    pictures = _pictures(images)
    tiles = plan(pictures, config.tile, config.tiles, config.seed)
    costs = _measure(models, tiles, config)
    seconds = _seconds(models, pictures, config, costs)
    text = (
        f"{len(models)} model(s) on {len(pictures)} image(s), {config.protocol()}, --attack "
        f"{config.attack}: estimated run time about {seconds:.0f} s (one timed forward + "
        f"backward pass, times the passes)"
    )
    if seconds <= LONG_RUN:
        return text
    options = []
    fewer = TILES if config.tiles == "all" else 1  # the default, or one tile
    if fewer != config.tiles and max(t.count for t in tiles) > fewer:
        quick = _seconds(models, pictures, replace(config, tiles=fewer), costs)
        options.append(f"--tiles {fewer} (about {quick:.0f} s)")
    fewer = worst.fewer_steps(config)
    if fewer:
        steps = next(
            (
                s
                for s in fewer
                if _seconds(models, pictures, replace(config, steps=s), costs) <= LONG_RUN
            ),
            fewer[-1],
        )
        quick = _seconds(models, pictures, replace(config, steps=steps), costs)
        options.append(f"--steps {steps} (about {quick:.0f} s)")
    if config.attack == "auto":
        quick = _seconds(models, pictures, worst.fast_path(config), costs)
        options.append(f"--attack pgd (about {quick:.0f} s; weaker: see the README)")
    if config.transfer:
        quick = _seconds(models, pictures, replace(config, transfer=False), costs)
        options.append(f"--no-transfer (about {quick:.0f} s)")
    if len(pictures) > 1:
        options.append(f"fewer images (about {seconds / len(pictures):.0f} s each)")
    return f"{text}.\nThat is over {LONG_RUN // 60} minutes; to bring it down: " + ", ".join(
        options
    )


# -- the audit -----------------------------------------------------------------------------------
def _batch_sizes(den: Denoiser, channels: int, tiles: list[Tiles], config: AuditConfig) -> dict:
    """:func:`batch_size` for each size of tile that comes more than once to an image."""
    sizes = {t.size for t in tiles if t.count > 1}
    return {s: batch_size(den, channels, s, config.sigma, config.batch_memory) for s in sizes}


def _noisy(x: Tensor, config: AuditConfig, name: str, first: int) -> Tensor:
    """Gaussian-noisy tiles, each seeded by the seed, its image's name and its index."""
    seeds = [item_seed(config.seed, "test-noise", name, first + i) for i in range(len(x))]
    return torch.cat([add_noise(x[i : i + 1], config.sigma, s)[0] for i, s in enumerate(seeds)])


def _extend(into: dict[str, list[float]], values: dict[str, list[float]]) -> None:
    for key, v in values.items():
        into.setdefault(key, []).extend(v)


def _fold(values: dict[str, list[float]], tiles: list[Tiles]) -> dict[str, list[float]]:
    return {k: per_image(v, tiles, FOLD.get(k, "mean")) for k, v in values.items()}


def _audit_model(
    m: AuditModel, tiles: list[Tiles], config: AuditConfig, bar: tqdm
) -> tuple[dict, dict[str, Tensor]]:
    kinds = {
        **{config.show(e): ("pgd", e) for e in config.budgets},
        "obsatk": ("obsatk", config.obsatk_eps),
    }
    attacks = {key: worst.attack(kind, m.denoiser, e, config) for key, (kind, e) in kinds.items()}
    evidence, table = worst.Evidence(m.denoiser, config), worst.TABLE[config.attack]
    batch = _batch_sizes(m.denoiser, m.channels, tiles, config)
    clean: dict[str, list[float]] = {}
    attacked: dict[str, dict[str, list[float]]] = {key: {} for key in attacks}
    example: dict[str, Tensor] = {}
    for im in tiles:
        for first, x in im.batches(batch.get(im.size, 1), m.channels):
            y = _noisy(x, config, im.name, first)
            out = denoise(m.denoiser, y, config.sigma)
            _extend(
                clean,
                {
                    "psnr_clean": psnr(x, out, nonfinite="nan"),
                    "ssim_clean": ssim(x, out, nonfinite="nan"),
                    "atypical_windows_noisy": typicality(x, y, config.sigma)["atypical_windows"],
                },
            )
            for key, attack in attacks.items():
                adv = attack(y, x)
                evidence.seen(*kinds[key], attack, x, y, adv)
                metrics = attacked_metrics(
                    m.denoiser, x, y, adv, config.sigma, with_ssim=True, nonfinite="nan"
                )
                typ = typicality(x, adv, config.sigma)
                metrics.update({k: typ[k] for k in ("d", "window_max", "atypical_windows")})
                _extend(attacked[key], metrics)
                if not example and key == config.show(config.budgets[-1]):
                    example = {"clean": x[:1], "noisy": y[:1], "attacked": adv[:1]}
            bar.update(len(x))
    example["output"] = denoise(m.denoiser, example["noisy"], config.sigma)
    example["output_attacked"] = denoise(m.denoiser, example["attacked"], config.sigma)
    row: dict = {
        **_fold(clean, tiles),
        table: {key: _fold(attacked[key], tiles) for key in attacks if key != "obsatk"},
        "obsatk": _fold(attacked["obsatk"], tiles),
        **evidence.row(tiles, per_image),
    }
    return row, example


def _concat(parts: list[TransferResult]) -> TransferResult:
    """One transfer result from those of consecutive batches of tiles."""
    first = parts[0]
    clean = {t: [v for p in parts for v in p.clean_per_image[t]] for t in first.targets}
    per = {
        s: {t: [v for p in parts for v in p.per_image[s][t]] for t in first.targets}
        for s in first.sources
    }
    return TransferResult(
        sources=first.sources,
        targets=first.targets,
        clean={t: float(np.mean(v)) for t, v in clean.items()},
        attacked={s: {t: float(np.mean(v)) for t, v in row.items()} for s, row in per.items()},
        clean_per_image=clean,
        per_image=per,
        meta={**first.meta, "images": sum(p.meta["images"] for p in parts)},
    )


def _transfer(
    models: list[AuditModel],
    tiles: list[Tiles],
    config: AuditConfig,
    data_dir: Path | None,
    bar: tqdm,
) -> tuple[TransferResult | None, str]:
    """Transfer of the L-inf attack at the largest budget (APGD under auto, PGD under pgd) from
    the public DnCNN-25s onto the grey models."""
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
    sizes = [_batch_sizes(d, 1, tiles, config) for d in public.values()]
    batch = {s: min(b[s] for b in sizes) for s in sizes[0]}
    parts = []
    for im in tiles:
        for first, x in im.batches(batch.get(im.size, 1), 1):
            factory = partial(
                worst.attack,
                "pgd",
                eps=eps,
                config=config,
                seed=item_seed(config.seed, "attack", im.name, first),
            )
            # the tiles' own test noise, as the white-box evaluation drew it (not one per batch)
            noisy = _noisy(x, config, im.name, first)
            seed = item_seed(config.seed, "test-noise", im.name, first)
            parts.append(
                transfer_matrix(
                    targets,
                    x,
                    config.sigma,
                    factory,
                    list(PUBLIC),
                    seed,
                    nonfinite="nan",
                    noisy=noisy,
                )
            )
            bar.update(len(x))
    result = _concat(parts)
    name, done = worst.TABLE[config.attack].upper(), worst.done(*worst.runs(config))
    result.meta["description"] = (
        f"{name} eps {config.show(eps)} ({config.units}), {done},\ncrafted on the public "
        f"DnCNN-25s; sigma {config.show(config.sigma)}"
    )
    return result, f"transfer: {name} at eps {config.show(eps)} crafted on {', '.join(PUBLIC)}"


def _means(row: dict) -> dict:
    return {k: _means(v) if isinstance(v, dict) else float(np.mean(v)) for k, v in row.items()}


def run_audit(
    models: list[AuditModel],
    images: Images,
    config: AuditConfig | None = None,
    data_dir: Path | None = None,
    progress: bool = True,
) -> AuditResult:
    """Audit every model on ``images``: :class:`Picture` objects (what :func:`resolve_images`
    returns) or ``(name, (1, C, H, W))`` pairs in [0, 1]."""
    config = config or AuditConfig()
    if not models or not images:
        raise ValueError("run_audit needs at least one model and one image")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ, got {names}")
    _attackable(models)
    worst.check_models([m.channels for m in models], config)
    pictures = _pictures(images)
    tiles = plan(pictures, config.tile, config.tiles, config.seed)
    count = sum(t.count for t in tiles)
    grey = any(m.channels == 1 for m in models)
    data: dict = {
        "config": {**asdict(config), "budgets_as_typed": [config.show(b) for b in config.budgets]},
        "protocol": config.protocol(),
        "images": [p.name for p in pictures],
        "tiles": {
            t.name: {"size": list(t.size), "corners": [list(c) for c in t.corners]} for t in tiles
        },
        "models": {},
    }
    examples = {}
    jobs = count * (len(models) + (config.transfer and grey))
    with tqdm(total=jobs, desc="auditing", unit="tile", disable=not progress) as bar:
        for m in models:
            bar.set_postfix_str(m.name)
            row, examples[m.name] = _audit_model(m, tiles, config, bar)
            data["models"][m.name] = {
                "source": m.source,
                "channels": m.channels,
                "per_image": row,
                "mean": _means(row),
            }
        bar.set_postfix_str("transfer")
        result, note = _transfer(models, tiles, config, data_dir, bar)
    data["transfer_note"] = note
    data["transfer"] = result.to_dict() if result is not None else None
    if result is not None:
        for m in models:
            if m.name in result.targets:
                folded = {
                    s: per_image(result.per_image[s][m.name], tiles, "psnr") for s in result.sources
                }
                data["models"][m.name]["per_image"]["transfer"] = folded
                data["models"][m.name]["mean"]["transfer"] = _means(folded)
    worst.finish(data, config)
    return AuditResult(data, examples)
