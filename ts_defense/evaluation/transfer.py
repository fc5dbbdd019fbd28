"""Transfer matrix: perturbations crafted once per source model, evaluated on every target.

Crafting costs one attack per source (it grows with the number of sources); evaluation costs
one denoising pass per target and source (cheap next to crafting). Non-differentiable
targets (BM3D) are evaluated but never used as sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from ..attacks.base import DenoiserAttack, is_differentiable
from ..models.denoiser import Denoiser
from .metrics import Images, add_noise, as_batches, denoise, psnr

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
    nonfinite: str = "raise",
    noisy: Images | None = None,
) -> TransferResult:
    """Craft perturbations on each source (default: every differentiable model) once, on one
    seeded Gaussian-noisy copy of ``clean`` (``add_noise(clean, sigma, seed)``, or ``noisy``
    when given: batches shaped as ``clean``'s, e.g. noise seeded per tile as a white-box
    evaluation drew it); evaluate every model on them.

    attack: builds the attack for a source, e.g. ``partial(DenoisingPGD, sigma=s, eps=8/255)``.
    nonfinite: ``"nan"`` scores a target's NaN/Inf output NaN instead of raising (see
    :func:`~.metrics.psnr`).
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
    if noisy is None:
        ys = add_noise(xs, sigma, seed)
    else:
        ys = as_batches(noisy, "noisy")
        if [y.shape for y in ys] != [x.shape for x in xs]:
            raise ValueError(
                f"noisy: batches of shapes {[tuple(y.shape) for y in ys]} for clean batches of "
                f"{[tuple(x.shape) for x in xs]}"
            )
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
                v
                for x, y in zip(xs, ys, strict=True)
                for v in psnr(x, denoise(den, y, sigma), nonfinite=nonfinite)
            ]
            for s in sources:
                per_image[s][t] = [
                    v
                    for x, y, d in zip(xs, ys, perturbations[s], strict=True)
                    for v in psnr(x, denoise(den, y + d, sigma), nonfinite=nonfinite)
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
