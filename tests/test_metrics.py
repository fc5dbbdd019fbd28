"""Evaluation (PSNR/SSIM, worst case), typicality of attacked inputs and the transfer matrix
on tiny models; BM3D as a transfer target."""

import json

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from ts_defense import Denoiser
from ts_defense.app.report import save_transfer
from ts_defense.attacks import DenoisingFGSM, DenoisingPGD, L2DenoisingPGD
from ts_defense.data import bundled_images
from ts_defense.evaluation.metrics import (
    add_noise,
    evaluate_attack,
    psnr,
    ssim,
    worst_case,
)
from ts_defense.evaluation.transfer import transfer_matrix
from ts_defense.evaluation.typicality import typicality, typicality_table
from ts_defense.models import DnCNN
from ts_defense.models.zoo import MODELS, load_model, register_model

SIGMA = 25 / 255


def tiny(seed):
    torch.manual_seed(seed)
    return Denoiser(DnCNN(depth=3, features=4), predicts="noise").eval()


def test_metrics_match_skimage_and_clamp_the_estimate():
    x = torch.rand(2, 1, 16, 16)
    est = x + 0.05 * torch.randn_like(x)
    got = psnr(x, est)
    want = [
        peak_signal_noise_ratio(a[0].numpy(), b[0].clamp(0, 1).numpy(), data_range=1.0)
        for a, b in zip(x.double(), est.double(), strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert ssim(x, x) == [1.0, 1.0]
    assert all(0 < v < 1 for v in ssim(x, est))
    rgb = torch.rand(1, 3, 16, 16)
    assert ssim(rgb, rgb)[0] == pytest.approx(1.0)


def test_evaluation_and_worst_case_over_attacks():
    clean = bundled_images(("camera", "coins", "moon"), size=24)
    noisy = add_noise(clean, SIGMA, seed=0)
    den = tiny(0)
    evals = {}
    for name, atk in {
        "fgsm-1": DenoisingFGSM(den, SIGMA, eps=1 / 255),
        "pgd-8": DenoisingPGD(den, SIGMA, eps=8 / 255, steps=3),
        "l2": L2DenoisingPGD(den, SIGMA, rho=0.05, steps=2),
    }.items():
        ev, adv = evaluate_attack(den, atk, clean, noisy, SIGMA, name=name)
        evals[name] = ev
        assert len(ev.psnr_attacked) == 3 and adv[0].shape == clean.shape
    assert max(evals["pgd-8"].linf) <= 8 / 255 + 1e-6
    assert evals["pgd-8"].summary()["psnr_drop"] > evals["fgsm-1"].summary()["psnr_drop"]
    w = worst_case(evals)
    table = np.array([evals[n].psnr_attacked for n in evals])
    np.testing.assert_allclose(w["psnr_attacked"], table.min(0))
    assert w["mean"]["psnr_attacked"] <= min(e.summary()["psnr_attacked"] for e in evals.values())
    assert set(w["attack"]) <= set(evals)
    json.dumps({k: v.to_dict() for k, v in evals.items()})  # serialisable
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_attack(
            den, evals and DenoisingFGSM(den, SIGMA), clean, [noisy[0][:, :, :8]], SIGMA
        )


def test_attacked_inputs_leave_the_typical_set_more_than_noisy_ones():
    clean = bundled_images(("camera", "coins"), size=64)
    (noisy,) = add_noise(clean, SIGMA, seed=1)
    adv = DenoisingPGD(tiny(1), SIGMA, eps=8 / 255, steps=3)(noisy, clean)
    s_noisy = typicality(clean, noisy, SIGMA, window=8, eps=0.05)
    s_adv = typicality(clean, adv, SIGMA, window=8, eps=0.05)
    assert max(abs(d) for d in s_noisy["d"]) < 0.05 and not any(s_noisy["outside"])
    assert min(s_adv["d"]) > max(s_noisy["d"])  # the attack adds power
    assert np.mean(s_adv["window_max"]) > np.mean(s_noisy["window_max"])
    table = typicality_table({"noisy": s_noisy, "pgd": s_adv}, SIGMA, 8, 0.05, clean.shape)
    assert "| pgd |" in table and "| noisy |" in table


def test_transfer_matrix_crafts_once_per_source_and_includes_bm3d(tmp_path):
    models = {"a": tiny(0), "b": tiny(1), "bm3d": load_model("bm3d")}
    clean = bundled_images(("camera", "astronaut"), size=32)
    calls = []

    def attack(model):
        calls.append(model)
        return DenoisingPGD(model, SIGMA, eps=8 / 255, steps=2)

    r = transfer_matrix(models, clean, SIGMA, attack, seed=0)
    assert [id(m) for m in calls] == [id(models["a"]), id(models["b"])]  # BM3D: target only
    assert r.sources == ["a", "b"] and r.targets == ["a", "b", "bm3d"]
    assert r.meta["description"] == (
        "DenoisingPGD, L-inf eps 8/255, 2 steps, clean target; sigma 25/255"
    )
    assert r.clean["bm3d"] > 24  # BM3D denoises
    for s in r.sources:
        assert r.drop(s, s) > 0  # white-box hurts
        assert len(r.per_image[s]["bm3d"]) == 2
    paths = save_transfer(r, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["attacked"]["a"]["bm3d"] == pytest.approx(r.attacked["a"]["bm3d"])
    assert "| a |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not among"):
        transfer_matrix(models, clean, SIGMA, attack, sources=["c"])
    with pytest.raises(ValueError, match="no differentiable"):
        transfer_matrix({"bm3d": models["bm3d"]}, clean, SIGMA, attack)


def test_model_registry():
    with pytest.raises(ValueError, match="unknown model"):
        load_model("dncnn-x")
    register_model("tiny-test", lambda data_dir: tiny(2))
    try:
        assert isinstance(load_model("tiny-test"), Denoiser)
    finally:
        del MODELS["tiny-test"]
    with pytest.raises(TypeError, match="callable"):
        register_model("x", 3)
