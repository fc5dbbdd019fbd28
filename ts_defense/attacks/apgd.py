"""APGD for denoisers (Croce & Hein, ICML 2020, arXiv 2003.01690): parameter-free PGD.

A fixed step size either stalls (too small) or oscillates (too large), and 10 steps are rarely
enough: a number measured that way overstates robustness. APGD needs no step size. It starts at
``2 * eps`` (``2 * radius`` in L2), takes momentum steps (0.75), keeps each image's best iterate
and, at checkpoints ``w_j = ceil(p_j * N)`` (``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j +
max(p_j - p_{j-1} - 0.03, 0.06)``), halves an image's step and restarts it from its best point
where progress stalled: fewer than 75% of the steps since the last checkpoint raised the
objective (condition 1), or the step was not halved at the last checkpoint and the best value
has not moved since (condition 2). Several restarts (independent random starts) keep the best.

Everything is a per-image tensor (step sizes, checkpoint conditions, best iterates): one batched
forward and backward pass per iteration, no loop over images. ``record`` holds, after each call,
the best objective (and PSNR) per iteration and per restart: the convergence curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_positive
from .._losses import LOSSES
from ..seeding import stream_seed
from .base import DenoiserAttack
from .constraints import normalize_l2, project_l2, project_linf, zero_mean, zero_mean_in_box

MOMENTUM = 0.75  # weight of the new step against the previous move (the paper's alpha)
RHO = 0.75  # condition 1: share of successful steps below which the step is halved
NONFINITE = ("raise", "record")


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j`` (1..steps, increasing) at which APGD may halve the step.

    The fractions ``p_j`` are kept in whole percent so that ``ceil`` sees exact values."""
    check_positive("steps", steps, integer=True)
    p, prev, out = 22, 0, []
    while p <= 100:
        w = -(-p * steps // 100)  # ceil(p * steps / 100)
        if not out or w > out[-1]:
            out.append(w)
        p, prev = p + max(p - prev - 3, 6), p
    return out


def halve(
    successes: Tensor, window: int, reduced: Tensor, best: Tensor, best_then: Tensor
) -> Tensor:
    """Per image, whether to halve the step at a checkpoint: too few successful steps in the
    ``window`` since the last checkpoint (condition 1), or not halved last time and no better
    than then (condition 2)."""
    return (successes < RHO * window) | (~reduced & (best <= best_then))


@dataclass
class APGDRecord:
    """What one call measured; shapes (restarts, steps + 1, B) unless said otherwise.

    loss: the best objective value so far within each restart (+inf once it went non-finite).
    psnr: the PSNR (dB, outputs clamped to [0, 1]) of that best iterate against the reference,
        or None (no reference, or several surrogates).
    step: the step size in use after each iteration (per image; halvings show up here).
    best_loss, best_psnr: (restarts, B), the best over restarts 0..r (what r + 1 restarts give).
    nonfinite: (B,) bool, the images whose loss or gradient was NaN/Inf at some iterate.
    """

    loss: Tensor
    psnr: Tensor | None
    step: Tensor
    best_loss: Tensor
    best_psnr: Tensor | None
    nonfinite: Tensor

    def psnr_curve(self, restart: int = 0) -> list[float]:
        """Mean PSNR over images of the best iterate after each iteration of one restart."""
        if self.psnr is None:
            raise ValueError("no PSNR recorded: attack with a reference and one surrogate")
        return self.psnr[restart].mean(1).tolist()


class APGD(DenoiserAttack):
    r"""APGD with an L-inf budget: sign steps, no step size to tune, restarts, best iterate.

    Distance measure: L-inf, ``|delta|_inf <= eps`` (image units: 8/255 for [0, 1] images).

    Arguments: model (a :class:`Denoiser` or a sequence of them), sigma (nominal noise level),
    eps (8/255), steps (100), restarts (1, by keyword: each restart ``r`` draws its start from
    the seed ``stream_seed(seed, "attack") + r``), objective (``"clean"``, ``"output"`` or
    ``"noisy"``), loss (a name of ``LOSSES``, summed over each image's pixels, or a callable
    returning one value per image, shape (B,)), clip (None), random_start (True), seed (0),
    nonfinite (by keyword: ``"raise"``: a NaN/Inf loss or gradient is an error naming the
    images; ``"record"``: such an image returns the point where it happened, listed in
    ``record.nonfinite``).

    Shapes: noisy and reference (B, C, H, W); returns the attacked noisy input (B, C, H, W).

    >>> attack = APGD(Denoiser(dncnn, predicts="noise"), sigma=25 / 255, eps=8 / 255)
    >>> adv = attack(noisy, clean); attack.record.psnr_curve()
    """

    default_steps = 100

    def __init__(
        self, *args: Any, restarts: int = 1, nonfinite: str = "raise", **options: Any
    ) -> None:
        if "alpha" in options:
            raise TypeError(
                "alpha: APGD has no step size to tune (it starts at 2 * eps and halves it where "
                "progress stalls)"
            )
        super().__init__(*args, **options)
        self.restarts = check_positive("restarts", restarts, integer=True)
        self.nonfinite = check_choice("nonfinite", nonfinite, NONFINITE)
        self.seed = options.get("seed", 0)
        if restarts > 1 and not self.random_start:
            raise ValueError(
                "restarts: restarts differ only by their random start: set random_start=True "
                "or restarts=1"
            )
        loss = options.get("loss", "mse")
        self._per_image = loss if callable(loss) else LOSSES[loss].sample_totals
        self.record: APGDRecord | None = None

    # -- the norm: what APGDL2 redefines ------------------------------------------------------
    def default_alpha(self) -> float:
        """The first step: twice the budget (as in the paper)."""
        return 2 * self.eps

    def radius(self, noisy: Tensor) -> Tensor:
        """The budget per image, (B, 1, 1, 1) float64: ``eps``."""
        return torch.full((noisy.shape[0], 1, 1, 1), self.eps, dtype=torch.float64)

    def start(self, noisy: Tensor, gen: torch.Generator) -> Tensor:
        """A random point of the ball (before projection)."""
        draw = torch.rand(noisy.shape, generator=gen, dtype=noisy.dtype).to(noisy.device)
        return (2 * draw - 1) * self.eps

    def direction(self, grad: Tensor) -> Tensor:
        """The unit step: the sign of the gradient (steepest ascent in L-inf)."""
        return grad.sign()

    def project(self, delta: Tensor, noisy: Tensor) -> Tensor:
        return self.clip_delta(project_linf(delta, self.eps), noisy)

    # -- the algorithm ------------------------------------------------------------------------
    def restart_seed(self, restart: int) -> int:
        """The seed of restart ``restart``'s random start."""
        return (stream_seed(self.seed, "attack") + restart) % 2**63

    def evaluate(
        self, noisy: Tensor, delta: Tensor, refs: list[Tensor], reference: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Per image at ``noisy + delta``: the objective (B,), its gradient, the PSNR of the
        output against ``reference`` (or None) and whether both are finite (B,)."""
        delta = delta.detach().requires_grad_(True)
        adv = noisy + delta
        outs = [den(adv, self.sigma) for den in self.denoisers]
        values = [
            self.check_loss_value(
                self._per_image(out, ref), (noisy.shape[0],), "one value per image"
            )
            for out, ref in zip(outs, refs, strict=True)
        ]
        value = values[0] if len(values) == 1 else torch.stack(values).mean(0)
        if self.objective == "noisy":
            value = -value
        (grad,) = torch.autograd.grad(value.sum(), delta)
        value = value.detach()
        finite = torch.isfinite(value) & torch.isfinite(grad.flatten(1)).all(1)
        psnr = None
        if reference is not None and len(outs) == 1:
            err = (outs[0].detach().clamp(0, 1) - reference).double().square().flatten(1)
            psnr = -10 * torch.log10(err.mean(1))
        return value, grad, psnr, finite

    def run(
        self, noisy: Tensor, refs: list[Tensor], reference: Tensor | None, restart: int
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None, Tensor, Tensor]:
        """One restart: the best perturbation per image and its objective and PSNR, the
        per-iteration histories (objective, PSNR, step) and the non-finite images."""
        b = noisy.shape[0]
        gen = torch.Generator().manual_seed(self.restart_seed(restart))
        if self.random_start:
            x = self.project(self.start(noisy, gen), noisy)
        elif self.objective == "output":  # its gradient vanishes at delta = 0: nudge off it
            x = self.project(1e-3 * self.start(noisy, gen), noisy)
        else:
            x = torch.zeros_like(noisy)
        view = (b, 1, 1, 1)
        eta = 2 * self.radius(noisy).to(noisy)  # the first step: twice the budget
        f, g, psnr, finite = self.evaluate(noisy, x, refs, reference)
        bad = ~finite
        f = torch.where(bad, math.inf, f)  # a broken model is the attack's best outcome
        g = torch.where(bad.view(view), 0.0, g)
        if psnr is not None:
            psnr = torch.where(bad, math.nan, psnr)
        best_x, best_f, best_g, best_psnr = x, f, g, psnr
        losses, psnrs, steps_ = [best_f], [best_psnr], [eta.flatten()]
        marks = checkpoints(self.steps)
        last, successes = 0, torch.zeros(b, device=noisy.device)
        reduced = torch.zeros(b, dtype=torch.bool, device=noisy.device)
        best_then = best_f
        x_prev = x
        for k in range(self.steps):
            z = self.project(x + eta * self.direction(g), noisy)
            if k:
                z = self.project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_prev), noisy)
            x_prev, x = x, z
            f_new, g, psnr, finite = self.evaluate(noisy, x, refs, reference)
            newly_bad = ~finite & ~bad
            bad = bad | newly_bad
            f_new = torch.where(newly_bad, math.inf, f_new)
            g = torch.where(bad.view(view), 0.0, g)
            successes += (f_new > f).to(successes.dtype)
            f = f_new
            better = (f > best_f) & (~bad | newly_bad)
            best_x = torch.where(better.view(view), x, best_x)
            best_g = torch.where(better.view(view), g, best_g)
            best_f = torch.where(better, f, best_f)
            if psnr is not None:
                best_psnr = torch.where(better, psnr, best_psnr)
                best_psnr = torch.where(bad, math.nan, best_psnr)
            if k + 1 in marks:
                cut = halve(successes, k + 1 - last, reduced, best_f, best_then)
                eta = torch.where(cut.view(view), eta / 2, eta)
                x = torch.where(cut.view(view), best_x, x)
                g = torch.where(cut.view(view), best_g, g)
                f = torch.where(cut, best_f, f)
                reduced, best_then, last = cut, best_f, k + 1
                successes = torch.zeros_like(successes)
            losses.append(best_f)
            psnrs.append(best_psnr)
            steps_.append(eta.flatten())
        history = torch.stack(losses)
        psnr_history = None if psnr is None else torch.stack(psnrs)
        return best_x, best_f, best_psnr, history, psnr_history, torch.stack(steps_), bad

    def forward(self, noisy: Tensor, reference: Tensor | None = None) -> Tensor:
        """The attacked noisy input ``noisy + delta`` (detached), for validated tensors."""
        noisy = noisy.detach().to(self.device)
        reference = None if reference is None else reference.detach().to(self.device)
        refs = self.references(noisy, reference)
        keys = ("loss", "psnr", "step", "best_loss", "best_psnr")  # APGDRecord's fields
        histories: dict[str, list] = {k: [] for k in keys}
        nonfinite = torch.zeros(noisy.shape[0], dtype=torch.bool, device=noisy.device)
        for r in range(self.restarts):
            x, f, psnr, loss, psnr_history, step, bad = self.run(noisy, refs, reference, r)
            if r == 0:
                delta, best_f, best_psnr = x, f, psnr
            else:  # keep, per image, the restart that reached the higher objective
                better = f > best_f
                delta = torch.where(better.view(-1, 1, 1, 1), x, delta)
                best_f = torch.where(better, f, best_f)
                if psnr is not None:
                    best_psnr = torch.where(better, psnr, best_psnr)
            nonfinite |= bad
            for key, value in zip(
                histories, (loss, psnr_history, step, best_f, best_psnr), strict=True
            ):
                histories[key].append(value)
        with_psnr = histories["psnr"][0] is not None
        self.record = APGDRecord(
            **{
                k: torch.stack(v).cpu() if with_psnr or "psnr" not in k else None
                for k, v in histories.items()
            },
            nonfinite=nonfinite.cpu(),
        )
        if self.nonfinite == "raise" and bool(nonfinite.any()):
            images = nonfinite.nonzero().flatten().tolist()
            shown = ", ".join(map(str, images[:10])) + (", ..." if len(images) > 10 else "")
            raise ValueError(
                f"{self.attack}: the model's loss or gradient is not finite during the attack on "
                f"image(s) {shown} of the batch (eps={self.eps:g}, sigma={self.sigma}): is the "
                f"budget in image units? (nonfinite='record' returns those points instead)"
            )
        adv = noisy + delta
        if self.clip is not None:
            adv = adv.clamp(*self.clip)
        return adv.detach()

    def describe(self) -> str:
        restarts = "1 restart" if self.restarts == 1 else f"{self.restarts} restarts"
        return f"{super().describe()}, {restarts}"


class APGDL2(APGD):
    r"""APGD with an L2 budget: normalised-gradient steps, otherwise as :class:`APGD`.

    Distance measure: L2, ``|delta|_2 <= eps * sqrt(N)`` per image (N = C*H*W): eps is the RMS
    per pixel in image units, as ObsAtk's (a budget ``rho`` relative to the noise norm, as
    :class:`L2DenoisingPGD`'s, is ``eps = rho * sigma``). With ``zero_mean=True`` the
    perturbation also has zero mean per image (ObsAtk's constraint: a brightness shift cannot
    undo it); steps then follow the gradient's zero-mean part.

    Arguments: as :class:`APGD`, eps (5/255), plus zero_mean (False, by keyword).

    >>> adv = APGDL2(Denoiser(dncnn, predicts="noise"), 25 / 255, eps=5 / 255)(noisy, clean)
    """

    budget_unit = "rms"
    norm = "L2"
    default_budget = 5 / 255

    def __init__(self, *args: Any, zero_mean: bool = False, **options: Any) -> None:
        super().__init__(*args, **options)
        if not isinstance(zero_mean, bool):
            raise TypeError(f"zero_mean must be True or False, got {zero_mean!r}")
        self.zero_mean = zero_mean

    def radius(self, noisy: Tensor) -> Tensor:
        """The budget per image, (B, 1, 1, 1) float64: ``eps * sqrt(N)``."""
        r = self.eps * math.sqrt(math.prod(noisy.shape[1:]))
        return torch.full((noisy.shape[0], 1, 1, 1), r, dtype=torch.float64)

    def start(self, noisy: Tensor, gen: torch.Generator) -> Tensor:
        """A random point on the sphere (on the zero-mean hyperplane with ``zero_mean``)."""
        draw = torch.randn(noisy.shape, generator=gen, dtype=noisy.dtype).to(noisy.device)
        unit = normalize_l2(zero_mean(draw) if self.zero_mean else draw)
        return unit * self.radius(noisy).to(noisy)

    def direction(self, grad: Tensor) -> Tensor:
        return normalize_l2(zero_mean(grad) if self.zero_mean else grad)

    def project(self, delta: Tensor, noisy: Tensor) -> Tensor:
        radius = self.radius(noisy).to(noisy.device)
        if not self.zero_mean:
            return project_l2(self.clip_delta(delta, noisy), radius)
        if self.clip is None:
            return project_l2(zero_mean(delta), radius)
        flat = zero_mean_in_box(delta, self.clip[0] - noisy, self.clip[1] - noisy)
        return project_l2(flat, radius)

    def describe(self) -> str:
        text = super().describe()
        return text.replace(" L2 ", " zero-mean L2 ", 1) if self.zero_mean else text


class APGDObsAtk(APGDL2):
    r"""APGD under ObsAtk's threat model: :class:`APGDL2` with ``zero_mean=True``.

    Distance measure: L2, ``|delta|_2 <= eps * sqrt(N)`` and zero mean per image.

    >>> adv = APGDObsAtk(Denoiser(dncnn, predicts="noise"), 25 / 255, eps=5 / 255)(noisy, clean)
    """

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, zero_mean=True, **options)
