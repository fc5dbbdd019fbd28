"""BasicSR dataset type ``TSGaussianDenoisingDataset``: TS noise applied in the data loader.

A drop-in for Restormer's ``Dataset_GaussianDenoising`` (same keys: ``sigma_type`` constant /
random / choice, ``sigma_range``, ``sigma_test``, ``in_ch``, ``gt_size``, ``geometric_augs``,
``dataroot_gt``, ``io_backend``, ``meta_info_file``) plus an optional ``ts`` block of
:class:`~ts_defense.TSConfig` options. Training patches get TS noise at the nominal sigma (one
sampler per loader process: :func:`~ts_defense.adapters._options.worker_sampler`); validation
images get Gaussian noise at ``sigma_test`` from a generator seeded with the image index, so every
validation pass sees the same noisy images whatever the loading order.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils import data

from ts_defense._checks import check_choice, check_positive
from ts_defense.noise.sampler import TSSampler
from ts_defense.seeding import stream_seed

from .._options import (
    GREY,
    draw_noisy,
    grey_level,
    grey_sigma,
    sampler_from_options,
    worker_sampler,
)


class TSGaussianDenoisingDataset(data.Dataset):
    """Ground-truth images -> ``{'lq', 'gt', 'lq_path', 'gt_path', 'sigma', 'ts_ood'}``."""

    def __init__(self, opt: dict) -> None:
        super().__init__()
        from basicsr.data.data_util import paths_from_lmdb
        from basicsr.utils import scandir

        self.opt = opt
        self.phase = opt.get("phase", "train")
        key = f"datasets.{self.phase}"
        self.in_ch = check_choice(f"{key}.in_ch", opt.get("in_ch", 3), (1, 3))
        if self.phase == "train":
            self.gt_size = int(check_positive(f"{key}.gt_size", opt.get("gt_size"), integer=True))
            self.geometric_augs = bool(opt.get("geometric_augs", False))
            self.config = self.training_noise(opt, key).config
            self._samplers: dict[int, TSSampler] = {}
        else:
            self.sigma_test = grey_level(f"{key}.sigma_test", opt.get("sigma_test")) / GREY
        self.io_backend_opt = dict(opt.get("io_backend") or {"type": "disk"})
        self.file_client = None
        folder = opt.get("dataroot_gt")
        if not folder:
            raise ValueError(f"{key}.dataroot_gt is required: the folder of clean images")
        if self.io_backend_opt["type"] == "lmdb":
            self.io_backend_opt.update(db_paths=[folder], client_keys=["gt"])
            self.paths = paths_from_lmdb(folder)
        elif opt.get("meta_info_file"):
            with open(opt["meta_info_file"]) as fin:
                self.paths = [os.path.join(folder, line.split(" ")[0]) for line in fin]
        else:
            self.paths = sorted(scandir(folder, full_path=True))
        if not self.paths:
            raise ValueError(f"{key}.dataroot_gt={folder!r} holds no images")

    @staticmethod
    def training_noise(opt: dict, key: str) -> TSSampler:
        """The training phase's sampler template (nominal sigma included) from the dataset
        options (``sigma_type``, ``sigma_range``, ``ts``); errors name ``key`` and the option."""
        sigma = grey_sigma(f"{key}.sigma_range", opt.get("sigma_range"), opt.get("sigma_type"))
        return sampler_from_options(opt.get("ts"), f"{key}.ts", sigma=sigma)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str) -> np.ndarray:
        from basicsr.utils import FileClient, imfrombytes

        if self.file_client is None:
            opts = dict(self.io_backend_opt)
            self.file_client = FileClient(opts.pop("type"), **opts)
        content = self.file_client.get(path, "gt")
        img = imfrombytes(content, flag="color" if self.in_ch == 3 else "grayscale", float32=True)
        return img if img.ndim == 3 else img[..., None]

    def __getitem__(self, index: int) -> dict[str, Any]:
        from basicsr.data.transforms import augment, paired_random_crop
        from basicsr.utils import img2tensor

        path = self.paths[index % len(self.paths)]
        img = self._read(path)
        if self.phase == "train":
            pad_h, pad_w = max(0, self.gt_size - img.shape[0]), max(0, self.gt_size - img.shape[1])
            if pad_h or pad_w:
                img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
            img, _ = paired_random_crop(img, img, self.gt_size, 1, path)
            if self.geometric_augs:
                img = augment(img, hflip=True, rotation=True)
            gt = img2tensor(np.ascontiguousarray(img), bgr2rgb=self.in_ch == 3, float32=True)
            noisy, sigma, ood = draw_noisy(worker_sampler(self._samplers, self.config), gt[None])
            lq, sigma, ood = noisy[0], float(sigma[0]), bool(ood[0])
        else:
            gt = img2tensor(img, bgr2rgb=self.in_ch == 3, float32=True)
            gen = torch.Generator().manual_seed(stream_seed(index, "test-noise"))
            lq = gt + self.sigma_test * torch.randn(gt.shape, generator=gen)
            sigma, ood = self.sigma_test, False
        return {"lq": lq, "gt": gt, "lq_path": path, "gt_path": path, "sigma": sigma, "ts_ood": ood}
