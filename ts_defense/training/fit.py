"""A complete small TS training loop for users who have none: random patches, Adam, progress.

>>> history = fit(DnCNN(depth=8, features=32), bundled_images(), steps=500, predicts="noise")
>>> history.column("loss")[-1]

Stopped and restarted with the same ``checkpoint`` path, it resumes where it stopped and ends
with the same weights as an uninterrupted run (model, optimizer, sampler, patch generator and
torch's global generator are all in the checkpoint, with the recipe that wrote it).

The parts: :func:`fit` checks its arguments, :func:`assemble` builds the run (:class:`Run`),
:class:`Checkpointer` saves and resumes it, and :func:`train` is the loop.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import (
    MAX_INT,
    check_images,
    check_nonnegative,
    check_positive,
    check_seed,
    check_type,
)
from .._progress import Progress
from ..noise.sampler import TSConfig, TSSampler
from ..seeding import stream_seed
from .adversarial import AdversarialConfig
from .checkpoint import check_file_path, read_checkpoint, restore_checkpoint, save_checkpoint
from .recipes import Recipe, make_recipe
from .step import LossFn, Perturbation, TrainStep, check_accelerator, denoiser_for, rank_seed


@dataclass
class History:
    """One record per logged step: ``step`` plus :meth:`StepResult.as_dict` (loss, parts, ...).

    A record leaves out what its step did not have (``loss_ood`` of a batch without OOD rows).
    """

    records: list[dict[str, float]] = field(default_factory=list)

    def column(self, key: str) -> list[float]:
        """The values of ``key`` over the logged steps (NaN for a step without it)."""
        if self.records and not any(key in r for r in self.records):
            keys = sorted({k for r in self.records for k in r})
            raise KeyError(f"no {key!r} in history; keys: {keys}")
        return [r.get(key, math.nan) for r in self.records]


class WeightAverage:
    """An exponential moving average of a model's floating-point parameters (EMA, as BasicSR's
    ``ema_decay`` and KAIR's ``E_decay``): ``shadow <- decay * shadow + (1 - decay) * weights``
    after every applied step, starting from the weights it is built on. Buffers (batch-norm
    statistics) are not averaged: the live ones stay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
        self.names = [n for n, _ in named]  # state-dict keys: evaluate loads the average
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - self.decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Put the averaged weights into the model (what ``fit`` returns with ``ema``)."""
        torch._foreach_copy_(self.params, self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "names": list(self.names),
            "shadow": [t.detach().clone() for t in self.shadow],
        }

    def load_state_dict(self, state: object, path: object = "checkpoint") -> None:
        if not isinstance(state, Mapping) or state.get("decay") != self.decay:
            got = state.get("decay") if isinstance(state, Mapping) else None
            raise ValueError(
                f"{path} was written with ema={got!r}; this run asks for ema={self.decay!r}"
            )
        shadow = state.get("shadow")
        if not isinstance(shadow, list) or [getattr(t, "shape", None) for t in shadow] != [
            p.shape for p in self.params
        ]:
            raise ValueError(f"{path}: its averaged weights do not fit this model")
        with torch.no_grad():
            saved = [t.to(p.device) for t, p in zip(shadow, self.shadow, strict=True)]
            torch._foreach_copy_(self.shadow, saved)


class PatchSampler:
    """Random ``patch_size`` crops of ``images`` with random flips and 90-degree rotations.

    images: a (N, C, H, W) tensor or a list of (H, W) (one grey channel) / (C, H, W) /
    (N, C, H, W) tensors (sizes may differ; each must be at least ``patch_size`` on both sides).
    Seeded by ``generator``.
    device: where the images are kept and patches are cut (default: the images' device).
    One gather per batch cuts every patch (the flips and rotations are index maps), so a batch
    of 128 costs the same few operations on a GPU as a batch of 1.
    """

    def __init__(
        self,
        images: Tensor | Sequence[Tensor],
        patch_size: int,
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> None:
        check_positive("patch_size", patch_size, integer=True)
        if isinstance(images, Tensor):
            if images.dim() != 4:  # one (C, H, W) tensor could as well be N grey images
                raise ValueError(
                    f"images must be a (N, C, H, W) tensor or a list of (H, W) / (C, H, W) / "
                    f"(N, C, H, W) tensors, got a tensor of shape {tuple(images.shape)}"
                )
            images = list(check_images(images, "images"))
        if not isinstance(images, Sequence) or isinstance(images, str) or not images:
            raise TypeError("images must be a (N, C, H, W) tensor or a non-empty list of images")
        checked = []
        for i, item in enumerate(images):
            if isinstance(item, Tensor) and item.dim() in (2, 3):
                item = item[(None,) * (4 - item.dim())]  # (H, W) is one grey channel
            elif isinstance(item, Tensor) and item.dim() != 4:
                raise ValueError(
                    f"images[{i}] must be (H, W), (C, H, W) or (N, C, H, W), got shape "
                    f"{tuple(item.shape)}"
                )
            for img in check_images(item, f"images[{i}]"):  # a (N, C, H, W) entry gives N
                if min(img.shape[-2:]) < patch_size:
                    raise ValueError(
                        f"images[{i}] is {tuple(img.shape[-2:])}, smaller than "
                        f"patch_size={patch_size}"
                    )
                if checked and img.shape[0] != checked[0].shape[0]:
                    raise ValueError(
                        f"images[{i}] has {img.shape[0]} channels, images[0] {checked[0].shape[0]}"
                    )
                checked.append(img)
        device = torch.device(device) if device is not None else checked[0].device
        h = max(img.shape[-2] for img in checked)
        w = max(img.shape[-1] for img in checked)
        canvas = torch.zeros(len(checked), checked[0].shape[0], h, w, dtype=checked[0].dtype)
        for k, img in enumerate(checked):
            canvas[k, :, : img.shape[-2], : img.shape[-1]] = img
        self.images = canvas.to(device)
        self.sizes = torch.tensor([img.shape[-2:] for img in checked], device=device)
        self.patch_size = patch_size
        self.generator = generator
        # (8, p, p) row and column index maps: 4 rotations, each unflipped and flipped
        i, j = torch.meshgrid(torch.arange(patch_size), torch.arange(patch_size), indexing="ij")
        grid = torch.stack([i, j])
        maps = [torch.rot90(grid, a % 4, (1, 2)) for a in range(8)]
        maps = [m.flip(2) if a >= 4 else m for a, m in enumerate(maps)]
        self._maps = torch.stack(maps).to(device)

    def __call__(self, batch_size: int) -> Tensor:
        p, gen, dev = self.patch_size, self.generator, self.images.device
        which = torch.randint(len(self.sizes), (batch_size,), generator=gen).to(dev)
        pos = torch.rand(batch_size, 2, generator=gen).to(dev)
        aug = torch.randint(8, (batch_size,), generator=gen).to(dev)
        corner = (pos * (self.sizes[which] - p + 1)).long()  # (B, 2): top-left row, column
        maps = self._maps[aug]  # (B, 2, p, p)
        rows = corner[:, 0, None, None] + maps[:, 0]
        cols = corner[:, 1, None, None] + maps[:, 1]
        img = which[:, None, None]
        return self.images.permute(0, 2, 3, 1)[img, rows, cols].permute(0, 3, 1, 2)


def fit(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    *,
    predicts: str | None = None,
    config: TSConfig | Mapping[str, Any] | None = None,
    recipe: str | Recipe = "ts",
    adversarial: AdversarialConfig | Mapping[str, Any] | None = None,
    strength: float | None = None,
    ema: float = 0.0,
    steps: int = 1000,
    batch_size: int = 16,
    patch_size: int = 40,
    lr: float = 1e-3,
    seed: int = 0,
    noise_level: str | None = None,
    loss: str | LossFn = "mse",
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    accelerator: Any = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    log_every: int = 1,
    max_grad_norm: float | None = None,
    on_nonfinite: str = "raise",
    progress: bool = True,
) -> History:
    """Train ``model`` in place with TS noise on random patches of ``images`` for ``steps``.

    predicts: what a bare ``nn.Module`` outputs, required: ``"noise"`` (a residual network
        such as DnCNN) or ``"clean"``; a :class:`Denoiser` carries it (and ``noise_level``).
    images: a (N, C, H, W) tensor or a list of (H, W) (grey) / (C, H, W) / (N, C, H, W)
        tensors, in image units (values above twice the config's ``data_range``, 0..255
        images, are refused), cast to the model's dtype.
    config: a :class:`TSConfig` or its options as a mapping (default: ``TSConfig()``).
    recipe: a name of ``ts_defense.training.recipes.RECIPES`` (``"gaussian"``, ``"ts"``, ``"hat"``,
        ``"ts-hat"``, ``"free-hat"``, ...) or a resolved ``Recipe``; ``adversarial`` refines its
        adversarial share (share, eps, threat, steps), ``strength`` sets its knob (the budget
        of the HAT family, the pair term's weight of ``trades``, ``yan-hat``, ``jacobian``).
    ema: decay of an exponential moving average of the weights (0: none; e.g. 0.99): the model
        ends with the averaged weights (the checkpoint keeps both, to resume exactly;
        ``ts-defense evaluate`` audits the average, as BasicSR's ``params_ema``).
    optimizer: default ``Adam(model.parameters(), lr)``.
    scheduler: a learning-rate scheduler built on ``optimizer``, stepped after every step
        (e.g. DnCNN's decay: ``MultiStepLR(opt, [30_000], 0.1)``); saved in checkpoints.
    accelerator: an ``accelerate.Accelerator``; model and optimizer are prepared with it and
        each process draws its own noise and patches (seed + process index).
    checkpoint: a file path; if it exists the run resumes from it (refused unless ``fit``
        wrote it under the same recipe and TS config). It is written (atomically) when training
        starts, so an unwritable path fails at once, then every ``checkpoint_every`` steps (0:
        none), on Ctrl-C and at the end. Single process only.
    Ctrl-C with ``checkpoint`` (main thread): the current step finishes, the state is saved and
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt`` that ends a script with one line) says
    how to resume; a second Ctrl-C stops at once, without saving. Where fit cannot catch it
    (SIGINT ignored, as in a background job, or handled by someone else; another thread) it
    says so in a warning.
    on_nonfinite: ``"raise"`` stops at the first NaN/Inf loss or gradient with a
        ``FloatingPointError`` (with ``checkpoint``, the last good state is written there first,
        so resuming continues from the step before); ``"skip"`` drops such steps.
    progress: a bar on a terminal, one line every twentieth of the run elsewhere (a log file).
    Returns the :class:`History` (every ``log_every`` steps).
    """
    check_type("model", model, nn.Module, "an nn.Module")
    denoiser_for(model, predicts, noise_level)  # a missing or contradicting predicts: now
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    lr = float(check_positive("lr", lr))  # a numpy float64 would reach the checkpoint
    if lr > torch.finfo(torch.float32).max / 100:
        raise ValueError(f"lr={lr!r} overflows float32 in Adam's bias-corrected step")
    check_seed("seed", seed)
    ema = float(check_nonnegative("ema", ema, high=1.0))
    if ema >= 1:
        raise ValueError(f"ema={ema!r} must be below 1 (the decay; 0 turns the average off)")
    if checkpoint is not None:
        checkpoint = check_file_path("checkpoint", checkpoint)
    check_accelerator(accelerator)
    check_positive("log_every", log_every, integer=True)
    if checkpoint_every != 0:
        check_positive("checkpoint_every", checkpoint_every, integer=True)
    if checkpoint is not None and accelerator is not None and accelerator.num_processes > 1:
        raise ValueError(
            "checkpoint= saves one process; with several use accelerator.save_state/load_state"
        )
    plan = make_recipe(recipe, config, adversarial, strength)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    run = assemble(
        model,
        images,
        plan,
        seed=seed,
        patch_size=patch_size,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
        step_options=dict(
            predicts=predicts,
            noise_level=noise_level,
            loss=loss,
            max_grad_norm=max_grad_norm,
            on_nonfinite=on_nonfinite,
        ),
        ema=ema,
    )
    saver = None if checkpoint is None else Checkpointer(checkpoint, run, checkpoint_every)
    history = History()
    start = 0 if saver is None else saver.resume(history)
    return train(run, history, start, steps, batch_size, log_every, saver, progress)


@dataclass
class Run:
    """Everything a training run holds: what trains, on what, with which random streams."""

    recipe: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    sampler: TSSampler
    perturbation: Perturbation | None
    patches: PatchSampler
    step: TrainStep
    device: torch.device
    dtype: torch.dtype
    average: WeightAverage | None = None

    def batch(self, size: int) -> Tensor:
        """The next batch of clean patches, on the model's device and in its dtype."""
        return self.patches(size).to(self.device, self.dtype)


def assemble(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    plan: Recipe,
    *,
    seed: int,
    patch_size: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    accelerator: Any,
    step_options: Mapping[str, Any],
    ema: float = 0.0,
) -> Run:
    """Build the run of ``plan``: sampler and perturbation, seeded per process, the prepared
    model and optimizer, the patch sampler and the training step."""
    if scheduler is not None and getattr(scheduler, "optimizer", None) is not optimizer:
        raise ValueError("scheduler must be built on the optimizer passed to fit")
    seed = rank_seed(seed, accelerator)
    sampler = plan.sampler(seed)
    perturbation = plan.perturbation(seed)
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        device = accelerator.device
    else:
        device = next(model.parameters()).device
    patch_gen = torch.Generator().manual_seed(stream_seed(seed, "patches"))
    patches = PatchSampler(images, patch_size, patch_gen, device=device)
    check_images(patches.images, "images", data_range=plan.config.data_range)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    step = TrainStep(
        model,
        optimizer,
        sampler,
        accelerator=accelerator,
        perturbation=perturbation,
        **step_options,
    )
    average = WeightAverage(model, ema) if ema else None
    return Run(
        plan.name,
        model,
        optimizer,
        scheduler,
        sampler,
        perturbation,
        patches,
        step,
        device,
        dtype,
        average,
    )


class Checkpointer:
    """``fit``'s checkpoint file: saves the run with its recipe and random states, and resumes
    a run from it, refusing one written by another recipe (or not by ``fit``).

    ``every``: also save every this many steps (0: only at the start, on Ctrl-C and at the end).
    """

    KEYS = ("step", "history", "patch_generator", "torch_rng", "recipe")

    def __init__(self, path: Path, run: Run, every: int = 0) -> None:
        self.path, self.run, self.every = path, run, every

    def snapshot(self) -> dict[str, Any]:
        """The random states as they stand now (taken before a step: saved if it fails)."""
        run = self.run
        return {
            "sampler": run.sampler.state_dict(),
            "perturbation": None if run.perturbation is None else run.perturbation.state_dict(),
            "patch_generator": run.patches.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self, step: int, history: History, rng: dict[str, Any] | None = None) -> None:
        """Write the run after ``step`` steps, with the random states ``rng`` (default: now)."""
        run, rng = self.run, self.snapshot() if rng is None else rng
        sampler_state = run.sampler.state_dict()
        run.sampler.load_state_dict(rng["sampler"])  # the stream as it stood after `step` steps
        try:
            save_checkpoint(
                self.path,
                run.model,
                run.optimizer,
                run.sampler,
                step=step,
                history=history.records,
                recipe=run.recipe,
                patch_generator=rng["patch_generator"],
                torch_rng=rng["torch_rng"],
                perturbation=rng["perturbation"],
                scheduler=None if run.scheduler is None else run.scheduler.state_dict(),
                ema=None if run.average is None else run.average.state_dict(),
                predicts=run.step.denoiser.predicts,
                noise_level=run.step.denoiser.noise_level,
            )
        finally:
            run.sampler.load_state_dict(sampler_state)

    def resume(self, history: History) -> int:
        """Restore the run from the file if there is one (filling ``history``); the step to
        start from. Everything is checked before anything changes."""
        if not self.path.is_file():
            return 0
        state = read_checkpoint(self.path)
        extra = self._checked(state.get("extra"))
        run = self.run
        if (run.average is None) != (extra.get("ema") is None):
            raise ValueError(
                f"checkpoint {self.path} was written "
                f"{'without' if extra.get('ema') is None else 'with'} ema: resume it with the "
                f"same ema"
            )
        if run.scheduler is not None and extra.get("scheduler") is None:
            raise ValueError(
                f"checkpoint {self.path} was written without a scheduler: resume it without one"
            )
        restore_checkpoint(state, run.model, run.optimizer, run.sampler, path=self.path)
        if run.perturbation is not None:
            run.perturbation.load_state_dict(extra["perturbation"])
        if run.scheduler is not None:
            run.scheduler.load_state_dict(extra["scheduler"])
        if run.average is not None:
            run.average.load_state_dict(extra["ema"], self.path)
        run.patches.generator.set_state(extra["patch_generator"])
        torch.set_rng_state(extra["torch_rng"])
        history.records = list(extra["history"])
        return extra["step"]

    def _checked(self, extra: object) -> Mapping[str, Any]:
        """``extra`` as ``fit`` writes it, for this run's recipe, or a one-line ``ValueError``."""
        path = self.path
        if not isinstance(extra, Mapping):
            raise ValueError(f"checkpoint {path} was not written by fit: give fit another path")
        for key in self.KEYS:
            if key not in extra:
                raise ValueError(
                    f"checkpoint {path} was not written by fit (no {key!r}): give fit another path"
                )
        if extra["recipe"] != self.run.recipe:
            raise ValueError(
                f"checkpoint {path} was written by recipe {extra['recipe']!r}; this run asks for "
                f"{self.run.recipe!r}: resume it with recipe={extra['recipe']!r}, or give fit "
                f"another checkpoint path"
            )
        try:
            check_nonnegative("step", extra["step"], high=MAX_INT - 1, integer=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {path}: {err}") from None
        history = extra["history"]
        if not isinstance(history, list) or not all(isinstance(r, Mapping) for r in history):
            raise ValueError(
                f"checkpoint {path}: history must be a list of records, got {history!r}"
            )
        for key in ("patch_generator", "torch_rng"):
            try:
                torch.Generator().set_state(extra[key])  # checked on a scratch generator
            except (TypeError, RuntimeError) as err:
                raise ValueError(f"checkpoint {path}: {key} is not a CPU generator state") from err
        return extra


def train(
    run: Run,
    history: History,
    start: int,
    steps: int,
    batch_size: int,
    log_every: int = 1,
    saver: Checkpointer | None = None,
    progress: bool = True,
) -> History:
    """The loop: steps ``start`` .. ``steps - 1`` of ``run``, logged into ``history`` every
    ``log_every`` steps, saved by ``saver`` (if any) at the start, when due, on Ctrl-C, on a
    non-finite step and at the end."""
    run.model.train()
    with (
        Progress(steps, "TS training", initial=start, enabled=progress) as bar,
        _ctrl_c_between_steps(saver) as pressed,
    ):
        if saver is not None and start < steps:
            saver.save(start, history)  # an unwritable path fails now, not after training
        for step in range(start, steps):
            result = _guarded_step(run, saver, history, step, batch_size)
            shown = {}
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.records.append({"step": float(step + 1), **result.as_dict()})
                shown["loss"] = f"{history.records[-1]['loss']:.4g}"
            if run.average is not None and not result.skipped:
                run.average.update()
            if run.scheduler is not None and not result.skipped:
                run.scheduler.step()
            bar.update(**shown)
            if saver is None or step + 1 == steps:
                continue
            if pressed or (saver.every and (step + 1) % saver.every == 0):
                saver.save(step + 1, history)
            if pressed:
                raise TrainingInterrupted(
                    f"fit interrupted after {step + 1} of {steps} steps; the state is saved in "
                    f"{saver.path}: call fit again with checkpoint={str(saver.path)!r} to resume"
                )
        if saver is not None and start < steps:
            saver.save(steps, history)
    if run.average is not None:
        run.average.copy_to_model()
    return history


def _guarded_step(
    run: Run, saver: Checkpointer | None, history: History, step: int, batch_size: int
) -> Any:
    """One training step; with a checkpoint, a non-finite step (raised before the weights
    changed) first saves the last good state and says where."""
    if saver is None:
        return run.step(run.batch(batch_size))
    before = saver.snapshot()
    try:
        return run.step(run.batch(batch_size))
    except FloatingPointError as err:
        saver.save(step, history, before)
        raise FloatingPointError(
            f"{err}. The last good state (after {step} steps) is in {saver.path}"
        ) from err


class TrainingInterrupted(SystemExit, KeyboardInterrupt):
    """Ctrl-C in :func:`fit` with a checkpoint: the state is saved; the message says how to resume.

    A ``KeyboardInterrupt`` for ``except`` clauses, and a ``SystemExit`` so that an uncaught one
    ends a script with that one line (exit status 1) instead of a traceback.
    """


def _why_ctrl_c_is_not_ours() -> str | None:
    """Why ``fit`` cannot take over SIGINT here, or None when it can."""
    if threading.current_thread() is not threading.main_thread():
        return "fit runs outside the main thread, where signals cannot be caught"
    handler = signal.getsignal(signal.SIGINT)
    if handler is signal.SIG_IGN:
        return "SIGINT is ignored in this process, as in a background job or under nohup"
    if handler is not signal.default_int_handler:
        return f"SIGINT has a handler of its own ({handler!r}), which fit leaves in place"
    return None


@contextlib.contextmanager
def _ctrl_c_between_steps(saver: Checkpointer | None) -> Iterator[list[bool]]:
    """With a checkpoint, Ctrl-C (SIGINT) sets the yielded flag instead of raising mid-step; a
    second Ctrl-C raises ``KeyboardInterrupt`` at once. Where that cannot be arranged, one
    warning says so."""
    pressed: list[bool] = []
    reason = None if saver is None else _why_ctrl_c_is_not_ours()
    if saver is None or reason is not None:
        if reason is not None:
            every = f"every {saver.every} steps, " if saver.every else ""
            warnings.warn(
                f"fit cannot save {saver.path} on Ctrl-C: {reason}; it is saved at the start, "
                f"{every}on a non-finite step and at the end",
                RuntimeWarning,
                stacklevel=5,  # the call of fit (through train and contextlib)
            )
        yield pressed
        return

    def first(signum: int, frame: object) -> None:
        pressed.append(True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, first)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
