"""Transfer matrix: perturbations crafted once per source model, evaluated on every target.

Crafting costs one attack per source (it grows with the number of sources); evaluation costs
one denoising pass per target and source (cheap next to crafting). Non-differentiable
targets (BM3D) are evaluated but never used as sources.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Denoiser
from .base import DenoiserAttack, is_differentiable
from .evaluate import Images, add_noise, as_batches, denoise, psnr

AttackFactory = Callable[[Denoiser], DenoiserAttack]


@dataclass
class TransferResult:
    """Attacked PSNR (dB) per source and target; ``clean[t]`` is target t on the noisy input.

    ``per_image[s][t]`` and ``clean_per_image[t]`` hold the per-image values in image order.
    """

    sources: list[str]
    targets: list[str]
    clean: dict[str, float]
    attacked: dict[str, dict[str, float]]
    clean_per_image: dict[str, list[float]] = field(default_factory=dict)
    per_image: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def drop(self, source: str, target: str) -> float:
        """PSNR lost by ``target`` to the perturbations crafted on ``source`` (dB)."""
        return self.clean[target] - self.attacked[source][target]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        """Two tables: attacked PSNR, and the drop from clean (rows: source, columns: target)."""
        head = "| source \\ target | " + " | ".join(self.targets) + " |"
        rule = "|---|" + "---:|" * len(self.targets)
        clean = "| (no attack) | " + " | ".join(f"{self.clean[t]:.2f}" for t in self.targets)
        lines = [f"Attacked PSNR (dB); {self.meta.get('description', '')}\n", head, rule]
        lines.append(clean + " |")
        for s in self.sources:
            vals = " | ".join(f"{self.attacked[s][t]:.2f}" for t in self.targets)
            lines.append(f"| {s} | {vals} |")
        lines += ["\nPSNR drop from clean (dB; diagonal = white-box):\n", head, rule]
        for s in self.sources:
            vals = " | ".join(f"{self.drop(s, t):.2f}" for t in self.targets)
            lines.append(f"| {s} | {vals} |")
        return "\n".join(lines)


def transfer_matrix(
    models: Mapping[str, Denoiser],
    clean: Images,
    sigma: float,
    attack: AttackFactory,
    sources: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> TransferResult:
    """Craft perturbations on each source (default: every differentiable model) once, on one
    seeded Gaussian-noisy copy of ``clean``; evaluate every model on them.

    attack: builds the attack for a source, e.g. ``partial(DenoisingPGD, sigma=s, eps=8/255)``.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping of name -> Denoiser")
    for n, m in models.items():
        if not isinstance(m, Denoiser):
            raise TypeError(f"models[{n!r}] must be a ts_defense.Denoiser, got {type(m).__name__}")
    if not callable(attack):
        raise TypeError(f"attack must build an attack from a Denoiser, got {type(attack).__name__}")
    names = list(models)
    if isinstance(sources, str):
        raise TypeError(f"sources must be a list of model names, got {sources!r}")
    if sources is None:
        sources = [n for n in names if is_differentiable(models[n])]
    for s in sources:
        if s not in models:
            raise ValueError(f"source {s!r} is not among the models {names}")
    if not sources:
        raise ValueError("no differentiable source model to craft perturbations on")
    xs = as_batches(clean, "clean")
    ys = add_noise(xs, sigma, seed)
    with tqdm(
        total=len(sources) + len(names), disable=not progress, desc="transfer"
    ) as bar:  # closed before an error propagates
        perturbations: dict[str, list[Tensor]] = {}
        described = ""
        for s in sources:  # crafting: once per source
            bar.set_postfix_str(f"crafting on {s}")
            atk = attack(models[s])
            described = atk.describe()
            perturbations[s] = [atk(y, x) - y for x, y in zip(xs, ys, strict=True)]
            bar.update()
        clean_pi: dict[str, list[float]] = {}
        per_image: dict[str, dict[str, list[float]]] = {s: {} for s in sources}
        for t in names:  # evaluation: every target on the noisy and on each source's inputs
            bar.set_postfix_str(f"evaluating {t}")
            den = models[t]
            clean_pi[t] = [
                v for x, y in zip(xs, ys, strict=True) for v in psnr(x, denoise(den, y, sigma))
            ]
            for s in sources:
                per_image[s][t] = [
                    v
                    for x, y, d in zip(xs, ys, perturbations[s], strict=True)
                    for v in psnr(x, denoise(den, y + d, sigma))
                ]
            bar.update()
    return TransferResult(
        sources=list(sources),
        targets=names,
        clean={t: float(np.mean(v)) for t, v in clean_pi.items()},
        attacked={
            s: {t: float(np.mean(v)) for t, v in row.items()} for s, row in per_image.items()
        },
        clean_per_image=clean_pi,
        per_image=per_image,
        meta={
            "sigma": sigma,
            "seed": seed,
            "images": sum(len(x) for x in xs),
            "description": f"{described}; sigma {sigma * 255:.3g}/255".lstrip("; "),
        },
    )


def draw_transfer(ax: object, result: TransferResult, from_zero: bool = True) -> object:
    """Heatmap of the PSNR drop (rows: source, columns: target), values annotated, on a
    matplotlib Axes; returns the image for a colour bar. ``from_zero=False`` spans the colours
    over the drops' own range, so that close values still differ in colour."""
    drop = np.array([[result.drop(s, t) for t in result.targets] for s in result.sources])
    low = 0.0 if from_zero else float(drop.min())
    high = max(float(drop.max()), low + 1e-6)
    im = ax.imshow(drop, cmap="magma_r", vmin=low, vmax=high)
    ax.set_xticks(range(len(result.targets)), result.targets, rotation=30, ha="right")
    ax.set_yticks(range(len(result.sources)), result.sources)
    ax.set_xlabel("target (evaluated)")
    ax.set_ylabel("source (crafted on)")
    for i in range(drop.shape[0]):
        for j in range(drop.shape[1]):
            tone = "white" if drop[i, j] > low + 0.6 * (high - low) else "black"
            ax.text(j, i, f"{drop[i, j]:.2f}", ha="center", va="center", color=tone)
    ax.set_title(
        result.meta.get("description", "transfer of adversarial perturbations"), fontsize=9
    )
    return im


def plot_transfer(result: TransferResult, path: str | Path, from_zero: bool = False) -> Path:
    """Heatmap PNG of the PSNR drop (rows: source, columns: target), values annotated; the
    colours span the drops' own range unless ``from_zero`` (close values still differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(
        figsize=(1.6 + 1.5 * len(result.targets), 1.4 + 0.8 * len(result.sources))
    )
    label = "PSNR drop (dB)" if from_zero else "PSNR drop (dB; colours span this table)"
    fig.colorbar(draw_transfer(ax, result, from_zero), ax=ax, label=label)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_transfer(
    result: TransferResult, out_dir: str | Path, stem: str = "transfer"
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the heatmap ``<stem>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2))
    paths["md"].write_text(result.to_markdown() + "\n")
    plot_transfer(result, paths["png"])
    return paths
