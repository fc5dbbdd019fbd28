import numpy as np
import torch

from data.dataset_dncnn import DatasetDnCNN


class DatasetFFDNet(DatasetDnCNN):
    """Like DnCNN with sigma drawn uniformly in opt['sigma'] = [min, max]; C = sigma (1, 1, 1)."""

    def __init__(self, opt):
        super().__init__(opt)
        self.sigma = opt["sigma"] or [0, 75]
        self.sigma_test = opt["sigma_test"] or 25

    def draw_sigma(self):
        if self.opt["phase"] == "train":
            return float(np.random.uniform(self.sigma[0], self.sigma[1])) / 255
        return self.sigma_test / 255

    def __getitem__(self, index):
        img, sigma = self.clean(index), self.draw_sigma()
        path = self.paths_H[index]
        c = torch.full((1, 1, 1), sigma)
        return {"L": self.noisy(img, sigma), "H": img, "C": c, "H_path": path, "L_path": path}
