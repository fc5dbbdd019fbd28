"""KAIR models with TS training: built on KAIR's ``ModelPlain`` / ``ModelPlain2`` at run time.

The noisy ``L`` is drawn from ``H`` at the start of ``optimize_parameters``: KAIR's loop feeds
test batches through the same ``feed_data(data, need_H)``, and only ``optimize_parameters``
marks a training step, so test images keep their fixed-seed noise. The sampler state is saved
beside each checkpoint (``<iter>_tssampler.pth``) and loaded with the latest one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Any

import torch

from ts_defense._checks import check_seed
from ts_defense._io import safe_load
from ts_defense.models.denoiser import Denoiser
from ts_defense.noise.sampler import TSSampler
from ts_defense.training.adversarial import Adversarial

from .._options import draw_noisy, training_from_options


class TrainingFinished(Exception):
    """Raised at the step after ``max_steps``; the launcher ends the run cleanly."""


def stop_after(model: Any, max_steps: int) -> None:
    """Make ``model.optimize_parameters`` raise :class:`TrainingFinished` past ``max_steps``
    (any KAIR model: KAIR's loop has no stop condition)."""
    step = model.optimize_parameters

    def optimize_parameters(current_step: int, *args: Any, **kwargs: Any) -> Any:
        if current_step > max_steps:
            raise TrainingFinished(f"stopped after {max_steps} steps")
        return step(current_step, *args, **kwargs)

    model.optimize_parameters = optimize_parameters


def patch_model_base() -> None:
    """Let every KAIR model (a ``ModelBase``) train and resume without CUDA.

    KAIR moves networks to CUDA whenever ``gpu_ids`` is set and maps optimizer states to the
    current CUDA device. Here a network falls back to the CPU where there is no CUDA, and
    optimizer states load with ``weights_only=True`` (onto the CPU; ``load_state_dict`` moves
    them to the parameters' device).
    """
    from models.model_base import ModelBase

    if getattr(ModelBase, "ts_patched", False):
        return
    to_device = ModelBase.model_to_device

    def model_to_device(self: Any, network: torch.nn.Module) -> torch.nn.Module:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            self.device = torch.device("cpu")
        return to_device(self, network)

    def load_optimizer(self: Any, load_path: str, optimizer: torch.optim.Optimizer) -> None:
        optimizer.load_state_dict(safe_load(load_path, "optimizer state"))

    ModelBase.model_to_device = model_to_device
    ModelBase.load_optimizer = load_optimizer
    ModelBase.ts_patched = True


def model_noise(opt: Mapping[str, Any], takes_c: bool) -> tuple[TSSampler, Adversarial | None]:
    """The sampler and adversarial share of a TS model (``netG(L, C)`` when ``takes_c``) from
    the top-level ``ts`` block, seeded with ``train.manual_seed``; errors name the option."""
    train = opt.get("train")
    seed = (train.get("manual_seed") if isinstance(train, Mapping) else None) or 0
    seed = check_seed("train.manual_seed", seed)
    sampler, adversarial = training_from_options(opt.get("ts"), "ts", seed=seed)
    if adversarial is not None and takes_c:
        raise ValueError(
            "ts.recipe: adversarial recipes train models called as netG(L) (model ts_plain, "
            "with or without a noise-level map channel), not netG(L, C) (ts_plain2)"
        )
    return sampler, adversarial


class TSKairMixin:
    """TS training for a KAIR model (``H``, ``L``, optional ``C``, ``netG``, ``opt``)."""

    ts_takes_c = False  # netG(L, C) (FFDNet, ModelPlain2)

    def __init__(self, opt: dict) -> None:
        self.ts_sampler, self.ts_adversarial = model_noise(opt, self.ts_takes_c)
        self.ts_denoiser: Denoiser | None = None
        self.ts_drawn = 0
        self.ts_ood = 0
        super().__init__(opt)

    def optimize_parameters(self, current_step: int) -> None:
        noisy, sigma, ood = draw_noisy(self.ts_sampler, self.H)
        b, c = self.H.shape[:2]
        if self.ts_adversarial is not None:
            noisy = self._adversarial(noisy, sigma, c)
        if hasattr(self, "C"):  # FFDNet: netG(L, C), C of shape (B, 1, 1, 1)
            self.L, self.C = noisy, sigma.view(b, 1, 1, 1).to(self.C.dtype)
        elif self.L.shape[1] == c + 1:  # FDnCNN: the noise-level map is L's last channel
            self.L = torch.cat([noisy, sigma.view(b, 1, 1, 1).expand_as(noisy[:, :1])], 1)
        else:
            self.L = noisy
        self.ts_drawn += b
        self.ts_ood += int(ood.sum())
        super().optimize_parameters(current_step)
        self.log_dict["ts_ood"] = float(ood.float().mean())

    def _adversarial(self, noisy: torch.Tensor, sigma: torch.Tensor, c: int) -> torch.Tensor:
        """Replace the adversarial share of ``noisy`` (and of ``H``), crafted on ``netG``."""
        if self.ts_denoiser is None:
            level = "map" if self.L.shape[1] == c + 1 else "none"
            net = self.get_bare_model(self.netG)
            self.ts_denoiser = Denoiser(net, predicts="clean", noise_level=level)
        noisy, self.H, _, _ = self.ts_adversarial(self.ts_denoiser, noisy, self.H, sigma)
        return noisy

    def save(self, iter_label: int) -> None:
        super().save(iter_label)
        path = os.path.join(self.save_dir, f"{iter_label}_tssampler.pth")
        torch.save(self.ts_sampler.state_dict(), path)
        if self.ts_adversarial is not None:
            state = self.ts_adversarial.state_dict()
            torch.save(state, os.path.join(self.save_dir, f"{iter_label}_tsadversarial.pth"))

    def load(self) -> None:
        super().load()
        from utils.utils_option import find_last_checkpoint

        _, path = find_last_checkpoint(self.opt["path"]["models"], net_type="tssampler")
        if path is not None:
            print(f"Loading TS sampler state [{path}] ...")
            self.ts_sampler.load_state_dict(safe_load(path, "TS sampler state"))
        _, path = find_last_checkpoint(self.opt["path"]["models"], net_type="tsadversarial")
        if path is not None and self.ts_adversarial is not None:
            self.ts_adversarial.load_state_dict(safe_load(path, "adversarial state"))


@cache
def model_classes() -> dict[str, Any]:
    """``{"ts_plain": TSModelPlain, "ts_plain2": TSModelPlain2}`` (KAIR must be on sys.path)."""
    from models.model_plain import ModelPlain
    from models.model_plain2 import ModelPlain2

    return {
        "ts_plain": type("TSModelPlain", (TSKairMixin, ModelPlain), {}),
        "ts_plain2": type("TSModelPlain2", (TSKairMixin, ModelPlain2), {"ts_takes_c": True}),
    }
