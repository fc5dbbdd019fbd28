"""The TS training step: draw TS noise for a clean batch, denoise it, and weigh the loss.

Works with any ``nn.Module`` through :class:`~ts_defense.Denoiser` (clean or residual outputs,
noise-level maps or sigma arguments, list outputs): the model is always told the *nominal*
sigma. :func:`ts_loss` only computes the loss (you call ``backward``); :class:`TrainStep` also
does the update, with an optional ``accelerate.Accelerator`` for devices, mixed precision and
gradient accumulation, and refuses to apply a non-finite update.

>>> step = TrainStep(model, optimizer, TSSampler(sigma=25 / 255, seed=0), predicts="noise")
>>> for clean in loader:
...     result = step(clean)            # result.loss, result.loss_id, result.loss_ood, ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from . import typical
from ._checks import check_choice, check_positive
from .denoiser import Denoiser
from .sampler import TSDraw, TSSampler

LossFn = Callable[[Tensor, Tensor], Tensor]


class Perturbation(Protocol):
    """Replaces part of a training batch (e.g. :class:`ts_defense.adversarial.Adversarial`).

    Called with the denoiser, the drawn noisy batch, its clean target and the nominal sigma
    per sample; returns the four to train on and a (B,) mask of the perturbed rows. With
    ``wants_input_grad`` the returned noisy batch requires grad, and the backward pass of the
    step leaves its gradient there for the next call.
    """

    wants_input_grad: bool

    def __call__(
        self, denoiser: Denoiser, noisy: Tensor, clean: Tensor, sigma: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


ON_NONFINITE = ("raise", "skip")


def _charbonnier(diff: Tensor, eps: float = 1e-3) -> Tensor:
    return (diff.square() + eps * eps).sqrt()


# Per-sample losses (B,): the batch loss is their mean, and the ID/OOD parts are masked means.
# "sum_mse" is the DnCNN recipe: sum of squared errors over the batch / (2 * batch size).
_PER_SAMPLE: dict[str, Callable[[Tensor], Tensor]] = {
    "mse": lambda diff: diff.square().flatten(1).mean(1),
    "l1": lambda diff: diff.abs().flatten(1).mean(1),
    "charbonnier": lambda diff: _charbonnier(diff).flatten(1).mean(1),
    "sum_mse": lambda diff: diff.square().flatten(1).sum(1) / 2,
}
LOSSES = tuple(_PER_SAMPLE)


@dataclass
class StepResult:
    """What one TS step computed. Tensors are detached except ``loss``.

    loss: the batch loss (a scalar; with grad from :func:`ts_loss`).
    loss_id, loss_ood: the loss over the in-distribution / out-of-distribution samples
        (NaN when the batch has none of them); adversarial rows count in neither.
    n_ood: how many samples got out-of-distribution noise (and kept it).
    loss_adv, n_adv: the loss over, and the number of, the adversarial rows (NaN / 0 without
        a perturbation).
    deviation: each sample's noise deviation from the nominal entropy rate, (B,).
    skipped: the update was skipped because the loss or a gradient was not finite.
    draw: the :class:`~ts_defense.TSDraw` the step used.
    """

    loss: Tensor
    loss_id: Tensor
    loss_ood: Tensor
    n_ood: int
    deviation: Tensor
    draw: TSDraw
    skipped: bool = False
    loss_adv: Tensor = dataclasses.field(default_factory=lambda: torch.tensor(math.nan))
    n_adv: int = 0

    def as_dict(self) -> dict[str, float]:
        """Plain floats for logs: loss, its parts, OOD count and deviation statistics."""
        dev = self.deviation
        return {
            "loss": float(self.loss.detach()),
            "loss_id": float(self.loss_id),
            "loss_ood": float(self.loss_ood),
            "n_ood": float(self.n_ood),
            "loss_adv": float(self.loss_adv),
            "n_adv": float(self.n_adv),
            "deviation_mean": float(dev.mean()),
            "deviation_abs_max": float(dev.abs().max()),
            "skipped": float(self.skipped),
        }


def resolve_loss(loss: str | LossFn) -> str | LossFn:
    """Check a loss name (``LOSSES``) or callable ``loss(pred, target) -> scalar``."""
    if isinstance(loss, str):
        return check_choice("loss", loss, LOSSES)
    if not callable(loss):
        raise TypeError(f"loss must be one of {LOSSES} or a callable, got {type(loss).__name__}")
    return loss


def check_sampler(sampler: object) -> TSSampler:
    """Require a :class:`TSSampler`."""
    if not isinstance(sampler, TSSampler):
        raise TypeError(f"sampler must be a TSSampler, got {type(sampler).__name__}")
    return sampler


def check_accelerator(accelerator: object) -> None:
    """Require None or an object with Accelerate's interface (``prepare``, ``backward``)."""
    if accelerator is not None and not all(
        hasattr(accelerator, a) for a in ("prepare", "backward", "process_index")
    ):
        raise TypeError(
            f"accelerator must be an accelerate.Accelerator or None, "
            f"got {type(accelerator).__name__}"
        )


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    count = mask.sum()
    return torch.where(count > 0, (values * mask).sum() / count.clamp(min=1), math.nan)


