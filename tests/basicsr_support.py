"""Tiny BasicSR option files and images for CPU runs (the adapter and packaging tests)."""

from pathlib import Path

import numpy as np
import yaml

EXAMPLE = Path(__file__).parents[1] / "examples" / "basicsr_ts_denoising.yml"


def write_images(folder: Path, size: int, names: tuple[str, ...]) -> None:
    import cv2
    import skimage.data
    from skimage.transform import resize

    folder.mkdir(parents=True)
    for name in names:
        img = getattr(skimage.data, name)()[..., :3]
        s = min(img.shape[:2])
        img = resize(img[:s, :s], (size, size), anti_aliasing=True)
        cv2.imwrite(str(folder / f"{name}.png"), (img[..., ::-1] * 255).round().astype(np.uint8))


def make_image_dirs(root: Path) -> Path:
    """``root/train`` (four 64-pixel images) and ``root/val`` (two 32-pixel images)."""
    write_images(root / "train", 64, ("astronaut", "coffee", "chelsea", "rocket"))
    write_images(root / "val", 32, ("astronaut", "coffee"))
    return root


def tiny_options(image_dirs: Path, name: str) -> dict:
    """The example YAML made tiny: CPU, 16-channel RIDNet, 32-pixel patches, 40 iterations."""
    opt = yaml.safe_load(EXAMPLE.read_text())
    opt.update(name=name, num_gpu=0)
    train, val = opt["datasets"]["train"], opt["datasets"]["val"]
    train.update(dataroot_gt=str(image_dirs / "train"), gt_size=32, num_worker_per_gpu=0)
    train.update(batch_size_per_gpu=4, dataset_enlarge_ratio=8)
    val.update(dataroot_gt=str(image_dirs / "val"))
    opt["network_g"].update(mid_channels=16, num_block=1)
    opt["train"]["optim_g"]["lr"] = 2e-3
    opt["train"]["total_iter"] = 40
    opt["val"]["val_freq"] = 20
    opt["logger"].update(print_freq=1, save_checkpoint_freq=20)
    return opt
