"""BasicSR model type ``TSModel``: TS noise drawn from ``gt`` on the training device.

In the YAML (sigma in grey levels; every other key is a :class:`~ts_defense.TSConfig` option)::

    model_type: TSModel
    ts: {sigma: 25, p_ood: 0.5, families: {radial: {band: [0.05, 0.35]}, local: 1}}
    ts: {sigma: 25, recipe: free-hat, adversarial: {share: 0.5, eps: [0, 8]}}  # eps: grey levels

The noisy input is drawn in ``optimize_parameters``, the one hook that only training steps
reach: batches fed by ``feed_data`` and by Restormer's ``feed_train_data`` (after its mixing
augmentation) are both covered, and validation batches, fed through the same ``feed_data``,
keep their fixed-seed noise. The sampler's random state is saved next to each training state
(``<iter>.ts_sampler.pth``) and restored on resume.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ts_defense._io import safe_load
from ts_defense.models.denoiser import Denoiser

from .._options import draw_noisy, training_from_options


def _last_output(module: torch.nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: networks returning a list of outputs (coarse to fine) give the last."""
    return output[-1] if isinstance(output, (list, tuple)) else output


def adversarial_path(sampler_path: str) -> str:
    """Where the adversarial share's state lives, beside the sampler's."""
    return sampler_path.replace("ts_sampler", "ts_adversarial")


def sampler_state_path(states_dir: str, current_iter: int) -> str:
    """Where the sampler state of training state ``<iter>.state`` lives (not ``*.state``, which
    BasicSR's auto-resume scans)."""
    return os.path.join(states_dir, f"{current_iter}.ts_sampler.pth")


class TSModelMixin:
    """TS training for a BasicSR model class (``net_g``, ``lq``/``gt``, ``optimize_parameters``).

    Mix it in before the base class, or use :func:`ts_model`. Counts ``ts_drawn``/``ts_ood``
    and logs the OOD share as ``ts_ood``.
    """

    def __init__(self, opt: dict) -> None:
        from basicsr.utils.dist_util import get_dist_info

        rank, _ = get_dist_info()
        seed = int(opt.get("manual_seed") or 0) + rank
        self.ts_sampler, self.ts_adversarial = training_from_options(opt.get("ts"), "ts", seed=seed)
        self.ts_denoiser: Denoiser | None = None
        self.ts_drawn = 0
        self.ts_ood = 0
        super().__init__(opt)

    def optimize_parameters(self, current_iter: int) -> None:
        noisy, sigma, ood = draw_noisy(self.ts_sampler, self.gt)
        if self.ts_adversarial is not None:  # BasicSR networks map lq to the clean estimate
            if self.ts_denoiser is None:
                self.ts_denoiser = Denoiser(self.get_bare_model(self.net_g), predicts="clean")
            noisy, self.gt, _, _ = self.ts_adversarial(self.ts_denoiser, noisy, self.gt, sigma)
        self.lq = noisy
        self.ts_drawn += ood.numel()
        self.ts_ood += int(ood.sum())
        super().optimize_parameters(current_iter)
        self.log_dict["ts_ood"] = float(ood.float().mean())

    def save_training_state(self, epoch: int, current_iter: int) -> None:
        super().save_training_state(epoch, current_iter)
        if current_iter != -1 and self.opt.get("rank", 0) == 0:
            path = sampler_state_path(self.opt["path"]["training_states"], current_iter)
            torch.save(self.ts_sampler.state_dict(), path)
            if self.ts_adversarial is not None:
                torch.save(self.ts_adversarial.state_dict(), adversarial_path(path))

    def resume_training(self, resume_state: dict) -> None:
        super().resume_training(resume_state)
        from basicsr.utils import get_root_logger

        state_file = self.opt["path"].get("resume_state")
        states_dir = os.path.dirname(state_file) if state_file else ""
        path = sampler_state_path(states_dir, resume_state["iter"])
        if os.path.isfile(path):
            self.ts_sampler.load_state_dict(safe_load(path, "TS sampler state"))
        else:
            get_root_logger().warning(f"no TS sampler state at {path}: the noise stream restarts")
        if self.ts_adversarial is not None and os.path.isfile(adversarial_path(path)):
            state = safe_load(adversarial_path(path), "adversarial state")
            self.ts_adversarial.load_state_dict(state)


def ts_model(base: type, name: str | None = None) -> type:
    """A TS version of a BasicSR model class, e.g. Restormer's ``ImageCleanModel``; register it
    with ``MODEL_REGISTRY.register(ts_model(Base))`` to use it as a ``model_type``.

    Networks that return a list of outputs are reduced to their last output only when the base
    class expects a tensor (``SRModel`` and its subclasses).
    """
    from basicsr.models.sr_model import SRModel

    def init(self: Any, opt: dict) -> None:
        TSModelMixin.__init__(self, opt)
        if isinstance(self, SRModel):
            for net in (self.net_g, getattr(self, "net_g_ema", None)):
                if net is not None:
                    self.get_bare_model(net).register_forward_hook(_last_output)

    cls_name = name or f"TS{base.__name__}"
    return type(cls_name, (TSModelMixin, base), {"__init__": init, "__qualname__": cls_name})
