import os
import subprocess
import sys

import pytest
import torch

from ts_defense import (
    PatchSampler,
    TrainStep,
    TSSampler,
    atomic_save,
    fit,
    load_checkpoint,
    save_checkpoint,
)
from ts_defense.models import DnCNN

IMAGES = torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(5))
FIT = dict(steps=6, batch_size=4, patch_size=12, lr=1e-3, seed=3, predicts="noise")


def small():
    torch.manual_seed(0)
    return DnCNN(depth=3, features=8)  # batch norm: running statistics must resume too


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fit_stopped_and_resumed_equals_uninterrupted_bit_for_bit(tmp_path):
    full = small()
    h_full = fit(full, IMAGES, progress=False, **FIT)
    ckpt = tmp_path / "run.pt"
    part = small()
    fit(part, IMAGES, progress=False, checkpoint=ckpt, **{**FIT, "steps": 4})
    resumed = small()  # a fresh process would start from a fresh model
    h_res = fit(resumed, IMAGES, progress=False, checkpoint=ckpt, **FIT)
    for k, v in state(full).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert repr(h_res.records) == repr(h_full.records)  # repr: NaN parts compare equal
    assert len(h_full.records) == 6 and h_full.column("step") == [1, 2, 3, 4, 5, 6]
    with pytest.raises(KeyError, match="no 'psnr'"):
        h_full.column("psnr")


def test_train_step_resume_with_plain_state_dicts(tmp_path):
    clean = [torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(6)]

    def run(model, opt, sampler, batches):
        step = TrainStep(model, opt, sampler, predicts="noise")
        return [step(c).draw.noise for c in batches]

    model = small()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    noise_full = run(model, opt, TSSampler(seed=1), clean)

    m2 = small()
    o2 = torch.optim.Adam(m2.parameters(), 1e-3)
    s2 = TSSampler(seed=1)
    noise_a = run(m2, o2, s2, clean[:3])
    save_checkpoint(tmp_path / "c.pt", m2, o2, s2, step=3)
    m3 = small()
    o3 = torch.optim.Adam(m3.parameters(), 1e-3)
    s3 = TSSampler(seed=1)
    assert load_checkpoint(tmp_path / "c.pt", m3, o3, s3) == {"step": 3}
    noise_b = run(m3, o3, s3, clean[3:])
    for a, b in zip(noise_full, noise_a + noise_b, strict=True):
        assert torch.equal(a, b)
    for k, v in model.state_dict().items():
        assert torch.equal(v, m3.state_dict()[k]), k


def test_torn_write_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    model = small()
    save_checkpoint(path, model, step=1)
    good = path.read_bytes()

    def torn(obj, f):  # writes part of the file, then the process is interrupted
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # the temporary file is cleaned up
    assert load_checkpoint(path, small())["step"] == 1


def test_killed_writer_leaves_the_good_checkpoint(tmp_path):
    """A process killed mid-write (no cleanup at all) still leaves the old checkpoint intact."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, small(), step=1)
    good = path.read_bytes()
    code = f"""
import os, torch
from ts_defense import save_checkpoint
from ts_defense.models import DnCNN
def dying(obj, f):
    f.write(b"PK half"); f.flush(); os._exit(9)
torch.save = dying
save_checkpoint({str(path)!r}, DnCNN(depth=3, features=8), step=2)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert out.returncode == 9, out.stderr.decode()[-500:]
    assert path.read_bytes() == good
    leftovers = [p for p in os.listdir(tmp_path) if p != "ckpt.pt"]
    assert leftovers and all(p.startswith(".ckpt.pt.") for p in leftovers)
    assert load_checkpoint(path, small())["step"] == 1


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt", small())
    atomic_save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a ts-defense checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt", small())
    save_checkpoint(tmp_path / "m.pt", small())
    with pytest.raises(ValueError, match="holds no sampler state"):
        load_checkpoint(tmp_path / "m.pt", small(), sampler=TSSampler())


def test_patch_sampler_and_fit_arguments():
    gen = torch.Generator().manual_seed(0)
    patches = PatchSampler([torch.rand(1, 20, 30), torch.rand(1, 1, 16, 16)], 16, gen)(32)
    assert patches.shape == (32, 1, 16, 16)
    with pytest.raises(ValueError, match=r"images\[0\] is \(8, 8\), smaller than patch_size=12"):
        PatchSampler(torch.rand(1, 1, 8, 8), 12, gen)
    with pytest.raises(ValueError, match="steps must be finite and > 0"):
        fit(small(), IMAGES, steps=0)
    with pytest.raises(ValueError, match="unknown TS option"):
        fit(small(), IMAGES, config={"sigmaa": 0.1})
