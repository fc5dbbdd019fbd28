"""Fuzzing the training layer (issue 7): Denoiser, DnCNN, ts_loss, TrainStep, fit, PatchSampler,
checkpoints and sampler states, with tiny models and absurd options."""

import math

import pytest
import torch
from fuzz_support import outcome, sigmas, tensors, values
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ts_defense import (
    Denoiser,
    PatchSampler,
    TrainStep,
    TSConfig,
    TSSampler,
    fit,
    load_checkpoint,
    save_checkpoint,
    ts_loss,
)
from ts_defense.models import DnCNN
from ts_defense.training.recipes import RECIPES

TRAIN_PARAMS = ("clean", "noisy", "sigma", "model", "loss", "sampler", "denoiser")


def tiny(channels=1):
    torch.manual_seed(0)
    return DnCNN(channels=channels, depth=3, features=4)


def finite_weights(model):
    return all(
        bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()
    )


@given(
    noisy=tensors(),
    sigma=st.one_of(st.none(), sigmas),
    predicts=st.sampled_from(["clean", "noise", "x"]),
    noise_level=st.sampled_from(["none", "map", "argument", 3]),
)
def test_fuzz_denoiser(noisy, sigma, predicts, noise_level):
    class Arg(nn.Module):  # takes sigma as an argument, like deepinv models
        def forward(self, y, s):
            return y * 0.5 + s.view(-1, 1, 1, 1)

    model = {"none": tiny(), "map": DnCNN(channels=2, depth=3, features=4)}.get(noise_level, Arg())

    def call():
        return Denoiser(model, predicts=predicts, noise_level=noise_level)(noisy, sigma)

    params = ("noisy", "sigma", "predicts", "noise_level", "model")
    if noisy.is_floating_point() and not bool(torch.isfinite(noisy).all()):
        # documented: NaN/Inf inside the input are not checked here (the layers above do)
        params = (*params, "non-finite")
        try:
            with torch.no_grad():
                call()
        except (ValueError, TypeError) as err:
            assert any(p in str(err) for p in params), err
        return
    with torch.no_grad():
        out = outcome("Denoiser", call, params)
    if out is not None:
        assert out.shape == noisy.shape


@given(channels=values, depth=values, features=values)
def test_fuzz_dncnn_arguments(channels, depth, features):
    def call():
        return DnCNN(channels=channels, depth=depth, features=features)

    outcome("DnCNN", call, ("channels", "depth", "features"))


losses = st.sampled_from(
    ["mse", "l1", "charbonnier", "sum_mse", "huber", 3, lambda p, t: (p - t).abs().sum()]
)


@given(clean=tensors(), loss=losses, p_ood=st.floats(0, 1), seed=st.integers(0, 3))
def test_fuzz_ts_loss(clean, loss, p_ood, seed):
    sampler = TSSampler(TSConfig(p_ood=p_ood), seed=seed)
    res = outcome("ts_loss", lambda: ts_loss(Denoiser(tiny()), sampler, clean, loss), TRAIN_PARAMS)
    if res is not None:
        assert res.loss.dim() == 0 and res.deviation.shape == (clean.shape[0],)
        assert 0 <= res.n_ood <= clean.shape[0]


@given(
    clean=tensors(max_side=8),
    lr=st.one_of(st.sampled_from([1e-2, 1e3, 1e30, 1e38]), st.floats(1e-6, 1e38)),
    max_grad_norm=st.one_of(st.none(), st.sampled_from([1.0, 1e-30, 0.0, -1.0, math.nan])),
    on_nonfinite=st.sampled_from(["raise", "skip", "ignore"]),
    loss=losses,
)
def test_fuzz_train_step(clean, lr, max_grad_norm, on_nonfinite, loss):
    """Whatever happens, the weights stay finite: a bad step raises or is skipped, never applied."""
    model = tiny()

    def call():
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        step = TrainStep(
            model,
            opt,
            TSSampler(seed=0),
            predicts="noise",
            loss=loss,
            max_grad_norm=max_grad_norm,
            on_nonfinite=on_nonfinite,
        )
        return [step(clean) for _ in range(3)]

    params = (*TRAIN_PARAMS, "max_grad_norm", "on_nonfinite", "optimizer")
    results = outcome("TrainStep", call, params, also=(FloatingPointError,))
    assert finite_weights(model) or lr >= 1e30  # SGD itself may overflow weights at lr 1e30+
    if results is not None:
        assert all(r.loss.dim() == 0 for r in results)


images = st.one_of(
    tensors(max_side=12),
    st.lists(tensors(min_dims=3, max_dims=4, max_side=12), min_size=0, max_size=3),
    st.sampled_from(["images", None, 3]),
)


@given(
    imgs=images,
    steps=st.one_of(st.integers(-1, 2), st.sampled_from([1.5, "2", None])),
    batch_size=st.one_of(st.integers(-1, 3), st.sampled_from([2.0, 10**12])),
    patch_size=st.one_of(st.integers(-1, 8), st.sampled_from([10**9, 2.5])),
    options=st.dictionaries(
        st.sampled_from(
            [
                "lr",
                "seed",
                "predicts",
                "noise_level",
                "loss",
                "log_every",
                "checkpoint_every",
                "max_grad_norm",
                "on_nonfinite",
                "config",
                "accelerator",
            ]
        ),
        values,
        max_size=3,
    ),
)
def test_fuzz_fit(tmp_path_factory, imgs, steps, batch_size, patch_size, options):
    model = tiny()
    ckpt = tmp_path_factory.mktemp("fit") / "run.pt"

    def call():
        kw = dict(steps=steps, batch_size=batch_size, patch_size=patch_size, progress=False)
        return fit(model, imgs, checkpoint=ckpt, **{"predicts": "noise", **kw, **options})

    params = (
        "images",
        "steps",
        "batch_size",
        "patch_size",
        "model",
        "noisy",
        "TS option",
        *options,
    )
    history = outcome("fit", call, params, also=(FloatingPointError,))
    if ckpt.exists():  # a checkpoint on disk always loads and is finite
        load_checkpoint(ckpt, fresh := tiny())
        assert finite_weights(fresh)
    if history is not None:
        assert len(history.records) == steps
        assert all(math.isfinite(r["loss"]) or r["skipped"] for r in history.records)


