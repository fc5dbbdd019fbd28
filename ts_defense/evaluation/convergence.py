"""Evidence that an attack has converged, as data a report renders: attacked PSNR against
iterations and against restarts, and the sanity checks that reveal masked gradients (Carlini et
al. 2019; Croce & Hein 2020) — more iterations never weaker, white-box never weaker than
transfer, budget curves monotone, and a random perturbation of the same norm far weaker.

Each check is a :class:`Check` (passed or not, with its numbers); :func:`failures` lists those
that failed, for the first lines of a report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

from .._checks import check_positive
from ..attacks import ATTACKS, budget_options, make_attack
from ..attacks.apgd import APGD
from ..attacks.constraints import normalize_l2, per_sample_norm, zero_mean
from ..models.denoiser import Denoiser
from ..seeding import stream_seed
from .auto import WorstCase, attacked_scores, craft
from .budget import budget_curve
from .metrics import Images, add_noise, as_batches

ITERATIONS = (10, 25, 50, 100)
RANDOM_STREAM = 2**62  # offset of the random baseline's stream from the restarts' (0, 1, ...)


@dataclass(frozen=True)
class Check:
    """One sanity check: its name, whether it passed, a line with the numbers, the numbers."""

    name: str
    passed: bool
    detail: str
    numbers: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


def failures(checks: Sequence[Check]) -> list[Check]:
    """The checks that failed (a report prints them first)."""
    return [c for c in checks if not c.passed]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))  # NaN stays NaN: a check on it fails


def _rises(values: Sequence[float]) -> list[float]:
    """How much each value exceeds the one before it (NaN where either is NaN)."""
    return [b - a for a, b in pairwise(values)]


def _monotone(values: Sequence[float], tol: float) -> bool:
    """Never rising by more than ``tol``; False as soon as a value is NaN."""
    return not any(map(math.isnan, values)) and all(r <= tol for r in _rises(values))


def iteration_curve(
    target: Denoiser,
    clean: Images,
    sigma: float,
    iterations: Sequence[int] = ITERATIONS,
    attack: str = "apgd",
    budget: float = 8 / 255,
    seed: int = 0,
    **options: object,
) -> dict:
    """Attacked PSNR of ``attack`` (a name of ``ATTACKS``; ``budget`` in its own unit) run with
    each number of ``iterations`` on the same noisy images (``add_noise(clean, sigma, seed)``).

    Returns ``iterations``, mean ``psnr`` per count, ``per_image`` (one list per count) and
    ``psnr_clean``; ``options`` go to the attack (e.g. ``restarts=2``, ``objective="noisy"``)."""
    counts = [check_positive("iterations", n, integer=True) for n in iterations]
    if not counts or counts != sorted(set(counts)):
        raise ValueError(f"iterations must be increasing and non-empty, got {list(iterations)}")
    if not ATTACKS.lookup(attack).takes_steps:
        raise ValueError(f"attack {attack!r} takes no steps: no iteration curve")
    xs = as_batches(clean, "clean")
    ys = add_noise(xs, sigma, seed)
    per_image = []
    for n in counts:
        atk = make_attack(
            attack, target, sigma, **budget_options(attack, budget, n), seed=seed, **options
        )
        per_image.append(attacked_scores(target, xs, craft(atk, attack, xs, ys)[0], sigma)[0])
    return {
        "attack": attack,
        "budget": budget,
        "iterations": counts,
        "psnr": [_mean(p) for p in per_image],
        "per_image": per_image,
        "psnr_clean": _mean(attacked_scores(target, xs, ys, sigma)[0]),
    }


def _restart_runs(
    target: Denoiser,
    xs: list[Tensor],
    ys: list[Tensor],
    sigma: float,
    restarts: int,
    attack: str,
    budget: float,
    steps: int,
    seed: int,
    options: dict,
) -> tuple[Tensor, list[Tensor]]:
    """The recorded PSNR after each restart, (R, images), and the attacked inputs."""
    check_positive("restarts", restarts, integer=True)
    if not issubclass(ATTACKS.lookup(attack), APGD):
        raise ValueError(f"attack {attack!r} has no restarts: use an APGD attack")
    atk = make_attack(
        attack,
        target,
        sigma,
        **budget_options(attack, budget, steps),
        restarts=restarts,
        seed=seed,
        **options,
    )
    rows, attacked = [], []
    for x, y in zip(xs, ys, strict=True):
        attacked += craft(atk, attack, [x], [y])[0]
        if atk.record.best_psnr is None:
            raise ValueError("restart_curve needs one surrogate model (its PSNR is recorded)")
        rows.append(atk.record.best_psnr)
    return torch.cat(rows, dim=1), attacked


def restart_curve(
    target: Denoiser,
    clean: Images,
    sigma: float,
    restarts: int = 3,
    attack: str = "apgd",
    budget: float = 8 / 255,
    steps: int = 100,
    seed: int = 0,
    **options: object,
) -> dict:
    """Attacked PSNR after 1, 2, ... ``restarts`` restarts of an APGD attack, from one run
    (restart ``r`` draws from its own stream, so the first ``r`` restarts of a longer run are a
    run of ``r`` restarts). The PSNR is measured during the attack (outputs clamped to [0, 1]).

    Returns ``restarts`` (1..R), mean ``psnr`` per count and ``per_image``."""
    xs = as_batches(clean, "clean")
    ys = add_noise(xs, sigma, seed)
    table, _ = _restart_runs(target, xs, ys, sigma, restarts, attack, budget, steps, seed, options)
    return _restart_dict(table, attack, budget, steps)


def _restart_dict(table: Tensor, attack: str, budget: float, steps: int) -> dict:
    per_image = [row.tolist() for row in table]
    return {
        "attack": attack,
        "budget": budget,
        "steps": steps,
        "restarts": list(range(1, len(per_image) + 1)),
        "psnr": [_mean(p) for p in per_image],
        "per_image": per_image,
    }


def random_perturbation(delta: Tensor, norm: str, seed: int = 0) -> Tensor:
    """A random perturbation with each image's norm of ``delta``: random signs times its L-inf
    norm (``"L-inf"``), or a Gaussian direction (zero-mean where ``delta`` is) scaled to its L2
    norm (``"L2"``)."""
    gen = torch.Generator().manual_seed((stream_seed(seed, "attack") + RANDOM_STREAM) % 2**63)
    draw = torch.randn(delta.shape, generator=gen, dtype=delta.dtype).to(delta.device)
    if norm == "L-inf":
        return draw.sign() * delta.flatten(1).abs().max(1).values.view(-1, 1, 1, 1)
    if norm != "L2":
        raise ValueError(f"norm must be 'L-inf' or 'L2', got {norm!r}")
    means = delta.double().mean(dim=(1, 2, 3)).abs().max()
    direction = zero_mean(draw) if float(means) < 1e-7 else draw
    return normalize_l2(direction) * per_sample_norm(delta).to(delta.dtype)


def check_iterations(curve: dict, tol: float = 0.02) -> Check:
    """More iterations never weaker: the PSNR never rises by more than ``tol`` dB."""
    p = curve["psnr"]
    worst = max(_rises(p), default=0.0)
    ok = _monotone(p, tol)
    counts = ", ".join(map(str, curve["iterations"]))
    detail = " -> ".join(f"{v:.2f}" for v in p) + f" dB at {counts} iterations"
    return Check("more iterations never weaker", ok, detail, {"psnr": p, "largest_rise": worst})


def _last_step(name: str, curve: dict, counts: str, tol: float) -> Check:
    """Whether the last step of ``curve`` (``curve[counts]`` against ``curve["psnr"]``) moves
    the mean PSNR by less than ``tol`` dB."""
    p, n = curve["psnr"], curve[counts]
    if len(p) < 2:
        raise ValueError(f"check_{name} needs a curve of at least two {counts[:-1]} counts")
    change = p[-1] - p[-2]
    detail = f"{n[-2]} -> {n[-1]} {counts} moves the mean by {change:+.3f} dB (limit {tol:g})"
    return Check(name.replace("_", " "), abs(change) < tol, detail, {"change": change})


def check_converged(curve: dict, tol: float = 0.05) -> Check:
    """The last step of the table (a doubling of the iterations, or more) moves the mean PSNR by
    less than ``tol`` dB."""
    return _last_step("converged", curve, "iterations", tol)


def check_restarts(curve: dict, tol: float = 0.05) -> Check:
    """The last restart of a :func:`restart_curve` moves the mean PSNR by less than ``tol`` dB
    (more restarts would not change the figure); it needs two points."""
    return _last_step("restarts_converged", curve, "restarts", tol)


def check_white_box(result: WorstCase, tol: float = 0.02) -> Check:
    """White-box never weaker than transfer: the white-box members' worst case (mean PSNR) is
    at most ``tol`` dB above every transfer member's mean."""
    white = [m for m in result.members if not m.startswith("transfer:")]
    transfer = [m for m in result.members if m.startswith("transfer:")]
    if not white or not transfer:
        raise ValueError("check_white_box needs white-box and transfer members (sources=...)")
    table = np.array([result.per_member[m] for m in white])
    white_mean = float(np.mean(table.min(0)))
    means = {m: _mean(result.per_member[m]) for m in transfer}
    ok = all(white_mean <= v + tol for v in means.values())
    detail = f"white-box {white_mean:.2f} dB; " + ", ".join(
        f"{m} {v:.2f}" for m, v in means.items()
    )
    return Check(
        "white-box never weaker than transfer", ok, detail, {"white_box": white_mean, **means}
    )


