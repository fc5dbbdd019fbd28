import glob
import os
import random

import numpy as np
import torch
from skimage.io import imread
from torch.utils import data


class DatasetDnCNN(data.Dataset):
    """H from dataroot_H; L = H + Gaussian noise (sigma in grey levels); seed 0 for tests."""

    def __init__(self, opt):
        self.opt = opt
        self.patch_size = opt["H_size"] or 64
        self.sigma = opt["sigma"] or 25
        self.sigma_test = opt["sigma_test"] or self.sigma
        self.paths_H = sorted(glob.glob(os.path.join(opt["dataroot_H"], "*.png")))

    def __len__(self):
        return len(self.paths_H)

    def clean(self, index):
        img = torch.from_numpy(imread(self.paths_H[index]).astype(np.float32) / 255)[None]
        if self.opt["phase"] != "train":
            return img
        h, w = img.shape[1:]
        top, left = random.randint(0, h - self.patch_size), random.randint(0, w - self.patch_size)
        return img[:, top : top + self.patch_size, left : left + self.patch_size]

    def noisy(self, img, sigma):
        if self.opt["phase"] == "train":
            return img + torch.randn(img.shape) * sigma
        gen = np.random.RandomState(0)
        return img + torch.from_numpy(gen.normal(0, sigma, img.shape).astype(np.float32))

    def __getitem__(self, index):
        img = self.clean(index)
        sigma = (self.sigma if self.opt["phase"] == "train" else self.sigma_test) / 255
        path = self.paths_H[index]
        return {"L": self.noisy(img, sigma), "H": img, "H_path": path, "L_path": path}
