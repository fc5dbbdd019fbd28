"""The TS training step: draw TS noise for a clean batch, denoise it, and weigh the loss.

Works with any ``nn.Module`` through :class:`~ts_defense.Denoiser` (clean or residual outputs,
noise-level maps or sigma arguments, list outputs): the model is always told the *nominal*
sigma. :func:`ts_loss` only computes the loss (you call ``backward``); :class:`TrainStep` also
does the update, with an optional ``accelerate.Accelerator`` for devices, mixed precision and
gradient accumulation, and refuses to apply a non-finite update.

Nothing here waits for the device except the non-finite check of :class:`TrainStep` (once or
twice per step; ``check_every`` defers it) and reading numbers from a :class:`StepResult`.

>>> step = TrainStep(model, optimizer, TSSampler(sigma=25 / 255, seed=0), predicts="noise")
>>> for clean in loader:
...     result = step(clean)            # result.loss, result.loss_id, result.loss_ood, ...
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_images, check_positive, check_type
from .._losses import LOSSES
from ..models.denoiser import Denoiser
from ..noise import typical
from ..noise.sampler import TSDraw, TSSampler

LossFn = Callable[[Tensor, Tensor], Tensor]
ON_NONFINITE = ("raise", "skip")


class Perturbation(Protocol):
    """Replaces part of a training batch (e.g. :class:`~.adversarial.Adversarial`).

    Called with the denoiser, the drawn noisy batch, its clean target and the nominal sigma
    per sample; returns the four to train on and a mask of the perturbed rows (rows added
    after the B drawn ones are perturbed copies). With ``wants_input_grad`` the returned noisy
    batch requires grad, and the backward pass of the step leaves its gradient there for the
    next call. An optional ``combine(loss, pred, target)`` computes the step's loss itself
    (a pair term between copies and originals); without it the loss is ``loss(pred, target)``.
    """

    wants_input_grad: bool

    def __call__(
        self, denoiser: Denoiser, noisy: Tensor, clean: Tensor, sigma: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingLoss(Protocol):
    """A loss on a batch and on a subset of its rows (for the ID / OOD / adversarial parts)."""

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor: ...

    def part(self, pred: Tensor, target: Tensor, rows: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class NamedLoss:
    """A loss of ``LOSSES``: the batch mean of its per-sample values, and their mean over
    ``rows`` for a part (a masked mean: reading a part never waits for the device)."""

    name: str

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        return LOSSES[self.name].per_sample(pred, target).mean()

    def part(self, pred: Tensor, target: Tensor, rows: Tensor) -> Tensor:
        return _masked_mean(LOSSES[self.name].per_sample(pred, target), rows)


@dataclass(frozen=True)
class CustomLoss:
    """A callable ``loss(pred, target) -> scalar``, checked to give a scalar; a part is the
    loss of the subset (NaN for none)."""

    fn: LossFn

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        value = self.fn(pred, target)
        if not isinstance(value, Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"loss must return a scalar tensor, got {got}")
        return value.reshape(())

    def part(self, pred: Tensor, target: Tensor, rows: Tensor) -> Tensor:
        if not bool(rows.any()):
            return torch.tensor(math.nan, device=pred.device)
        return self.fn(pred[rows], target[rows]).float()


@dataclass
class StepResult:
    """What one TS step computed, as tensors on the model's device: nothing here waits for the
    device until you read a number (``float(...)``, :meth:`as_dict`).

    loss: the batch loss (a scalar; with grad from :func:`ts_loss`).
    draw: the :class:`~ts_defense.TSDraw` the step used.
    skipped: the update was skipped because the loss or a gradient was not finite.
    loss_id, loss_ood: the loss over the in-distribution / out-of-distribution samples
        (NaN when the batch has none of them); computed when first read. Adversarial rows
        count in neither.
    loss_adv, n_adv: the loss over, and the number of, the rows a perturbation replaced (NaN
        and 0 without one).
    n_ood: how many samples got out-of-distribution noise and kept it (a 0-dim int64 tensor).
    deviation: each sample's noise deviation from the nominal entropy rate, (B,).
    adversarial: the (B,) mask of rows a perturbation replaced, or None.
    """

    loss: Tensor
    draw: TSDraw
    _parts: Callable[[], tuple[Tensor, Tensor, Tensor]] = field(repr=False)
    skipped: bool = False
    adversarial: Tensor | None = None
    noise_deviation: Tensor | None = field(default=None, repr=False)

    @cached_property
    def _loss_parts(self) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            return self._parts()

    @property
    def loss_id(self) -> Tensor:
        return self._loss_parts[0]

    @property
    def loss_ood(self) -> Tensor:
        return self._loss_parts[1]

    @property
    def loss_adv(self) -> Tensor:
        return self._loss_parts[2]

    @property
    def n_ood(self) -> Tensor:
        return _kept_ood(self.draw, self.adversarial).sum()

    @property
    def n_adv(self) -> Tensor:
        if self.adversarial is None:
            return torch.zeros((), dtype=torch.long)
        return self.adversarial.sum()

    @property
    def deviation(self) -> Tensor:
        return self.draw.deviation if self.noise_deviation is None else self.noise_deviation

    def as_dict(self) -> dict[str, float]:
        """Plain floats for logs (this reads from the device): loss, its parts, OOD count and
        deviation statistics. A part the batch has no rows for is left out (no ``loss_ood``
        without OOD rows), and so are ``loss_adv``/``n_adv`` without a perturbation: a NaN
        here is a real one."""
        dev = self.deviation
        n_ood, n_adv = int(self.n_ood), int(self.n_adv)
        n_plain = dev.shape[0] - n_ood - n_adv
        record = {"loss": float(self.loss.detach())}
        if n_plain:
            record["loss_id"] = float(self.loss_id)
        if n_ood:
            record["loss_ood"] = float(self.loss_ood)
        record["n_ood"] = float(n_ood)
        if n_adv:
            record["loss_adv"] = float(self.loss_adv)
        if self.adversarial is not None:
            record["n_adv"] = float(n_adv)
        record["deviation_mean"] = float(dev.mean())
        record["deviation_abs_max"] = float(dev.abs().max())
        record["skipped"] = float(self.skipped)
        return record


def resolve_loss(loss: str | LossFn | TrainingLoss) -> TrainingLoss:
    """A loss name (``LOSSES``) or a callable ``loss(pred, target) -> scalar`` as a
    :class:`TrainingLoss` (one already resolved is returned as it is)."""
    if isinstance(loss, (NamedLoss, CustomLoss)):
        return loss
    if isinstance(loss, str):
        LOSSES.lookup(loss)
        return NamedLoss(loss)
    if not callable(loss):
        raise TypeError(
            f"loss must be one of {', '.join(map(repr, LOSSES))} or a callable, "
            f"got {type(loss).__name__}"
        )
    return CustomLoss(loss)


def denoiser_for(
    model: nn.Module, predicts: str | None = None, noise_level: str | None = None
) -> Denoiser:
    """``model`` as a :class:`Denoiser`. A bare ``nn.Module`` needs ``predicts`` (what it
    outputs: a wrong guess trains the wrong target without an error); a ``Denoiser`` carries
    both settings, which given again must agree with it."""
    if isinstance(model, Denoiser):
        for name, given, own in (
            ("predicts", predicts, model.predicts),
            ("noise_level", noise_level, model.noise_level),
        ):
            if given is not None and given != own:
                raise ValueError(
                    f"{name}={given!r} contradicts the Denoiser, which has {name}={own!r}: "
                    f"leave {name} out (the Denoiser carries it)"
                )
        return model
    if predicts is None:
        raise TypeError(
            f"predicts is required for a bare {type(model).__name__}: predicts='noise' if it "
            f"outputs the noise residual (DnCNN and most pretrained denoisers), 'clean' if it "
            f"outputs the image"
        )
    return Denoiser(model, predicts=predicts, noise_level=noise_level or "none")


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


def _kept_ood(draw: TSDraw, adversarial: Tensor | None) -> Tensor:
    """The rows that got out-of-distribution noise and kept it (not replaced by a perturbation;
    rows a perturbation added are not drawn ones)."""
    if adversarial is None:
        return draw.ood
    ood = draw.ood
    if adversarial.shape[0] > ood.shape[0]:
        ood = torch.cat([ood, ood.new_zeros(adversarial.shape[0] - ood.shape[0])])
    return ood & ~adversarial


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    count = mask.sum()
    return torch.where(count > 0, (values * mask).sum() / count.clamp(min=1), math.nan)


def _parts(
    loss: TrainingLoss, pred: Tensor, target: Tensor, draw: TSDraw, adversarial: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """The loss over the plain, the OOD and the adversarial rows (NaN where there are none)."""
    ood = _kept_ood(draw, adversarial)
    adv = torch.zeros_like(ood) if adversarial is None else adversarial
    return (
        loss.part(pred, target, ~(ood | adv)),
        loss.part(pred, target, ood),
        loss.part(pred, target, adv),
    )


def ts_loss(
    denoiser: Denoiser,
    sampler: TSSampler,
    clean: Tensor,
    loss: str | LossFn = "mse",
    perturbation: Perturbation | None = None,
    check_finite: bool = True,
) -> StepResult:
    """Draw TS noise for ``clean``, denoise with the nominal sigma and return the loss and parts.

    perturbation: replaces part of the batch after the draw (adversarial training); its rows
        are left out of ``loss_id``/``loss_ood`` and make up ``loss_adv``.
    The loss is computed in float32 even when the model runs in half precision.
    ``check_finite=False`` skips the NaN/Inf check of ``clean`` (a host sync): the call then
    never waits for the device; a NaN in ``clean`` shows up as a NaN loss.
    """
    check_type("denoiser", denoiser, Denoiser, "a ts_defense.Denoiser")
    check_sampler(sampler)
    check_perturbation(perturbation)
    loss_fn = resolve_loss(loss)
    draw = sampler.draw(clean, check_finite=check_finite)
    noisy, sigma = draw.noisy, draw.sigma
    adv, deviation = None, None
    if perturbation is not None:
        noisy, clean, sigma, adv = perturbation(denoiser, noisy, clean, sigma)
        with torch.no_grad():
            deviation = typical.sample_deviation(noisy - clean, sigma)
    pred = denoiser(noisy, sigma).float()
    target = clean.float()

    combine = getattr(perturbation, "combine", None)
    value = loss_fn(pred, target) if combine is None else combine(loss_fn, pred, target)
    parts = functools.partial(_parts, loss_fn, pred.detach(), target, draw, adv)
    return StepResult(value, draw, parts, adversarial=adv, noise_deviation=deviation)


class TrainStep:
    """One TS optimisation step per call: draw, denoise, loss, backward, check, update.

    model: an ``nn.Module`` wrapped in a :class:`Denoiser` with ``predicts`` (required:
        ``"noise"`` for a residual network such as DnCNN, ``"clean"`` for one that outputs the
        image) and ``noise_level`` (default ``"none"``), or a ready :class:`Denoiser`, which
        carries both.
    optimizer: any ``torch.optim.Optimizer`` (prepared by ``accelerator`` if one is given).
    sampler: the :class:`TSSampler`; under several processes give each rank its own seed
        (:func:`rank_seed`).
    loss: ``"mse"``, ``"l1"``, ``"charbonnier"``, ``"sum_mse"`` (DnCNN recipe) or a callable.
    accelerator: an ``accelerate.Accelerator``: backward, gradient accumulation and clipping go
        through it; the sampler is registered for ``save_state``/``load_state``.
    max_grad_norm: clip gradients to this total norm (None: no clipping).
    The model's train/eval mode is left as you set it. The first batch is checked: NaN/Inf,
    and values above twice the sampler's ``data_range`` (images in 0..255 given as image
    units, which would train with almost no noise) are a ``ValueError``.
    on_nonfinite: ``"raise"`` (default) stops at the first NaN/Inf loss or gradient with a
        ``FloatingPointError`` before the weights change; ``"skip"`` drops that update. Either
        way buffers the forward pass moved (batch-norm running statistics) are restored. A NaN
        or Inf in ``clean`` raises ``ValueError`` (found through the loss, not checked apart).
    check_every: read the non-finite check every this many steps. 1 (default) checks each
        step before its update, which waits for the device once per step. N > 1 keeps
        the check on the device and reads it every N steps (and in :meth:`check`): no wait in
        between, but a bad step's update is applied and reported up to N - 1 steps late
        (``on_nonfinite="raise"`` only).
    perturbation: replaces part of each batch after the draw, e.g. an
        :class:`~.adversarial.Adversarial` (adversarial training); its state is saved with
        the sampler's under Accelerate.
    float16 weights are refused (``ValueError``): their optimizer updates overflow unchecked;
    use Accelerate's ``mixed_precision="fp16"`` (float32 weights) or bfloat16 weights.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sampler: TSSampler,
        *,
        predicts: str | None = None,
        noise_level: str | None = None,
        loss: str | LossFn = "mse",
        accelerator: Any = None,
        max_grad_norm: float | None = None,
        on_nonfinite: str = "raise",
        check_every: int = 1,
        perturbation: Perturbation | None = None,
    ) -> None:
        self.denoiser = denoiser_for(model, predicts, noise_level)
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
        self.check_every = int(check_positive("check_every", check_every, integer=True))
        if self.check_every > 1 and self.on_nonfinite != "raise":
            raise ValueError(
                f"check_every={check_every} needs on_nonfinite='raise': a step can only be "
                f"skipped when it is checked before its update"
            )
        self.accelerator = accelerator
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        if any(p.dtype == torch.float16 for p in self.params):
            raise ValueError(
                "model has float16 weights: plain float16 training overflows (Adam's update turns "
                "finite gradients into NaN weights); keep float32 weights and train with "
                "accelerate.Accelerator(mixed_precision='fp16'), or use bfloat16 weights"
            )
        self.step_count = 0
        self._bad: Tensor | None = None  # deferred check: a non-finite step since the last read
        self._buffers: list[Tensor] = []
        self._saved: list[Tensor] = []
        if accelerator is not None:
            accelerator.register_for_checkpointing(RankState(sampler, accelerator))
            if perturbation is not None:
                accelerator.register_for_checkpointing(RankState(perturbation, accelerator))

    def _save_buffers(self) -> None:
        """Copy the buffers (batch-norm statistics) before the forward pass moves them."""
        buffers = [b for b in self.denoiser.buffers()]
        if [id(b) for b in buffers] != [id(b) for b in self._buffers]:
            self._buffers, self._saved = buffers, [b.detach().clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._saved, buffers)  # one launch, not one per buffer

    def _nonfinite(self, what: str, result: StepResult, clean: Tensor) -> StepResult:
        # The forward pass already moved running statistics (batch norm) with the bad batch.
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._saved)
        self.optimizer.zero_grad(set_to_none=True)  # the bad step's gradients go
        check_images(clean, "clean")  # a NaN/Inf input: say so (ValueError)
        if self.on_nonfinite == "raise":
            loss = float(result.loss.detach())
            raise FloatingPointError(
                f"non-finite {what} at step {self.step_count} (loss={loss:g}); "
                f"the weights were not updated. Check the model output and the loss, or pass "
                f"on_nonfinite='skip' to drop such steps"
            )
        result.skipped = True
        return result

    def __call__(self, clean: Tensor) -> StepResult:
        acc = self.accelerator
        if self.step_count == 0:  # once: later steps find a NaN through the loss, without a wait
            check_images(clean, "clean", data_range=self.sampler.config.data_range)
        if self.check_every == 1:
            self._save_buffers()
        with nullcontext() if acc is None else acc.accumulate(self.denoiser.model):
            result = ts_loss(
                self.denoiser, self.sampler, clean, self.loss, self.perturbation, check_finite=False
            )
            result = self._update(result, clean, sync=acc is None or acc.sync_gradients)
        self.step_count += 1
        if self.check_every > 1 and self.step_count % self.check_every == 0:
            self.check()
        result.loss = result.loss.detach()
        return result

    def check(self) -> None:
        """Read the deferred non-finite check (``check_every`` > 1) now; raise if it tripped."""
        bad, self._bad = self._bad, None
        if bad is not None and bool(bad):
            first = (self.step_count - 1) // self.check_every * self.check_every
            raise FloatingPointError(
                f"non-finite loss or gradient (or NaN/Inf in a clean batch) at a step in "
                f"{first}..{self.step_count - 1}; with check_every={self.check_every} its update "
                f"was applied: the weights may hold NaN, reload the last good checkpoint"
            )

    def _flag(self, value: Tensor) -> bool:
        """Is all of ``value`` finite? Read now when checking every step, else recorded on the
        device."""
        finite = torch.isfinite(value).all()
        if self.check_every == 1:
            return bool(finite)
        self._bad = ~finite if self._bad is None else self._bad | ~finite
        return True

    def _guarded(self, loss: Tensor) -> Tensor:
        """The loss, made NaN when the forward pass left a non-finite buffer: a huge (finite)
        batch can overflow batch-norm running statistics while the loss stays finite."""
        buffers = self._buffers if self.check_every == 1 else self.denoiser.buffers()
        floats = [b for b in buffers if b.is_floating_point()]  # listed once this step
        if not floats:
            return loss
        return loss + 0.0 * torch.stack(torch._foreach_norm(floats)).sum()

    def _update(self, result: StepResult, clean: Tensor, sync: bool) -> StepResult:
        """Backward and update, with one finite check (one host read when checking every
        step): of the (guarded) loss and the gradient norm together after backward on a step
        that updates; of the loss before backward on a step that only accumulates, so that a
        bad micro-batch never reaches the accumulated gradients."""
        acc = self.accelerator
        checked = self._guarded(result.loss.detach())
        if not sync and not self._flag(checked):
            return self._nonfinite("loss or batch statistics", result, clean)
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
            if norm is not None and not scaled:
                checked = torch.stack([checked.float(), norm.detach().float().to(checked.device)])
            if not self._flag(checked):
                loss_ok = bool(torch.isfinite(checked.reshape(-1)[0]))
                what = "gradient" if loss_ok else "loss or batch statistics"
                return self._nonfinite(what, result, clean)
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