@given(imgs=images, patch_size=st.integers(1, 6), batch_size=st.integers(1, 4))
def test_fuzz_patch_sampler(imgs, patch_size, batch_size):
    def call():
        return PatchSampler(imgs, patch_size, torch.Generator().manual_seed(0))(batch_size)

    out = outcome("PatchSampler", call, ("images", "patch_size", "batch_size"))
    if out is not None:
        assert out.shape[0] == batch_size and out.shape[-2:] == (patch_size, patch_size)


@given(
    state=st.one_of(
        values,
        st.fixed_dictionaries({"seed": values, "generators": values}),
        st.fixed_dictionaries(
            {
                "seed": st.integers(-2, 2**64),
                "generators": st.dictionaries(
                    st.sampled_from(["cpu", "cuda:0"]),
                    st.sampled_from(
                        [
                            torch.zeros(3),
                            torch.zeros(7, dtype=torch.uint8),  # a torn state (issue 16.5)
                            torch.Generator().get_state(),
                            "x",
                        ]
                    ),
                ),
            }
        ),
    )
)
def test_fuzz_sampler_load_state_dict(state):
    sampler = TSSampler(seed=0)

    def call():
        sampler.load_state_dict(state)
        return sampler.draw(torch.rand(2, 1, 4, 4))

    outcome("TSSampler.load_state_dict", call, ("state", "seed", "generators"))


@given(blob=st.binary(max_size=64), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02"]))
def test_fuzz_load_checkpoint_garbage(tmp_path_factory, blob, prefix):
    """Random or torn bytes are refused with a ValueError, never unpickled into anything."""
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    path.write_bytes(prefix + blob)
    outcome(
        "load_checkpoint", lambda: load_checkpoint(path, tiny()), ("refusing to load", "checkpoint")
    )


def test_save_checkpoint_round_trip_after_fuzzing(tmp_path):
    """The guard against non-finite weights does not refuse a healthy model."""
    model = tiny()
    save_checkpoint(tmp_path / "ok.pt", model, step=1)
    assert load_checkpoint(tmp_path / "ok.pt", tiny()) == {"step": 1}


@given(
    h=st.integers(4, 10),
    n=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
    lr=st.sampled_from([1e-3, 1.0, 1e30, 1e38]),
    loss=st.sampled_from(["mse", "sum_mse", lambda p, t: (p - t).square().mean() / (p - t).sum()]),
    on_nonfinite=st.sampled_from(["raise", "skip"]),
    checkpoint_every=st.integers(0, 2),
)
def test_fuzz_fit_valid_images(
    tmp_path_factory, h, n, dtype, lr, loss, on_nonfinite, checkpoint_every
):
    """Valid images with absurd training options: a finite history, or a FloatingPointError that
    leaves a finite checkpoint behind."""
    imgs = torch.rand(n, 1, h, h + 1, generator=torch.Generator().manual_seed(h)).to(dtype)
    ckpt = tmp_path_factory.mktemp("fitv") / "run.pt"
    model = tiny()

    def call():
        return fit(
            model,
            imgs,
            steps=3,
            batch_size=2,
            patch_size=4,
            lr=lr,
            loss=loss,
            predicts="noise",
            on_nonfinite=on_nonfinite,
            checkpoint=ckpt,
            checkpoint_every=checkpoint_every,
            progress=False,
        )

    # a skipped step records its non-finite loss: checked below, not by outcome
    history = outcome(
        "fit (valid images)", call, ("loss", "lr"), also=(FloatingPointError,), floats=False
    )
    if history is not None:
        assert [r["step"] for r in history.records] == [1, 2, 3]
        assert all(math.isfinite(r["loss"]) or r["skipped"] for r in history.records)
    if ckpt.exists():
        load_checkpoint(ckpt, fresh := tiny())
        assert finite_weights(fresh)


@settings(max_examples=8, deadline=None)
@given(saved=st.sampled_from(sorted(RECIPES)), asked=st.sampled_from(sorted(RECIPES)))
def test_fuzz_recipe_swaps_on_resume(tmp_path_factory, saved, asked):
    """Issue 29.4: a checkpoint resumes only under the recipe that wrote it; any other is
    refused by both names before anything is restored."""
    ckpt = tmp_path_factory.mktemp("swap") / "run.pt"
    kw = dict(batch_size=2, patch_size=4, predicts="noise", checkpoint=ckpt, progress=False)
    imgs = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fit(tiny(), imgs, recipe=saved, steps=1, **kw)
    model = tiny()
    before = [t.clone() for t in model.state_dict().values()]
    if saved == asked:
        assert [r["step"] for r in fit(model, imgs, recipe=asked, steps=2, **kw).records] == [1, 2]
        return
    with pytest.raises(ValueError) as info:
        fit(model, imgs, recipe=asked, steps=2, **kw)
    assert f"written by recipe {saved!r}; this run asks for {asked!r}" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values(), strict=True))
