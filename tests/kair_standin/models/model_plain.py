import os

import torch
from torch import nn

from models.model_base import ModelBase


class Net(nn.Module):
    """Predicts the clean image (KAIR's DnCNN returns x - residual); optional sigma input."""

    def __init__(self, in_nc, out_nc, nc):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_nc, nc, 3, padding=1), nn.ReLU(), nn.Conv2d(nc, out_nc, 3, padding=1)
        )

    def forward(self, x, sigma=None):
        if sigma is not None:
            x = torch.cat([x, sigma.expand(-1, 1, *x.shape[2:])], 1)
        return x[:, : self.body[-1].out_channels] - self.body(x)


class ModelPlain(ModelBase):
    def __init__(self, opt):
        super().__init__(opt)
        self.opt_train = opt["train"]
        g = opt["netG"]
        self.netG = self.model_to_device(Net(g["in_nc"], g["out_nc"], g["nc"]))

    def init_train(self):
        self.load()
        self.netG.train()
        self.G_lossfn = nn.L1Loss()
        self.G_optimizer = torch.optim.Adam(
            self.netG.parameters(), lr=self.opt_train["G_optimizer_lr"]
        )
        path = self.opt["path"]["pretrained_optimizerG"]
        if path is not None and self.opt_train["G_optimizer_reuse"]:
            print(f"Loading optimizerG [{path}] ...")
            self.load_optimizer(path, self.G_optimizer)
        self.log_dict = {}

    def load(self):
        path = self.opt["path"]["pretrained_netG"]
        if path is not None:
            self.netG.module.load_state_dict(torch.load(path, weights_only=True))

    def save(self, iter_label):
        path = os.path.join(self.save_dir, f"{iter_label}_G.pth")
        torch.save(self.netG.module.state_dict(), path)
        if self.opt_train["G_optimizer_reuse"]:
            self.save_optimizer(self.save_dir, self.G_optimizer, "optimizerG", iter_label)

    def feed_data(self, data, need_H=True):
        self.L = data["L"].to(self.device)
        if need_H:
            self.H = data["H"].to(self.device)

    def netG_forward(self):
        self.E = self.netG(self.L)

    def optimize_parameters(self, current_step):
        self.G_optimizer.zero_grad()
        self.netG_forward()
        loss = self.G_lossfn(self.E, self.H)
        loss.backward()
        self.G_optimizer.step()
        self.log_dict["G_loss"] = loss.item()

    def test(self):
        self.netG.eval()
        with torch.no_grad():
            self.netG_forward()
        self.netG.train()
