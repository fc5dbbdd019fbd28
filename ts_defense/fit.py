"""A complete small TS training loop for users who have none: random patches, Adam, progress bar.

>>> history = fit(DnCNN(depth=8, features=32), bundled_images(), steps=500, predicts="noise")
>>> history.column("loss")[-1]

Stopped and restarted with the same ``checkpoint`` path, it resumes where it stopped and ends
with the same weights as an uninterrupted run (model, optimizer, sampler, patch generator and
torch's global generator are all in the checkpoint).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._checks import check_images, check_positive
from .checkpoint import load_checkpoint, save_checkpoint
from .sampler import TSConfig, TSSampler
from .seeding import stream_seed
from .training import LossFn, TrainStep, check_accelerator, rank_seed


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

    images: a (N, C, H, W) tensor or a list of (C, H, W) / (N, C, H, W) tensors (sizes may
    differ; each must be at least ``patch_size`` on both sides). Seeded by ``generator``.
    """

    def __init__(
        self, images: Tensor | Sequence[Tensor], patch_size: int, generator: torch.Generator
    ) -> None:
        check_positive("patch_size", patch_size, integer=True)
        if isinstance(images, Tensor):
            images = list(check_images(images, "images"))
        if not isinstance(images, Sequence) or isinstance(images, str) or not images:
            raise TypeError("images must be a (N, C, H, W) tensor or a non-empty list of images")
        self.images = []
        for i, item in enumerate(images):
            if isinstance(item, Tensor) and item.dim() == 3:
                item = item[None]
            for img in check_images(item, f"images[{i}]"):  # a (N, C, H, W) entry gives N
                if min(img.shape[-2:]) < patch_size:
                    raise ValueError(
                        f"images[{i}] is {tuple(img.shape[-2:])}, smaller than "
                        f"patch_size={patch_size}"
                    )
                if self.images and img.shape[0] != self.images[0].shape[0]:
                    raise ValueError(
                        f"images[{i}] has {img.shape[0]} channels, images[0] "
                        f"{self.images[0].shape[0]}"
                    )
                self.images.append(img)
        self.patch_size = patch_size
        self.generator = generator

    def __call__(self, batch_size: int) -> Tensor:
        p, gen = self.patch_size, self.generator
        which = torch.randint(len(self.images), (batch_size,), generator=gen).tolist()
        pos = torch.rand(batch_size, 2, generator=gen).tolist()
        aug = torch.randint(8, (batch_size,), generator=gen).tolist()
        out = []
        for k, (ty, tx), a in zip(which, pos, aug, strict=True):
            img = self.images[k]
            y, x = int(ty * (img.shape[-2] - p + 1)), int(tx * (img.shape[-1] - p + 1))
            patch = img[:, y : y + p, x : x + p]
            patch = torch.rot90(patch, a % 4, (1, 2))
            out.append(patch.flip(2) if a >= 4 else patch)
        return torch.stack(out)


def fit(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    *,
    config: TSConfig | Mapping[str, Any] | None = None,
    steps: int = 1000,
    batch_size: int = 16,
    patch_size: int = 40,
    lr: float = 1e-3,
    seed: int = 0,
    predicts: str = "clean",
    noise_level: str = "none",
    loss: str | LossFn = "mse",
    optimizer: torch.optim.Optimizer | None = None,
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
    optimizer: default ``Adam(model.parameters(), lr)``.
    accelerator: an ``accelerate.Accelerator``; model and optimizer are prepared with it and
        each process draws its own noise and patches (seed + process index).
    checkpoint: a file path; if it exists the run resumes from it, and it is rewritten
        (atomically) every ``checkpoint_every`` steps (0: at the end only). Single process only.
    on_nonfinite: ``"raise"`` stops at the first NaN/Inf loss or gradient with a
        ``FloatingPointError`` (with ``checkpoint``, the last good state is written there first,
        so resuming continues from the step before); ``"skip"`` drops such steps.
    The images are cast to the model's dtype.
    Returns the :class:`History` (every ``log_every`` steps).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_positive("steps", steps, integer=True)
    check_positive("batch_size", batch_size, integer=True)
    if check_positive("lr", lr) > torch.finfo(torch.float32).max / 100:
        raise ValueError(f"lr={lr!r} overflows float32 in Adam's bias-corrected step")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path, got {type(checkpoint).__name__}")
    check_accelerator(accelerator)
    check_positive("log_every", log_every, integer=True)
    if checkpoint_every != 0:
        check_positive("checkpoint_every", checkpoint_every, integer=True)
    if checkpoint is not None and accelerator is not None and accelerator.num_processes > 1:
        raise ValueError(
            "checkpoint= saves one process; with several use accelerator.save_state/load_state"
        )
    if config is None:
        config = TSConfig()
    elif isinstance(config, Mapping):
        config = TSConfig.from_dict(config)
    elif not isinstance(config, TSConfig):
        raise TypeError(f"config must be a TSConfig or a mapping, got {type(config).__name__}")
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    seed = rank_seed(seed, accelerator)
    sampler = TSSampler(config, seed=seed)
    patches = PatchSampler(
        images, patch_size, torch.Generator().manual_seed(stream_seed(seed, "patches"))
    )
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        device = accelerator.device
    else:
        device = next(model.parameters()).device
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
    )
    history, start = History(), 0
    if checkpoint is not None and Path(checkpoint).is_file():
        extra = load_checkpoint(checkpoint, model, optimizer, sampler)
        start, history.records = int(extra["step"]), list(extra["history"])
        patches.generator.set_state(extra["patch_generator"])
        torch.set_rng_state(extra["torch_rng"])

    def random_state() -> dict[str, Any]:
        return {
            "sampler": sampler.state_dict(),
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
            )
        finally:
            sampler.load_state_dict(sampler_state)

    model.train()
    bar = tqdm(total=steps, initial=start, disable=not progress, desc="TS training")
    for step in range(start, steps):
        before = random_state() if checkpoint is not None else {}
        try:
            result = step_fn(patches(batch_size).to(device, dtype))
        except FloatingPointError as err:  # raised before the weights changed: they are good
            bar.close()
            if checkpoint is None:
                raise
            save(step, before)
            raise FloatingPointError(
                f"{err}. The last good state (after {step} steps) is in {checkpoint}"
            ) from err
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.records.append({"step": float(step + 1), **result.as_dict()})
            bar.set_postfix(loss=f"{history.records[-1]['loss']:.4g}", refresh=False)
        bar.update()
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            save(step + 1, random_state())
    bar.close()
    if checkpoint is not None and start < steps:
        save(steps, random_state())
    return history
