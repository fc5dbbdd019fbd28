"""KAIR denoising datasets with TS training noise: KAIR's own classes, noise swapped.

Each wraps KAIR's ``DatasetDnCNN`` / ``DatasetFFDNet`` / ``DatasetFDnCNN``: crops, flips, the
nominal sigma draw and the fixed-seed test noise stay KAIR's; in the training phase the noisy
``L`` is redrawn from ``H`` with TS noise at the sample's nominal sigma (``sigma`` for DnCNN,
``C`` for FFDNet, the map channel of ``L`` for FDnCNN, which is kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import torch

from ts_defense.noise.sampler import TSSampler

from .._options import MIN_SIGMA, grey_sigma, sampler_from_options, worker_sampler

DEFAULT_SIGMA = {"DatasetDnCNN": 25, "DatasetFFDNet": [0, 75], "DatasetFDnCNN": [0, 75]}


def training_noise(opt: Mapping[str, Any], key: str, kair: str) -> TSSampler:
    """The sampler template of KAIR dataset class ``kair`` in the training phase: KAIR's
    ``sigma`` (grey levels, checked for the units; KAIR's default where absent) and the
    optional ``ts`` block; errors name ``key`` and the option."""
    sigma = grey_sigma(f"{key}.sigma", opt.get("sigma") or DEFAULT_SIGMA[kair])
    return sampler_from_options(opt.get("ts"), f"{key}.ts", sigma=sigma)


class TSKairDatasetMixin:
    """Replaces the training noise of a KAIR denoising dataset by TS noise."""

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        key = f"datasets.{opt['phase']}"
        kair = next(c.__name__ for c in type(self).__mro__ if c.__name__ in DEFAULT_SIGMA)
        self.ts_config = training_noise(opt, key, kair).config
        self._samplers: dict[int, Any] = {}

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        if self.opt["phase"] != "train":
            return item
        clean, low = item["H"], item["L"]
        c = clean.shape[0]
        if "C" in item:
            sigma = item["C"].reshape(-1)[:1]
        elif low.shape[0] == c + 1:
            sigma = low[c:].reshape(-1)[:1]
        else:
            sigma = torch.tensor([self.ts_config.sigma_schedule.values[0]])
        sampler = worker_sampler(self._samplers, self.ts_config)
        draw = sampler.draw(clean[None], sigma=sigma.float().clamp_min(MIN_SIGMA))
        item["L"] = torch.cat([draw.noisy[0], low[c:]], 0)
        item["ts_ood"] = bool(draw.ood[0])
        return item


@cache
def dataset_classes() -> dict[str, Any]:
    """``{"ts_dncnn": ..., "ts_ffdnet": ..., "ts_fdncnn": ...}`` (KAIR must be on sys.path)."""
    from data.dataset_dncnn import DatasetDnCNN
    from data.dataset_fdncnn import DatasetFDnCNN
    from data.dataset_ffdnet import DatasetFFDNet

    return {
        f"ts_{base.__name__[7:].lower()}": type(
            f"TS{base.__name__}", (TSKairDatasetMixin, base), {}
        )
        for base in (DatasetDnCNN, DatasetFFDNet, DatasetFDnCNN)
    }
