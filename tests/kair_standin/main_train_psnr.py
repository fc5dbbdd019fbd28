import argparse
import random

import numpy as np
import torch
from data.select_dataset import define_Dataset
from models.select_model import define_Model
from torch.utils.data import DataLoader
from utils import utils_option as option


def main(json_path="options/train.json"):
    parser = argparse.ArgumentParser()
    parser.add_argument("--opt", type=str, default=json_path)
    opt = option.parse(parser.parse_args().opt)
    models = opt["path"]["models"]
    step_g, opt["path"]["pretrained_netG"] = option.find_last_checkpoint(models, "G")
    step_o, opt["path"]["pretrained_optimizerG"] = option.find_last_checkpoint(models, "optimizerG")
    opt = option.dict_to_nonedict(opt)
    seed = opt["train"]["manual_seed"] or 0
    random.seed(seed)  # as KAIR's own script: crops (random) and sigma (numpy) are seeded too
    np.random.seed(seed)
    torch.manual_seed(seed)
    loaders = {}
    for phase, dataset_opt in opt["datasets"].items():
        ds = define_Dataset(dataset_opt)
        bs = dataset_opt["dataloader_batch_size"] if phase == "train" else 1
        loaders[phase] = DataLoader(ds, batch_size=bs, shuffle=phase == "train", drop_last=True)
    model = define_Model(opt)
    model.init_train()
    step = max(step_g, step_o)
    for _epoch in range(1000000):
        for train_data in loaders["train"]:
            step += 1
            model.feed_data(train_data)
            model.optimize_parameters(step)
            if step % opt["train"]["checkpoint_print"] == 0:
                print(
                    f"iter:{step} " + " ".join(f"{k}: {v:.4e}" for k, v in model.log_dict.items())
                )
            if step % opt["train"]["checkpoint_save"] == 0:
                model.save(step)
            if step % opt["train"]["checkpoint_test"] == 0:
                for test_data in loaders["test"]:
                    model.feed_data(test_data)
                    model.test()
                    mse = torch.mean((model.E.clamp(0, 1) - model.H) ** 2)
                    print(f"test psnr: {float(-10 * torch.log10(mse)):.2f}")
