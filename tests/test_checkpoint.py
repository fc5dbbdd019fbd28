import os
import signal
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
    # the next save removes the dead writer's full-size debris, not a live writer's file
    live = tmp_path / f".ckpt.pt.{os.getppid()}.0a1b2c3d.tmp"
    live.write_bytes(b"being written")
    (tmp_path / ".other.pt.1.x.tmp").write_bytes(b"another target's")
    save_checkpoint(path, small(), step=3)
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.pt", live.name, ".other.pt.1.x.tmp"])


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


def test_checkpoint_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "shared.pt", small())
        os.umask(0o077)
        save_checkpoint(tmp_path / "private.pt", small())
    finally:
        os.umask(old)
    assert (tmp_path / "shared.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.pt").stat().st_mode & 0o777 == 0o600


class InterruptAt:
    """MSE; Ctrl-C (SIGINT) arrives during the given (1-based) training step."""

    def __init__(self, at=None):
        self.at, self.steps = at, 0

    def __call__(self, pred, target):
        if torch.is_grad_enabled():
            self.steps += 1
            if self.steps == self.at:
                signal.raise_signal(signal.SIGINT)
        return torch.nn.functional.mse_loss(pred, target)


@pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")
def test_ctrl_c_in_fit_saves_and_says_how_to_resume(tmp_path):
    ckpt = tmp_path / "run.pt"
    model = small()
    with pytest.raises(KeyboardInterrupt) as info:
        fit(model, IMAGES, progress=False, checkpoint=ckpt, loss=InterruptAt(2), **FIT)
    msg = str(info.value)
    assert isinstance(info.value, SystemExit)  # uncaught: this one line, no traceback
    assert "\n" not in msg and "interrupted after 2 of 6 steps" in msg
    assert f"checkpoint={str(ckpt)!r} to resume" in msg
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert load_checkpoint(ckpt, small())["step"] == 2
    full = small()
    h_full = fit(full, IMAGES, progress=False, loss=InterruptAt(), **FIT)
    resumed = small()
    h_res = fit(resumed, IMAGES, progress=False, checkpoint=ckpt, loss=InterruptAt(), **FIT)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in full.state_dict().items())
    assert repr(h_res.records) == repr(h_full.records)
    with pytest.raises(KeyboardInterrupt):  # without a checkpoint Ctrl-C stops at once
        fit(small(), IMAGES, progress=False, loss=InterruptAt(2), **FIT)


def count_steps():
    calls = []

    def loss(pred, target):
        calls.append(1)
        return torch.nn.functional.mse_loss(pred, target)

    return calls, loss


def test_unwritable_checkpoint_paths_fail_before_training(tmp_path):
    calls, loss = count_steps()
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(OSError, match=r"could not write .*file/run.pt \(.*\); the file already"):
        fit(small(), IMAGES, loss=loss, checkpoint=tmp_path / "file" / "run.pt", **FIT)
    with pytest.raises(ValueError, match="checkpoint must be a file path, got ''"):
        fit(small(), IMAGES, loss=loss, checkpoint="", **FIT)
    with pytest.raises(ValueError, match="is a directory, not a file path"):
        fit(small(), IMAGES, loss=loss, checkpoint=tmp_path, **FIT)
    with pytest.raises(ValueError, match="path must be a file path"):
        save_checkpoint("", small())
    assert calls == []
    fit(small(), IMAGES, progress=False, checkpoint=tmp_path / "new" / "deep" / "run.pt", **FIT)
    assert load_checkpoint(tmp_path / "new" / "deep" / "run.pt", small())["step"] == 6


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_checkpoint_folder_fails_before_training(tmp_path):
    calls, loss = count_steps()
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(OSError, match="could not write .*Permission denied"):
        fit(small(), IMAGES, loss=loss, checkpoint=folder / "run.pt", **FIT)
    assert calls == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_a_clear_oserror_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, small(), step=1)
    good = path.read_bytes()
    real_save = torch.save

    def full_disk(obj, f):
        with open("/dev/full", "wb") as full:
            real_save(obj, full)
            full.flush()

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, small(), step=2)
    assert info.value.errno == 28 and "inline_container" not in str(info.value)
    assert str(info.value) == (
        f"could not write {path} (No space left on device); the file already there, if any, "
        f"is intact"
    )
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["ckpt.pt"]
