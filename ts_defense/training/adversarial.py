"""Adversarial training: a share of each training batch is replaced by inputs crafted on the
current weights, always with the clean target and the nominal sigma.

Two ways to craft them, both with the attacks of :mod:`ts_defense.attacks` (their step and
projection, not a second implementation):

- crafted (hybrid adversarial training, HAT): ``steps`` attack steps on the share, an extra
  forward and backward pass of that share per training step;
- amortised ("free" adversarial training): the training step's own backward pass also gives
  the gradient of the loss with respect to its inputs; one attack step along it turns the
  fresh samples of this step into the adversarial share of the next (same clean patch, same
  noise, weights one update older). No extra pass: the cost is the input gradient alone.

With ``consistency`` > 0 the share is not replaced but added as copies ``y + delta`` of its
rows, and the loss gains a pair term pulling ``f(y + delta)`` towards ``f(y)`` (gradient through
both, as TRADES, Zhang et al. 2019): ``fit + w * pair`` (``normalised``: divided by ``1 + w``,
the published HAT of Yan et al. 2022). ``threat="random"`` draws ``delta`` as Gaussian noise of
RMS ``eps`` instead of crafting it; the pair term divided by ``eps**2`` then estimates the
squared Frobenius norm of the denoiser's input-output Jacobian per pixel (a finite-difference
Jacobian penalty with random directions).

>>> adv = Adversarial(share=0.5, eps=(0, 8 / 255), threat="linf", seed=0)
>>> step = TrainStep(model, opt, sampler, perturbation=adv, predicts="noise")
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_nonnegative,
    check_positive,
    check_probability,
    check_seed,
)
from ..models.denoiser import Denoiser
from ..seeding import stream_seed

if TYPE_CHECKING:  # the attacks (and torchattacks) load when a share is first crafted
    from ..attacks import DenoiserAttack

# threat model -> the attack whose step and projection craft it ("random": none, a draw)
THREATS = {"linf": "pgd", "l2": "obsatk", "random": None}
OBJECTIVES = ("clean", "output")


def _check_budget(eps: object) -> float | tuple[float, float]:
    """A budget in image units: a number in [0, 1] or a range ``(low, high)`` inside it."""
    values = eps if isinstance(eps, (tuple, list)) else (eps,)
    if len(values) not in (1, 2) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) for v in values
    ):
        raise TypeError(f"eps must be a number or a pair (low, high), got {eps!r}")
    if any(math.isfinite(v) and v < 0 for v in values):
        raise ValueError(f"eps={eps!r} must be >= 0: a budget is a size, not signed")
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in values):
        raise ValueError(
            f"eps={eps!r} must lie in [0, 1]: budgets are in image units (8/255, not 8)"
        )
    if len(values) == 1:
        return float(values[0])
    low, high = map(float, values)
    if low > high:
        raise ValueError(f"eps=({low}, {high}) must satisfy low <= high")
    return low, high


@dataclass(frozen=True)
class AdversarialConfig:
    """How the adversarial share of each batch is made.

    share: fraction of each batch replaced by adversarial inputs (amortised: at most 0.5, the
        other half supplies the next step's gradients).
    eps: the budget, a number or a range ``(low, high)`` drawn uniformly once per step; L-inf
        bound for ``"linf"``, RMS per pixel for ``"l2"`` (image units).
    threat: ``"linf"`` (sign steps, as denoising-PGD), ``"l2"`` (zero-mean L2, as ObsAtk) or
        ``"random"`` (Gaussian noise of RMS ``eps``, not crafted: needs ``consistency``).
    steps: attack steps per training step (crafted only; amortised is one step).
    amortised: craft from the training step's own input gradient (no extra pass).
    objective: what crafting pushes ``f(y + delta)`` away from: ``"clean"`` (the target) or
        ``"output"`` (``f(y)``, the pair term's own objective, as TRADES).
    consistency: weight of the pair term (0: the share replaces its rows, trained towards the
        target, as HAT); the copies make the batch ``share`` larger.
    normalised: divide ``fit + consistency * pair`` by ``1 + consistency`` (Yan et al.).
    warmup: training steps over which the budget grows linearly from 0 to ``eps`` (a
        curriculum; 0: the full budget from the first step).
    """

    share: float = 0.5
    eps: float | tuple[float, float] = (0.0, 8 / 255)
    threat: str = "linf"
    steps: int = 1
    amortised: bool = False
    objective: str = "clean"
    consistency: float = 0.0
    normalised: bool = False
    warmup: int = 0

    def __post_init__(self) -> None:
        check_probability("share", self.share)
        object.__setattr__(self, "eps", _check_budget(self.eps))
        check_choice("threat", self.threat, tuple(THREATS))
        check_positive("steps", self.steps, integer=True)
        if self.steps > 1000:
            raise ValueError(f"steps={self.steps} is too many attack steps per training step")
        for name in ("amortised", "normalised"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_choice("objective", self.objective, OBJECTIVES)
        check_nonnegative("consistency", self.consistency, high=1e6)
        check_nonnegative("warmup", self.warmup, high=10**12, integer=True)
        if self.consistency and self.amortised:
            raise ValueError(
                "consistency needs the share crafted in this step: set amortised=False"
            )
        if self.threat == "random" and not self.consistency:
            raise ValueError(
                "threat='random' draws, not crafts, the perturbation: it needs consistency > 0 "
                "(the Jacobian penalty's weight)"
            )
        if self.threat == "random" and (self.steps != 1 or self.objective != "clean"):
            raise ValueError("threat='random' is not crafted: leave steps and objective out")
        if self.threat == "random" and self.eps_max == 0:
            raise ValueError("threat='random' needs eps > 0: the finite difference's size")
        if self.amortised and self.steps != 1:
            raise ValueError("amortised adversarial training takes one step: set steps=1")
        if self.amortised and self.share > 0.5:
            raise ValueError(
                f"share={self.share} > 0.5: amortised training crafts the next share from the "
                f"fresh samples of this step, so at most half of the batch can be adversarial"
            )

    @property
    def eps_max(self) -> float:
        return self.eps[1] if isinstance(self.eps, tuple) else self.eps

    @property
    def adds_rows(self) -> bool:
        """Whether the share is added as copies (pair term) rather than replacing rows."""
        return self.consistency > 0

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> AdversarialConfig:
        """Build from a mapping (e.g. parsed YAML); unknown keys are an error."""
        if not isinstance(options, Mapping):
            raise TypeError(f"adversarial options must be a mapping, got {type(options).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown adversarial option(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        opts = dict(options)
        if isinstance(opts.get("eps"), list):
            opts["eps"] = tuple(opts["eps"])
        return cls(**opts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Adversarial:
    """Replaces ``share`` of each batch with adversarial inputs (see the module docstring).

    Called by :func:`ts_defense.ts_loss` / :class:`ts_defense.TrainStep` with the denoiser and
    the drawn batch; returns the batch to train on and which rows are adversarial. Reproducible
    from ``seed``; :meth:`state_dict` holds everything an exact resume needs.
    """

    def __init__(
        self, config: AdversarialConfig | None = None, seed: int = 0, **options: Any
    ) -> None:
        if config is not None and options:
            raise TypeError("pass either an AdversarialConfig or keyword options, not both")
        if config is not None and not isinstance(config, AdversarialConfig):
            raise TypeError(f"config must be an AdversarialConfig, got {type(config).__name__}")
        self.config = config if config is not None else AdversarialConfig.from_dict(options)
        self.seed = check_seed("seed", seed)
        # the budget is one number per step: a host generator, so drawing it never waits for
        # the device or runs a tensor op
        self.generator = random.Random(stream_seed(seed, "adversarial"))
        self._attack: DenoiserAttack | None = None
        self._for: Denoiser | None = None  # the denoiser the attack was built for
        self._pending: dict[str, Tensor] | None = None  # amortised: last step's fresh rows
        self._attack_state: Tensor | None = None
        self.calls = 0  # training steps seen (the warmup's clock)
        # threat "random": the directions' own stream (CPU, then moved: the same on every device)
        self._directions = torch.Generator().manual_seed(stream_seed(seed, "directions"))
        self._pairs: tuple[int, float] = (0, 0.0)  # this step's added rows and their budget

    @property
    def wants_input_grad(self) -> bool:
        """Amortised crafting reads the gradient the training backward leaves on the input."""
        return self.config.amortised

    def attack(self, denoiser: Denoiser) -> DenoiserAttack | None:
        """The attack (built once per denoiser) whose step and projection craft the share
        (None for ``threat="random"``, which draws it).

        A model wrapped for distributed training (DDP) is attacked through the module it
        wraps: crafting needs no gradient synchronisation between processes.
        """
        if THREATS[self.config.threat] is None:
            return None
        if self._attack is None or self._for is not denoiser:
            from ..attacks import make_attack

            cfg = self.config
            target = denoiser
            if isinstance(denoiser.model, nn.parallel.DistributedDataParallel):
                target = Denoiser(denoiser.model.module, denoiser.predicts, denoiser.noise_level)
            self._for = denoiser
            self._attack = make_attack(
                THREATS[cfg.threat],
                target,
                1.0,
                eps=max(cfg.eps_max, 1e-12),
                steps=cfg.steps,
                random_start=cfg.steps > 1,
                objective=cfg.objective,
                seed=self.seed,
            )
            if self._attack_state is not None:  # resumed: continue the start's stream
                self._attack._generator.set_state(self._attack_state)
                self._attack_state = None
        return self._attack

    def _budget(self, attack: DenoiserAttack | None) -> float:
        """Draw this step's budget (scaled by the warmup's ramp) and size the attack's step to
        it (the attack's own default: one step overshoots the ball and is projected back onto
        its edge)."""
        eps = self.config.eps
        if isinstance(eps, tuple):
            eps = self.generator.uniform(*eps)
        if self.config.warmup:
            eps *= min(1.0, self.calls / self.config.warmup)
        if attack is not None:
            attack.eps = eps
            attack.alpha = attack.default_alpha()
        return eps

    def __call__(
        self, denoiser: Denoiser, noisy: Tensor, clean: Tensor, sigma: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(noisy, clean, sigma, adversarial)`` for this step; sigma is per sample (B,)."""
        b = noisy.shape[0]
        k = min(round(self.config.share * b), b // 2 if self.config.amortised else b)
        adv = torch.zeros(b, dtype=torch.bool, device=noisy.device)
        attack = self.attack(denoiser)
        self.calls += 1
        if self.config.amortised:
            return self._amortised(attack, noisy, clean, sigma, adv, k)
        if self.config.adds_rows:
            return self._paired(attack, noisy, clean, sigma, adv, k)
        if k and self._budget(attack) > 0:
            attack.sigma = sigma[:k]
            crafted = attack(noisy[:k], clean[:k]).to(noisy.dtype)
            noisy = torch.cat([crafted, noisy[k:]])
        adv[:k] = True
        return noisy, clean, sigma, adv

    def _paired(
        self,
        attack: DenoiserAttack | None,
        noisy: Tensor,
        clean: Tensor,
        sigma: Tensor,
        adv: Tensor,
        k: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Append ``y + delta`` for the first ``k`` rows (crafted, or drawn for ``"random"``);
        :meth:`combine` pairs them with their originals."""
        eps = self._budget(attack) if k else 0.0
        self._pairs = (k, eps) if eps > 0 else (0, 0.0)
        if not self._pairs[0]:
            return noisy, clean, sigma, adv
        base = noisy[:k]
        if attack is None:
            draw = torch.randn(base.shape, generator=self._directions, dtype=torch.float32)
            moved = base + (eps * draw).to(base.device, base.dtype)
        else:
            attack.sigma = sigma[:k]
            ref = clean[:k] if self.config.objective == "clean" else None
            moved = attack(base, ref).to(noisy.dtype)
        adv = torch.cat([adv, torch.ones(k, dtype=torch.bool, device=noisy.device)])
        return (
            torch.cat([noisy, moved]),
            torch.cat([clean, clean[:k]]),
            torch.cat([sigma, sigma[:k]]),
            adv,
        )

    def combine(self, loss: Any, pred: Tensor, target: Tensor) -> Tensor:
        """The step's loss: ``loss`` (a ``TrainingLoss``) over the batch, or with
        ``consistency``, over the original rows plus the weighted pair term (see the module
        docstring)."""
        k, eps = self._pairs if self.config.adds_rows else (0, 0.0)
        if not k:
            return loss(pred, target)
        n = pred.shape[0] - k
        fit = loss(pred[:n], target[:n])
        pair = loss(pred[n:], pred[:k])
        if self.config.threat == "random":
            pair = pair / eps**2
        w = self.config.consistency
        total = fit + w * pair
        return total / (1 + w) if self.config.normalised else total

    def _amortised(
        self,
        attack: DenoiserAttack,
        noisy: Tensor,
        clean: Tensor,
        sigma: Tensor,
        adv: Tensor,
        k: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        prev = self._pending
        grad = None if prev is None else prev["input"].grad
        if prev is not None:
            prev = {key: t.to(noisy.device) for key, t in prev.items() if key != "input"}
        if prev is not None and grad is not None and k:
            k = min(k, prev["clean"].shape[0])
            eps = self._budget(attack)
            g = torch.nan_to_num(grad[-prev["clean"].shape[0] :][:k].detach().to(noisy.device))
            base = prev["noisy"][:k]
            delta = attack.project(attack.step(torch.zeros_like(base), g, {}), base)
            delta = delta if eps > 0 else torch.zeros_like(delta)
            noisy = torch.cat([base + delta.to(base.dtype), noisy[k:]])
            clean = torch.cat([prev["clean"][:k], clean[k:]])
            sigma = torch.cat([prev["sigma"][:k], sigma[k:]])
            adv[:k] = True
            fresh = slice(k, None)
        else:
            fresh = slice(0, None)
        noisy = noisy.detach().requires_grad_(True)
        self._pending = {
            "input": noisy,
            "clean": clean[fresh].detach(),
            "noisy": noisy[fresh].detach(),
            "sigma": sigma[fresh].detach(),
        }
        return noisy, clean, sigma, adv

    def state_dict(self) -> dict[str, Any]:
        """Config, budget generator, attack start generator and (amortised) pending rows."""
        state: dict[str, Any] = {
            "config": self.config.to_dict(),
            "seed": self.seed,
            "generator": _plain_state(self.generator.getstate()),
            "calls": self.calls,
            "directions": self._directions.get_state(),
        }
        if self._attack is not None:
            state["attack_generator"] = self._attack._generator.get_state()
        prev = self._pending
        if prev is not None and prev["input"].grad is not None:
            # references, not copies: fit snapshots this state before every step, and a copy to
            # the host would wait for the device; these tensors are replaced, never modified
            n = prev["clean"].shape[0]
            state["pending"] = {
                "clean": prev["clean"],
                "noisy": prev["noisy"],
                "sigma": prev["sigma"],
                "grad": prev["input"].grad[-n:].detach(),
            }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the config must match)."""
        if not isinstance(state, Mapping) or "generator" not in state:
            raise ValueError("state must come from Adversarial.state_dict()")
        saved = AdversarialConfig.from_dict(state.get("config", {}))
        if saved != self.config:
            raise ValueError(
                f"adversarial state was saved with {saved.to_dict()}, this run uses "
                f"{self.config.to_dict()}"
            )
        try:
            self.generator.setstate(_tuple_state(state["generator"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"state['generator'] is not a budget generator state: {err}") from err
        self._attack_state = state.get("attack_generator")
        calls = state.get("calls", 0)
        check_nonnegative("state['calls']", calls, high=10**15, integer=True)
        if "directions" in state:
            try:
                self._directions.set_state(state["directions"])
            except (TypeError, RuntimeError) as err:
                raise ValueError("state['directions'] is not a CPU generator state") from err
        self.calls = int(calls)
        self._pending = None
        pending = state.get("pending")
        if pending is not None:
            grad = pending["grad"]
            inp = torch.zeros_like(grad).requires_grad_(True)
            inp.grad = grad.clone()
            self._pending = {
                "input": inp,
                "clean": pending["clean"],
                "noisy": pending["noisy"],
                "sigma": pending["sigma"],
            }


def _plain_state(state: tuple) -> list:
    """``random.Random.getstate()`` as nested lists (plain data for checkpoints)."""
    return [list(x) if isinstance(x, tuple) else x for x in state]


def _tuple_state(state: object) -> tuple:
    if not isinstance(state, (list, tuple)):
        raise TypeError(f"got {type(state).__name__}")
    return tuple(tuple(x) if isinstance(x, list) else x for x in state)