def check_budget_monotone(
    budgets: Sequence[float], psnrs: Sequence[float], tol: float = 0.02
) -> Check:
    """The attacked PSNR never rises (by more than ``tol`` dB) as the budget grows."""
    pairs = sorted(zip(budgets, psnrs, strict=True))
    p = [v for _, v in pairs]
    ok = _monotone(p, tol)
    detail = ", ".join(f"{e * 255:.3g}/255: {v:.2f}" for e, v in pairs) + " dB"
    return Check("budget curve monotone", ok, detail, {"budget": [e for e, _ in pairs], "psnr": p})


def check_random(
    target: Denoiser,
    clean: Images,
    noisy: Images,
    attacked: Images,
    sigma: float,
    norm: str = "L-inf",
    seed: int = 0,
    factor: float = 0.5,
) -> Check:
    """A random perturbation of the same ``norm`` per image as the attack's (``attacked -
    noisy``) is far weaker: its PSNR drop is at most ``factor`` times the attack's. A masked
    gradient leaves the attack near its random start, so the two come close; a heuristic flag
    (a truly robust model can shrink the gap too), worth a look when it fails."""
    check_positive("factor", factor, maximum=1.0)
    xs, ys = as_batches(clean, "clean"), as_batches(noisy, "noisy")
    advs = as_batches(attacked, "attacked")
    rand = [y + random_perturbation(a - y, norm, seed) for y, a in zip(ys, advs, strict=True)]
    clean_p = _mean(attacked_scores(target, xs, ys, sigma)[0])
    drop_attack = clean_p - _mean(attacked_scores(target, xs, advs, sigma)[0])
    drop_random = clean_p - _mean(attacked_scores(target, xs, rand, sigma)[0])
    return check_random_drops(drop_attack, drop_random, factor)


