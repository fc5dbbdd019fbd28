"""A complete small TS training loop for users who have none: random patches, Adam, progress bar.

>>> history = fit(DnCNN(depth=8, features=32), bundled_images(), steps=500, predicts="noise")
>>> history.column("loss")[-1]

Stopped and restarted with the same ``checkpoint`` path, it resumes where it stopped and ends
with the same weights as an uninterrupted run (model, optimizer, sampler, patch generator and
torch's global generator are all in the checkpoint).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._checks import (
    MAX_INT,
    check_images,
    check_nonnegative,
    check_positive,
    check_seed,
    check_type,
)
from ..noise.sampler import TSConfig
from ..seeding import stream_seed
from .adversarial import AdversarialConfig
from .checkpoint import check_file_path, load_checkpoint, save_checkpoint
from .recipes import Recipe, make_recipe
from .step import LossFn, TrainStep, check_accelerator, rank_seed


@dataclass
class History:
    """One record per logged step: ``step`` plus :meth:`StepResult.as_dict` (loss, parts, ...)."""

    records: list[dict[str, float]] = field(default_factory=list)

    def column(self, key: str) -> list[float]:
        """The values of ``key`` over the logged steps."""
        if self.records and key not in self.records[0]:
            raise KeyError(f"no {key!r} in history; keys: {sorted(self.records[0])}")
        return [r[key] for r in self.records]


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
    config: TSConfig | Mapping[str, Any] | None = None,
    recipe: str | Recipe = "ts",
    adversarial: AdversarialConfig | Mapping[str, Any] | None = None,
    steps: int = 1000,
    batch_size: int = 16,
    patch_size: int = 40,
    lr: float = 1e-3,
    seed: int = 0,
    predicts: str = "clean",
    noise_level: str = "none",
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

    config: a :class:`TSConfig` or its options as a mapping (default: ``TSConfig()``).
    recipe: a name of ``ts_defense.training.recipes.RECIPES`` (``"gaussian"``, ``"ts"``, ``"hat"``,
        ``"ts-hat"``, ``"free-hat"``, ...) or a resolved ``Recipe``; ``adversarial`` refines its
        adversarial share (share, eps, threat, steps).
    optimizer: default ``Adam(model.parameters(), lr)``.
    scheduler: a learning-rate scheduler built on ``optimizer``, stepped after every step
        (e.g. DnCNN's decay: ``MultiStepLR(opt, [30_000], 0.1)``); saved in checkpoints.
    accelerator: an ``accelerate.Accelerator``; model and optimizer are prepared with it and
        each process draws its own noise and patches (seed + process index).
    checkpoint: a file path; if it exists the run resumes from it (refused unless ``fit``
        wrote it under the same TS config). It is written (atomically) when training starts, so
        an unwritable path fails at once, then every ``checkpoint_every`` steps (0: none), on
        Ctrl-C and at the end. Single process only.
    Ctrl-C with ``checkpoint`` (main thread): the current step finishes, the state is saved and
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt`` that ends a script with one line) says
    how to resume; a second Ctrl-C stops at once, without saving.
    on_nonfinite: ``"raise"`` stops at the first NaN/Inf loss or gradient with a
        ``FloatingPointError`` (with ``checkpoint``, the last good state is written there first,
        so resuming continues from the step before); ``"skip"`` drops such steps.
    The images are cast to the model's dtype.
    Returns the :class:`History` (every ``log_every`` steps).
    """
    check_type("model", model, nn.Module, "an nn.Module")
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    lr = float(check_positive("lr", lr))  # a numpy float64 would reach the checkpoint
    if lr > torch.finfo(torch.float32).max / 100:
        raise ValueError(f"lr={lr!r} overflows float32 in Adam's bias-corrected step")
    check_seed("seed", seed)
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
    plan = make_recipe(recipe, config, adversarial)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
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
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    step_fn = TrainStep(
        model,
        optimizer,
        sampler,
        predicts=predicts,
        noise_level=noise_level,
        loss=loss,
        accelerator=accelerator,
        max_grad_norm=max_grad_norm,
        on_nonfinite=on_nonfinite,
        perturbation=perturbation,
    )
    history, start = History(), 0
    if checkpoint is not None and checkpoint.is_file():
        extra = load_checkpoint(checkpoint, model, optimizer, sampler)
        start, history.records = _resume(checkpoint, extra, patches.generator)
        if perturbation is not None:
            perturbation.load_state_dict(extra["perturbation"])
        if scheduler is not None:
            scheduler.load_state_dict(extra["scheduler"])

    def random_state() -> dict[str, Any]:
        return {
            "sampler": sampler.state_dict(),
            "perturbation": None if perturbation is None else perturbation.state_dict(),
            "patch_generator": patches.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(step: int, rng: dict[str, Any]) -> None:
        sampler_state = sampler.state_dict()
        sampler.load_state_dict(rng["sampler"])  # the stream as it stood after `step` steps
        try:
            save_checkpoint(
                checkpoint,
                model,
                optimizer,
                sampler,
                step=step,
                history=history.records,
                patch_generator=rng["patch_generator"],
                torch_rng=rng["torch_rng"],
                perturbation=rng["perturbation"],
                scheduler=None if scheduler is None else scheduler.state_dict(),
            )
        finally:
            sampler.load_state_dict(sampler_state)

    model.train()
    bar = tqdm(total=steps, initial=start, disable=not progress, desc="TS training")
    with bar, _ctrl_c_between_steps(checkpoint is not None) as pressed:
        if checkpoint is not None and start < steps:
            save(start, random_state())  # an unwritable path fails now, not after training
        for step in range(start, steps):
            before = random_state() if checkpoint is not None else {}
            try:
                result = step_fn(patches(batch_size).to(device, dtype))
            except FloatingPointError as err:  # raised before the weights changed: they are good
                if checkpoint is None:
                    raise
                save(step, before)
                raise FloatingPointError(
                    f"{err}. The last good state (after {step} steps) is in {checkpoint}"
                ) from err
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.records.append({"step": float(step + 1), **result.as_dict()})
                bar.set_postfix(loss=f"{history.records[-1]['loss']:.4g}", refresh=False)
            if scheduler is not None and not result.skipped:
                scheduler.step()
            bar.update()
            due = checkpoint_every and (step + 1) % checkpoint_every == 0
            if checkpoint is not None and (due or pressed) and step + 1 < steps:
                save(step + 1, random_state())
            if pressed and step + 1 < steps:
                raise TrainingInterrupted(
                    f"fit interrupted after {step + 1} of {steps} steps; the state is saved in "
                    f"{checkpoint}: call fit again with checkpoint={str(checkpoint)!r} to resume"
                )
        if checkpoint is not None and start < steps:
            save(steps, random_state())
    return history


class TrainingInterrupted(SystemExit, KeyboardInterrupt):
    """Ctrl-C in :func:`fit` with a checkpoint: the state is saved; the message says how to resume.

    A ``KeyboardInterrupt`` for ``except`` clauses, and a ``SystemExit`` so that an uncaught one
    ends a script with that one line (exit status 1) instead of a traceback.
    """


@contextlib.contextmanager
def _ctrl_c_between_steps(active: bool) -> Iterator[list[bool]]:
    """While active, Ctrl-C (SIGINT) in the main thread sets the yielded flag instead of raising
    mid-step; a second Ctrl-C raises ``KeyboardInterrupt`` at once."""
    pressed: list[bool] = []
    if (
        not active
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
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


def _resume(path: Path, extra: Mapping[str, Any], patches: torch.Generator) -> tuple[int, list]:
    """Check the step, history and random states ``fit`` wrote; restore the random states."""
    for key in ("step", "history", "patch_generator", "torch_rng"):
        if key not in extra:
            raise ValueError(
                f"checkpoint {path} was not written by fit (no {key!r}): give fit another path"
            )
    step, history = extra["step"], extra["history"]
    try:
        check_nonnegative("step", step, high=MAX_INT - 1, integer=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path}: {err}") from None
    if not isinstance(history, list) or not all(isinstance(r, Mapping) for r in history):
        raise ValueError(f"checkpoint {path}: history must be a list of records, got {history!r}")
    for key, restore in (
        ("patch_generator", patches.set_state),
        ("torch_rng", torch.set_rng_state),
    ):
        try:
            restore(extra[key])
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"checkpoint {path}: {key} is not a CPU generator state") from err
    return step, list(history)
