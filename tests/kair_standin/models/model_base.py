import os

import torch
from torch.nn import DataParallel


class ModelBase:
    """KAIR's contract: CUDA whenever ``gpu_ids`` is set, networks wrapped in DataParallel, and
    optimizer states read back with every storage mapped onto the current CUDA device."""

    def __init__(self, opt):
        self.opt = opt
        self.save_dir = opt["path"]["models"]
        self.device = torch.device("cuda" if opt["gpu_ids"] is not None else "cpu")

    def model_to_device(self, network):
        return DataParallel(network.to(self.device))

    def get_bare_model(self, network):
        return network.module if isinstance(network, DataParallel) else network

    def save_optimizer(self, save_dir, optimizer, optimizer_label, iter_label):
        torch.save(
            optimizer.state_dict(), os.path.join(save_dir, f"{iter_label}_{optimizer_label}.pth")
        )

    def load_optimizer(self, load_path, optimizer):
        device = torch.cuda.current_device()  # fails without CUDA, as KAIR's does
        optimizer.load_state_dict(torch.load(load_path, map_location=lambda s, loc: s.cuda(device)))