def check_random_drops(drop_attack: float, drop_random: float, factor: float = 0.5) -> Check:
    """:func:`check_random` from the two mean PSNR drops (dB), measured elsewhere: the random
    perturbation's at most ``factor`` times the attack's, which must be > 0."""
    check_positive("factor", factor, maximum=1.0)
    ok = drop_attack > 0 and drop_random <= factor * drop_attack
    detail = (
        f"random drop {drop_random:.2f} dB vs attack drop {drop_attack:.2f} dB (limit {factor:g} x)"
    )
    numbers = {"drop_attack": drop_attack, "drop_random": drop_random}
    return Check("random perturbation far weaker", ok, detail, numbers)


def convergence(
    target: Denoiser,
    clean: Images,
    sigma: float,
    eps: float = 8 / 255,
    iterations: Sequence[int] = ITERATIONS,
    restarts: int = 3,
    budgets: Sequence[float] | None = None,
    worst: WorstCase | None = None,
    seed: int = 0,
    tol: float = 0.02,
) -> dict:
    """Everything a report shows for APGD-L-inf at ``eps`` on ``target``: the ``iterations``
    curve, the ``restarts`` curve (at the largest iteration count), the ``budgets`` curve
    (default ``eps`` / 4, / 2 and ``eps``, at the largest count) and the ``checks`` (white-box
    against transfer when a ``worst`` case with transfer members is given).

    Runs that coincide are made once: the budget curve's point at ``eps`` is the iteration
    curve's last, and the random baseline takes the restart run's perturbations."""
    iters = iteration_curve(target, clean, sigma, iterations, budget=eps, seed=seed)
    steps = iters["iterations"][-1]
    xs = as_batches(clean, "clean")
    ys = add_noise(xs, sigma, seed)
    table, attacked = _restart_runs(target, xs, ys, sigma, restarts, "apgd", eps, steps, seed, {})
    budgets = sorted(budgets) if budgets is not None else [eps / 4, eps / 2, eps]
    others = [b for b in budgets if b != eps]
    curve = {"budget": [], "psnr": []}
    if others:
        curve = budget_curve({"t": target}, xs, sigma, others, "apgd", steps, seed)["t"]
    curve = {"budget": [*curve["budget"], eps], "psnr": [*curve["psnr"], iters["psnr"][-1]]}
    checks = [check_iterations(iters, tol)]
    if len(iters["psnr"]) > 1:
        checks.append(check_converged(iters))
    checks.append(check_budget_monotone(curve["budget"], curve["psnr"], tol))
    checks.append(check_random(target, xs, ys, attacked, sigma, "L-inf", seed))
    if worst is not None and any(m.startswith("transfer:") for m in worst.members):
        checks.append(check_white_box(worst, tol))
    return {
        "iterations": iters,
        "restarts": _restart_dict(table, "apgd", eps, steps),
        "budgets": curve,
        "checks": checks,
    }
