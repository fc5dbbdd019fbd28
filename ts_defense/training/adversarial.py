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

from .._checks import check_choice, check_positive, check_probability, check_seed
from ..models.denoiser import Denoiser
from ..seeding import stream_seed

if TYPE_CHECKING:  # the attacks (and torchattacks) load when a share is first crafted
    from ..attacks import DenoiserAttack

# threat model -> the attack whose step and projection craft it
THREATS = {"linf": "pgd", "l2": "obsatk"}


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
    threat: ``"linf"`` (sign steps, as denoising-PGD) or ``"l2"`` (zero-mean L2, as ObsAtk).
    steps: attack steps per training step (crafted only; amortised is one step).
    amortised: craft from the training step's own input gradient (no extra pass).
    """

    share: float = 0.5
    eps: float | tuple[float, float] = (0.0, 8 / 255)
    threat: str = "linf"
    steps: int = 1
    amortised: bool = False

    def __post_init__(self) -> None:
        check_probability("share", self.share)
        object.__setattr__(self, "eps", _check_budget(self.eps))
        check_choice("threat", self.threat, tuple(THREATS))
        check_positive("steps", self.steps, integer=True)
        if self.steps > 1000:
            raise ValueError(f"steps={self.steps} is too many attack steps per training step")
        if not isinstance(self.amortised, bool):
            raise TypeError(f"amortised must be True or False, got {self.amortised!r}")
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

    @property
    def wants_input_grad(self) -> bool:
        """Amortised crafting reads the gradient the training backward leaves on the input."""
        return self.config.amortised

    def attack(self, denoiser: Denoiser) -> DenoiserAttack:
        """The attack (built once per denoiser) whose step and projection craft the share.

        A model wrapped for distributed training (DDP) is attacked through the module it
        wraps: crafting needs no gradient synchronisation between processes.
        """
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
                seed=self.seed,
            )
            if self._attack_state is not None:  # resumed: continue the start's stream
                self._attack._generator.set_state(self._attack_state)
                self._attack_state = None
        return self._attack

    def _budget(self, attack: DenoiserAttack) -> float:
        """Draw this step's budget and size the attack's step to it (the attack's own default:
        one step overshoots the ball and is projected back onto its edge)."""
        eps = self.config.eps
        if isinstance(eps, tuple):
            eps = self.generator.uniform(*eps)
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
        if self.config.amortised:
            return self._amortised(attack, noisy, clean, sigma, adv, k)
        if k and self._budget(attack) > 0:
            attack.sigma = sigma[:k]
            crafted = attack(noisy[:k], clean[:k]).to(noisy.dtype)
            noisy = torch.cat([crafted, noisy[k:]])
        adv[:k] = True
        return noisy, clean, sigma, adv

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
