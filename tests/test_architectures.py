""" "Any nn.Module": TS training steps on architectures no one here wrote (spandrel, the `archs`
extra), built directly from their classes at tiny sizes — no weights are downloaded — and
fine-tuning a real pretrained DnCNN from ../shared/data."""

import math

import pytest
import torch
from spandrel.architectures.DnCNN import DnCNN as KairDnCNN
from spandrel.architectures.DRUNet import DRUNet
from spandrel.architectures.SwinIR import SwinIR

from ts_defense import TrainStep, TSConfig, TSSampler
from ts_defense.data import set12
from ts_defense.models import load_dncnn

SIGMA = 25 / 255


def tiny_archs():
    torch.manual_seed(0)
    return {
        # a CNN that returns the clean image (KAIR's DnCNN computes y - n itself)
        "dncnn": (KairDnCNN(in_nc=1, out_nc=1, nc=8, nb=4), "clean", "none"),
        # a U-Net conditioned on a noise-level map channel (input: image + sigma map)
        "drunet": (DRUNet(in_nc=2, out_nc=1, nc=[8, 16, 16, 32], nb=1), "clean", "map"),
        # a Swin transformer with a residual connection inside
        "swinir": (
            SwinIR(
                img_size=16,
                in_chans=1,
                embed_dim=12,
                depths=[1],
                num_heads=[2],
                window_size=4,
                mlp_ratio=2.0,
                drop_path_rate=0.0,
            ),
            "clean",
            "none",
        ),
    }


@pytest.mark.parametrize("name", ["dncnn", "drunet", "swinir"])
def test_ts_step_on_real_architecture(name):
    model, predicts, noise_level = tiny_archs()[name]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = TSSampler(TSConfig(sigma=(5 / 255, 50 / 255), p_ood=0.5), seed=0)
    step = TrainStep(model, opt, sampler, predicts=predicts, noise_level=noise_level)
    before = [p.detach().clone() for p in model.parameters()]
    clean = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    results = [step(clean) for _ in range(2)]
    assert all(math.isfinite(float(r.loss)) for r in results)
    trained = [p for p in model.parameters() if p.requires_grad]
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) == len(trained), f"{name}: {sum(changed)}/{len(trained)} tensors moved"


def psnr(model, images, gen):
    from ts_defense import Denoiser

    den = Denoiser(model, predicts="noise").eval()
    out = []
    with torch.no_grad():
        for x in images:
            y = x + SIGMA * torch.randn(x.shape, generator=gen)
            out.append(-10 * torch.log10((den(y).clamp(0, 1) - x).square().mean()).item())
    return sum(out) / len(out)


@pytest.mark.slow
def test_fine_tune_pretrained_dncnn_with_ts(shared_data):
    model = load_dncnn(shared_data / "weights" / "DnCNN-S-25.pth")
    images = [x[..., :64, :64] for x in set12(shared_data / "set12")[:3]]
    before = psnr(model, images, torch.Generator().manual_seed(0))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    step = TrainStep(model, opt, TSSampler(seed=0), predicts="noise", loss="sum_mse")
    patches = torch.cat(
        [x.unfold(2, 32, 32).unfold(3, 32, 32).reshape(-1, 1, 32, 32) for x in images]
    )
    w0 = model.layers[0].weight.detach().clone()
    results = [step(patches[i::3]) for i in range(3)]
    assert all(math.isfinite(float(r.loss)) and not r.skipped for r in results)
    assert not torch.equal(w0, model.layers[0].weight)
    after = psnr(model, images, torch.Generator().manual_seed(0))
    # a pretrained sigma-25 model: a few small TS steps keep it a working denoiser
    assert before > 28 and abs(after - before) < 1.0, (before, after)