def check_perturbation(perturbation: object) -> Perturbation | None:
    """Require None or an object with the :class:`Perturbation` interface."""
    if perturbation is not None and not (
        callable(perturbation)
        and all(hasattr(perturbation, a) for a in ("wants_input_grad", "state_dict"))
    ):
        raise TypeError(
            f"perturbation must be a ts_defense.Adversarial (or follow the Perturbation "
            f"protocol) or None, got {type(perturbation).__name__}"
        )
    return perturbation  # type: ignore[return-value]


def ts_loss(
    denoiser: Denoiser,
    sampler: TSSampler,
    clean: Tensor,
    loss: str | LossFn = "mse",
    perturbation: Perturbation | None = None,
) -> StepResult:
    """Draw TS noise for ``clean``, denoise with the nominal sigma and return the loss and parts.

    perturbation: replaces part of the batch after the draw (adversarial training); its rows
        are left out of ``loss_id``/``loss_ood`` and make up ``loss_adv``.
    The loss is computed in float32 even when the model runs in half precision.
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a ts_defense.Denoiser, got {type(denoiser).__name__}")
    check_sampler(sampler)
    check_perturbation(perturbation)
    loss = resolve_loss(loss)
    draw = sampler.draw(clean)
    noisy, sigma, ood = draw.noisy, draw.sigma, draw.ood
    adv = torch.zeros_like(ood)
    deviation = draw.deviation
    if perturbation is not None:
        noisy, clean, sigma, adv = perturbation(denoiser, noisy, clean, sigma)
        ood = ood & ~adv
        with torch.no_grad():
            deviation = typical.deviation((noisy - clean).float(), sigma)
    pred = denoiser(noisy, sigma).float()
    target = clean.float()
    plain = ~(ood | adv)
    if isinstance(loss, str):
        per_sample = _PER_SAMPLE[loss](pred - target)
        value = per_sample.mean()
        with torch.no_grad():
            parts = [_masked_mean(per_sample.detach(), m) for m in (plain, ood, adv)]
    else:
        value = loss(pred, target)
        if not isinstance(value, Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"loss must return a scalar tensor, got {got}")
        value = value.reshape(())
        with torch.no_grad():
            nan = torch.tensor(math.nan)
            parts = [
                loss(pred[m], target[m]).float() if bool(m.any()) else nan
                for m in (plain, ood, adv)
            ]
    result = StepResult(value, parts[0], parts[1], int(ood.sum()), deviation, draw)
    result.loss_adv, result.n_adv = parts[2], int(adv.sum())
    return result


class TrainStep:
    """One TS optimisation step per call: draw, denoise, loss, backward, check, update.

    model: an ``nn.Module`` (wrapped in a :class:`Denoiser` with ``predicts`` and
        ``noise_level``) or a ready :class:`Denoiser`.
    optimizer: any ``torch.optim.Optimizer`` (prepared by ``accelerator`` if one is given).
    sampler: the :class:`TSSampler`; under several processes give each rank its own seed
        (:func:`rank_seed`).
    loss: ``"mse"``, ``"l1"``, ``"charbonnier"``, ``"sum_mse"`` (DnCNN recipe) or a callable.
    accelerator: an ``accelerate.Accelerator``: backward, gradient accumulation and clipping go
        through it; the sampler is registered for ``save_state``/``load_state``.
    max_grad_norm: clip gradients to this total norm (None: no clipping).
    The model's train/eval mode is left as you set it.
    on_nonfinite: ``"raise"`` (default) stops at the first NaN/Inf loss or gradient with a
        ``FloatingPointError`` before the weights change; ``"skip"`` drops that update. Either
        way buffers the forward pass moved (batch-norm running statistics) are restored.
    perturbation: replaces part of each batch after the draw, e.g. an
        :class:`~ts_defense.adversarial.Adversarial` (adversarial training); its state is saved
        with the sampler's under Accelerate.
    float16 weights are refused (``ValueError``): their optimizer updates overflow unchecked;
    use Accelerate's ``mixed_precision="fp16"`` (float32 weights) or bfloat16 weights.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sampler: TSSampler,
        *,
        predicts: str = "clean",
        noise_level: str = "none",
        loss: str | LossFn = "mse",
        accelerator: Any = None,
        max_grad_norm: float | None = None,
        on_nonfinite: str = "raise",
        perturbation: Perturbation | None = None,
    ) -> None:
        if isinstance(model, Denoiser):
            self.denoiser = model
        else:
            self.denoiser = Denoiser(model, predicts=predicts, noise_level=noise_level)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
        check_sampler(sampler)
        check_accelerator(accelerator)
        self.optimizer = optimizer
        self.sampler = sampler
        self.perturbation = check_perturbation(perturbation)
        self.loss = resolve_loss(loss)
        if max_grad_norm is not None:
            check_positive("max_grad_norm", max_grad_norm)
        self.max_grad_norm = max_grad_norm
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ON_NONFINITE)
        self.accelerator = accelerator
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        if any(p.dtype == torch.float16 for p in self.params):
            raise ValueError(
                "model has float16 weights: plain float16 training overflows (Adam's update turns "
                "finite gradients into NaN weights); keep float32 weights and train with "
                "accelerate.Accelerator(mixed_precision='fp16'), or use bfloat16 weights"
            )
        self.step_count = 0
        if accelerator is not None:
            accelerator.register_for_checkpointing(RankState(sampler, accelerator))
            if perturbation is not None:
                accelerator.register_for_checkpointing(RankState(perturbation, accelerator))

    def _nonfinite(self, what: str, result: StepResult) -> StepResult:
        # The forward pass already moved running statistics (batch norm) with the bad batch.
        with torch.no_grad():
            for buf, saved in zip(self._buffers, self._saved, strict=True):
                buf.copy_(saved)
        if self.on_nonfinite == "raise":
            loss = float(result.loss.detach())
            raise FloatingPointError(
                f"non-finite {what} at step {self.step_count} (loss={loss:g}); "
                f"the weights were not updated. Check the model output and the loss, or pass "
                f"on_nonfinite='skip' to drop such steps"
            )
        self.optimizer.zero_grad(set_to_none=True)
        result.skipped = True
        return result

    def __call__(self, clean: Tensor) -> StepResult:
        acc = self.accelerator
        self._buffers = list(self.denoiser.buffers())
        self._saved = [b.detach().clone() for b in self._buffers]
        if acc is None:
            result = ts_loss(self.denoiser, self.sampler, clean, self.loss, self.perturbation)
            result = self._update(result, sync=True)
        else:
            with acc.accumulate(self.denoiser.model):
                result = ts_loss(self.denoiser, self.sampler, clean, self.loss, self.perturbation)
                result = self._update(result, sync=acc.sync_gradients)
        self.step_count += 1
        result.loss = result.loss.detach()
        return result

    def _update(self, result: StepResult, sync: bool) -> StepResult:
        acc = self.accelerator
        if not bool(torch.isfinite(result.loss)):
            return self._nonfinite("loss", result)
        if acc is None:
            result.loss.backward()
        else:
            acc.backward(result.loss)
        if sync:
            scaled = acc is not None and getattr(acc, "scaler", None) is not None
            if self.max_grad_norm is not None:
                clip = acc.clip_grad_norm_ if acc is not None else nn.utils.clip_grad_norm_
                norm = clip(self.params, self.max_grad_norm)
            else:
                grads = [p.grad for p in self.params if p.grad is not None]
                norm = nn.utils.get_total_norm(grads) if grads and not scaled else None
            # fp16 loss scaling: the GradScaler itself skips steps with inf gradients.
            if norm is not None and not scaled and not bool(torch.isfinite(norm)):
                return self._nonfinite("gradient", result)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return result


def rank_seed(seed: int, accelerator: Any = None) -> int:
    """``seed + process index``: each rank draws different noise, reproducibly."""
    return seed + (accelerator.process_index if accelerator is not None else 0)


class RankState:
    """A random state (the sampler's, a perturbation's) for Accelerate's ``save_state``, per rank.

    Accelerate saves a registered object's ``state_dict`` from the main process only, so a
    plain registered sampler would resume every rank with rank 0's noise. This gathers the
    states of all ranks on save and gives each rank its own on load.
    """

    def __init__(self, sampler: TSSampler | Perturbation, accelerator: Any) -> None:
        self.sampler = sampler
        self.accelerator = accelerator

    def state_dict(self) -> dict[str, Any]:
        state = self.sampler.state_dict()
        if self.accelerator.num_processes == 1:
            return {"ranks": [state]}
        from accelerate.utils import gather_object

        return {"ranks": gather_object([state])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state["ranks"]
        if len(ranks) != self.accelerator.num_processes:
            raise ValueError(
                f"checkpoint holds sampler states of {len(ranks)} processes, this run has "
                f"{self.accelerator.num_processes}"
            )
        self.sampler.load_state_dict(ranks[self.accelerator.process_index])
