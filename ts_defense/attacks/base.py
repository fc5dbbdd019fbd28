"""Shared base of the denoiser attacks: a :class:`torchattacks.Attack` that knows denoisers.

torchattacks assumes a classifier: labels, cross-entropy, inputs forced into [0, 1]. A denoiser
attack instead perturbs the *noisy* input ``y`` within a norm ball and pushes the output
``f(y + delta, sigma)`` (always through :class:`ts_defense.Denoiser`, with the nominal sigma)
according to an objective:

- ``"clean"``: away from the clean image ``x`` (needs it as ``reference``);
- ``"output"``: away from the model's own output ``f(y)`` (needs no clean image);
- ``"noisy"``: towards the noisy input ``y`` (the objective of the denoising-PGD reference code).

Clipping of ``y + delta`` is optional and off by default: Gaussian-noisy inputs leave [0, 1].
torchattacks' device placement and model-mode control (``set_model_training_mode``) keep working;
the mode of every module is restored after the attack, even when it fails. Its classifier-only
parts do not apply: the targeted modes (``set_mode_targeted_*``) and ``save`` (which iterates a
labelled data loader and counts accuracy) raise :class:`NotImplementedError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .._checks import (
    F32_MAX,
    check_choice,
    check_float32,
    check_images,
    check_interval,
    check_nonnegative,
    check_positive,
    check_seed,
)
from .._losses import LOSSES
from ..models.denoiser import Denoiser
from ..seeding import stream_seed

try:
    from torchattacks.attack import Attack
except ImportError as err:  # pragma: no cover - the extra is part of the dev install
    raise ImportError(
        "ts_defense.attacks needs torchattacks: pip install 'ts-defense[attacks]'"
    ) from err

OBJECTIVES = ("clean", "output", "noisy")
BUDGET_UNITS = {
    "image": "in image units",
    "ratio": "a share of the noise norm",
    "rms": "RMS per pixel, in image units",
}


def steps_text(steps: int, takes_steps: bool = True) -> str:
    """``"N steps"``, or ``"one step"`` for one step and for one-step attacks."""
    return f"{steps} steps" if takes_steps and steps != 1 else "one step"


def check_image_units(name: str, value: object, what: str) -> None:
    """Refuse a number (or a tensor's largest value) above 1: the Python API takes image units
    ([0, 1] images), so ``8`` is almost surely meant as ``8/255`` (the command line's grey
    levels). Other bad values are left to the caller's own checks."""
    if isinstance(value, Tensor):
        value = float(value.detach().max()) if value.numel() else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1:
        return
    shown = f"{value:g}" if value <= 255 else "8"
    raise ValueError(
        f"{name}={value!r} is too large for image units: {what} are in image units "
        f"({shown}/255, not {shown})"
    )


def is_differentiable(denoiser: Denoiser) -> bool:
    """False for wrapped models that declare ``differentiable = False`` (BM3D)."""
    return bool(getattr(denoiser.model, "differentiable", True))


@contextmanager
def preserved_modes(module: nn.Module) -> Iterator[nn.Module]:
    """Restore the train/eval mode of every submodule on exit, even after an error."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def as_denoisers(model: object) -> tuple[Denoiser, ...]:
    """One :class:`Denoiser` or a non-empty sequence of them (an ensemble of surrogates)."""
    members = tuple(model) if isinstance(model, (list, tuple, nn.ModuleList)) else (model,)
    if not members:
        raise ValueError("model: an ensemble needs at least one surrogate")
    for m in members:
        if not isinstance(m, Denoiser):
            raise TypeError(
                f"model must be a ts_defense.Denoiser (or a sequence of them), got "
                f"{type(m).__name__}: wrap it as Denoiser(model, predicts=..., noise_level=...)"
            )
        if not is_differentiable(m):
            raise ValueError(
                f"{type(m.model).__name__} is not differentiable: use it as a transfer target only"
            )
    return members


class DenoiserAttack(Attack):
    """Iterative attack on a denoiser; subclasses define the start, the step and the projection.

    model: a :class:`Denoiser`, or a sequence of them (the loss is averaged over the ensemble).
    sigma: the nominal noise level passed to the model (a number or a (B,) tensor).
    eps: the budget (its norm and its default are the subclass's); steps: iterations (default
        ``default_steps``); alpha: step size (default :meth:`default_alpha`).
    objective: ``"clean"``, ``"output"`` or ``"noisy"`` (see the module docstring).
    loss: a name of ``LOSSES`` (``"mse"``, ``"l1"``, ...) or a callable
        ``loss(output, reference) -> scalar``.
    clip: ``(low, high)`` range for the attacked input, or None (default: no clipping).
    random_start: start from a random point of the ball (default ``default_random_start``);
        seed: seeds that draw. (Without it, the ``"output"`` objective still starts 1e-3 of the
        way to a random point: its gradient is zero at the unperturbed input.)
    name: torchattacks' name of the attack (default: the class name).

    A subclass states what builds it in class attributes instead of a constructor of its own.
    """

    # What callers need to build any attack without knowing its name:
    budget = "eps"  # the keyword of the budget argument
    budget_unit = "image"  # its unit, a key of BUDGET_UNITS
    norm = "L-inf"  # the norm of the ball
    takes_steps = True  # False for one-step attacks: no steps, alpha or random_start
    # The defaults of the arguments left out:
    default_budget = 8 / 255
    default_steps = 10
    default_random_start = True
    min_models = 1  # surrogates the attack needs

    def __init__(
        self,
        model: Denoiser | Sequence[Denoiser],
        sigma: float | Tensor,
        eps: float | None = None,
        steps: int | None = None,
        *,
        alpha: float | None = None,
        objective: str = "clean",
        loss: str | Callable[[Tensor, Tensor], Tensor] = "mse",
        clip: tuple[float, float] | None = None,
        random_start: bool | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if not self.takes_steps:
            given = {"steps": steps, "alpha": alpha, "random_start": random_start}
            fixed = sorted(k for k, v in given.items() if v is not None)
            if fixed:  # one full step from the unperturbed input, by definition
                raise TypeError(
                    f"{type(self).__name__} takes no {', '.join(fixed)} "
                    f"(one step of size {self.budget})"
                )
            steps, random_start = 1, False
        self._denoisers = as_denoisers(model)
        if len(self._denoisers) < self.min_models:
            raise ValueError(
                f"model: {type(self).__name__} needs at least {self.min_models} surrogate "
                f"denoisers, got {len(self._denoisers)}"
            )
        surrogate = (
            self._denoisers[0] if len(self._denoisers) == 1 else nn.ModuleList(self._denoisers)
        )
        super().__init__(type(self).__name__ if name is None else name, surrogate)
        if isinstance(sigma, Tensor):
            if not bool(torch.isfinite(sigma).all()) or not bool((sigma > 0).all()):
                raise ValueError("sigma must be finite and > 0")
        else:
            check_positive("sigma", sigma)
        self.sigma = sigma
        check_image_units("sigma", sigma, "noise levels")
        eps = self.default_budget if eps is None else eps
        if self.budget_unit != "ratio":
            check_image_units("eps", eps, "budgets")
        # beyond F32_MAX / 100 the ball and its steps overflow float32
        self.eps = float(check_nonnegative(self.budget, eps, high=F32_MAX / 100))
        steps = self.default_steps if steps is None else steps
        check_positive("steps", steps, integer=True)
        self.steps = steps
        self.alpha = self.default_alpha() if alpha is None else alpha
        if alpha is not None:  # steps as large as float32 allows overflow to Inf, then NaN
            check_float32("alpha", check_positive("alpha", alpha), high=F32_MAX / 100)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        if callable(loss):
            self._loss_fn, self.loss = loss, getattr(loss, "__name__", type(loss).__name__)
        else:
            self._loss_fn, self.loss = LOSSES.lookup(loss).total, loss
        if clip is not None:
            clip = check_interval("clip", clip, low=-math.inf)
        self.clip = clip
        self.random_start = self.default_random_start if random_start is None else random_start
        # The start's own stream: the same seed's test noise must not share its bits.
        start_seed = stream_seed(check_seed("seed", seed), "attack")
        self._generator = torch.Generator().manual_seed(start_seed)

    @property
    def denoisers(self) -> tuple[Denoiser, ...]:
        """The surrogate denoiser(s) the perturbation is crafted on."""
        return self._denoisers

    # -- what subclasses define ---------------------------------------------------------------
    def default_alpha(self) -> float:
        """The step size when ``alpha`` is not given: the budget crossed 2.5 times in all."""
        return 2.5 * self.eps / self.steps

    def init_delta(self, noisy: Tensor) -> Tensor:
        """A random starting perturbation (used when ``random_start``; projected after)."""
        raise NotImplementedError

    def step(self, delta: Tensor, grad: Tensor, state: dict) -> Tensor:
        """One ascent step on ``delta`` given the gradient of the objective."""
        raise NotImplementedError

    def project(self, delta: Tensor, noisy: Tensor) -> Tensor:
        """Back onto the constraint set (the ball, and ``clip`` when set)."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------------
    def uniform(self, like: Tensor, low: float, high: float) -> Tensor:
        """Seeded uniform draw (on CPU, then moved: the same start on every device)."""
        draw = torch.rand(like.shape, generator=self._generator, dtype=like.dtype)
        return (draw * (high - low) + low).to(like.device)

    def normal(self, like: Tensor) -> Tensor:
        """Seeded standard normal draw of ``like``'s shape."""
        return torch.randn(like.shape, generator=self._generator, dtype=like.dtype).to(like.device)

    def clip_delta(self, delta: Tensor, noisy: Tensor) -> Tensor:
        """Keep ``noisy + delta`` inside ``clip`` (a no-op without it)."""
        if self.clip is None:
            return delta
        return (noisy + delta).clamp(*self.clip) - noisy

    def references(self, noisy: Tensor, reference: Tensor | None) -> list[Tensor]:
        """The tensor each ensemble member's output is compared with, per objective."""
        if self.objective == "clean":
            if reference is None:
                raise ValueError("objective 'clean' needs the clean image as reference")
            return [reference] * len(self._denoisers)
        if self.objective == "noisy":
            return [noisy] * len(self._denoisers)
        with torch.no_grad():
            return [den(noisy, self.sigma).detach() for den in self._denoisers]

    def check_loss_value(self, value: object, shape: tuple[int, ...], what: str) -> Tensor:
        """Require a loss value of ``shape`` (``what`` in words) that carries a gradient: shape
        and autograd flag only, no device sync."""
        if not isinstance(value, Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"loss {self.loss!r} must return {what}, got {got}")
        if not value.requires_grad:
            raise ValueError(
                "model: its output carries no gradient (no_grad or detach inside?): "
                "attack a differentiable model, or use it as a transfer target only"
            )
        return value

    def objective_value(self, adv: Tensor, refs: list[Tensor]) -> Tensor:
        """The quantity the attack ascends: the mean ensemble loss (negated for ``"noisy"``)."""
        losses = [
            self._loss_fn(den(adv, self.sigma), r)
            for den, r in zip(self._denoisers, refs, strict=True)
        ]
        for value in losses:
            self.check_loss_value(value, (), "a scalar tensor")
        total = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        return -total if self.objective == "noisy" else total

    def forward(self, noisy: Tensor, reference: Tensor | None = None) -> Tensor:
        """The attacked noisy input ``noisy + delta`` (detached), for validated tensors."""
        noisy = noisy.detach().to(self.device)
        reference = None if reference is None else reference.detach().to(self.device)
        refs = self.references(noisy, reference)
        if self.random_start:
            delta = self.project(self.init_delta(noisy), noisy)
        elif self.objective == "output":  # its gradient vanishes at delta = 0: nudge off it
            delta = self.project(1e-3 * self.init_delta(noisy), noisy)
        else:
            delta = torch.zeros_like(noisy)
        state: dict = {}
        finite = torch.ones((), dtype=torch.bool, device=noisy.device)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            value = self.objective_value(noisy + delta, refs)
            (grad,) = torch.autograd.grad(value, delta)
            finite &= torch.isfinite(value.detach() + grad.sum())  # sign(NaN) is 0: track it
            delta = self.project(self.step(delta.detach(), grad, state), noisy)
        adv = noisy + delta
        if not bool(finite & torch.isfinite(adv).all()):  # one check at the end, one sync
            raise ValueError(
                f"{self.attack}: the model's loss or gradient is not finite during the attack "
                f"(eps={self.eps:g}, sigma={self.sigma}): is the budget in image units?"
            )
        if self.clip is not None:
            adv = adv.clamp(*self.clip)
        return adv.detach()

    def __call__(self, noisy: Tensor, reference: Tensor | None = None) -> Tensor:
        """Attack ``noisy`` (B, C, H, W); ``reference`` is the clean image for ``"clean"``.

        Runs with torchattacks' model mode (eval by default) and restores every module's mode.
        """
        check_images(noisy, "noisy")
        if reference is not None:
            check_images(reference, "reference")
            if reference.shape != noisy.shape:
                raise ValueError(
                    f"reference shape {tuple(reference.shape)} differs from noisy "
                    f"{tuple(noisy.shape)}"
                )
        if self.clip is not None and (noisy.min() < self.clip[0] or noisy.max() > self.clip[1]):
            raise ValueError(
                f"noisy input leaves clip={self.clip}: clamp it first, or set clip=None "
                f"(the norm bound is measured from the given input)"
            )
        if isinstance(self.sigma, Tensor) and self.sigma.numel() not in (1, noisy.shape[0]):
            raise ValueError(
                f"sigma holds {self.sigma.numel()} values for a batch of {noisy.shape[0]}"
            )
        with preserved_modes(self.model), torch.enable_grad():  # works inside no_grad too
            self._change_model_mode(self.model.training)
            return self.forward(noisy, reference)

    def set_mode_targeted_by_function(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("denoiser attacks have no target labels")

    set_mode_targeted_by_label = set_mode_targeted_by_function
    set_mode_targeted_random = set_mode_targeted_by_function
    set_mode_targeted_least_likely = set_mode_targeted_by_function

    def save(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(
            "save expects a labelled classifier data loader: call the attack on each batch"
        )

    def describe(self) -> str:
        """The attack and its settings in words, for titles and legends."""
        value = f"{self.eps:.3g}" if self.budget_unit == "ratio" else f"{self.eps * 255:.3g}/255"
        steps = steps_text(self.steps, self.takes_steps)
        return f"{self.attack}, {self.norm} {self.budget} {value}, {steps}, {self.objective} target"

    def perturbation(self, noisy: Tensor, reference: Tensor | None = None) -> Tensor:
        """``attack(noisy, reference) - noisy``: the crafted perturbation delta."""
        return self(noisy, reference) - noisy.to(self.device)
