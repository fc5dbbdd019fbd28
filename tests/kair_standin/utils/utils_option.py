import glob
import json
import os
import re


def parse(opt_path, is_train=True):
    with open(opt_path) as f:
        opt = json.loads("".join(line.split("//")[0] + "\n" for line in f))
    opt["is_train"] = is_train
    for phase, dataset in opt["datasets"].items():
        dataset["phase"] = phase.split("_")[0]
        dataset["n_channels"] = opt["n_channels"]
    task = os.path.join(opt["path"]["root"], opt["task"])
    opt["path"]["models"] = os.path.join(task, "models")
    os.makedirs(opt["path"]["models"], exist_ok=True)
    opt["dist"] = False
    return opt


def find_last_checkpoint(save_dir, net_type="G", pretrained_path=None):
    steps = [
        int(re.findall(rf"(\d+)_{net_type}.pth", f)[0])
        for f in glob.glob(os.path.join(save_dir, f"*_{net_type}.pth"))
    ]
    if not steps:
        return 0, pretrained_path
    return max(steps), os.path.join(save_dir, f"{max(steps)}_{net_type}.pth")


class NoneDict(dict):
    def __missing__(self, key):
        return None


def dict_to_nonedict(opt):
    if isinstance(opt, dict):
        return NoneDict(**{k: dict_to_nonedict(v) for k, v in opt.items()})
    return opt
