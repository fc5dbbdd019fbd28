import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ts_defense import (
    PatchSampler,
    TrainStep,
    TSConfig,
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
        fit(small(), IMAGES, predicts="noise", steps=0)
    with pytest.raises(ValueError, match="unknown TS option"):
        fit(small(), IMAGES, predicts="noise", config={"sigmaa": 0.1})


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


@pytest.fixture
def sigint():
    """SIGINT set to Python's default (KeyboardInterrupt) for the test, whatever the process was
    started with (a background job or nohup ignores it), and restored after."""

    def set_to(handler):
        signal.signal(signal.SIGINT, handler)

    before = signal.getsignal(signal.SIGINT)
    set_to(signal.default_int_handler)
    try:
        yield set_to
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")
def test_ctrl_c_in_fit_saves_and_says_how_to_resume(tmp_path, sigint):
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


def test_fit_says_once_when_it_cannot_catch_ctrl_c(tmp_path, sigint, recwarn):
    sigint(signal.SIG_IGN)  # as a job started with `&` or nohup has it
    history = fit(small(), IMAGES, progress=False, checkpoint=tmp_path / "a.pt", **FIT)
    assert len(history.records) == 6 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    (warning,) = [w for w in recwarn if w.category is RuntimeWarning]
    assert str(warning.message) == (
        f"fit cannot save {tmp_path / 'a.pt'} on Ctrl-C: SIGINT is ignored in this process, as "
        f"in a background job or under nohup; it is saved at the start, on a non-finite step and "
        f"at the end"
    )
    assert warning.filename == __file__  # points at the call of fit
    recwarn.clear()
    fit(small(), IMAGES, progress=False, **FIT)  # without a checkpoint there is nothing to save
    assert not [w for w in recwarn if w.category is RuntimeWarning]

    def own(signum, frame):
        pass

    sigint(own)
    with pytest.warns(RuntimeWarning, match=r"SIGINT has a handler of its own \(<function"):
        fit(
            small(), IMAGES, progress=False, checkpoint=tmp_path / "b.pt", checkpoint_every=2, **FIT
        )
    assert signal.getsignal(signal.SIGINT) is own  # left in place
    sigint(signal.default_int_handler)
    caught = []

    def in_a_thread():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            fit(small(), IMAGES, progress=False, checkpoint=tmp_path / "c.pt", **FIT)
        caught.extend(str(w.message) for w in seen)

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert len(caught) == 1 and "fit runs outside the main thread" in caught[0]


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


def adam(model):
    return torch.optim.Adam(model.parameters(), 1e-3)


def test_numpy_values_and_paths_are_saved_as_plain_types(tmp_path):
    """Issue 16.5: what the library writes, it can read back with weights_only=True."""
    cfg = TSConfig(
        sigma=np.float64(0.1), p_ood=np.float64(0.3), families={"radial": np.float64(1.0)}
    )
    ckpt = tmp_path / "np.pt"
    fit(
        small(),
        IMAGES,
        progress=False,
        checkpoint=ckpt,
        config=cfg,
        **{**FIT, "lr": np.float64(1e-3)},
    )
    m = small()
    load_checkpoint(ckpt, m, opt := adam(m), TSSampler(cfg, seed=3))
    assert type(opt.param_groups[0]["lr"]) is float
    fit(small(), IMAGES, progress=False, checkpoint=ckpt, config=cfg, **{**FIT, "steps": 7})
    extra = dict(n=np.int64(3), where=Path("a/b"), arr=np.arange(3), flag=np.bool_(True))
    save_checkpoint(tmp_path / "x.pt", small(), **extra)
    back = load_checkpoint(tmp_path / "x.pt", small())
    assert back["n"] == 3 and type(back["n"]) is int and back["where"] == os.path.join("a", "b")
    assert torch.equal(back["arr"], torch.arange(3)) and back["flag"] is True
    with pytest.raises(TypeError, match=r"extra\['bad'\]\[0\] is a object: a saved state holds"):
        save_checkpoint(tmp_path / "bad.pt", small(), bad=[object()])
    assert not (tmp_path / "bad.pt").exists()


def test_checkpoint_argument_errors_name_the_parameter(tmp_path):
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match="sampler must be a TSSampler or None, got str"):
        save_checkpoint(path, small(), None, "x")
    with pytest.raises(TypeError, match="optimizer must be a torch Optimizer or None, got int"):
        save_checkpoint(path, small(), 3)
    save_checkpoint(path, small())
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        load_checkpoint(path, "model")
    with pytest.raises(ValueError, match=r"holds weights of another model: Error\(s\) in") as info:
        load_checkpoint(path, DnCNN(depth=4, features=8))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="seed must be an int"):
        fit(small(), IMAGES, **{**FIT, "seed": None})
    with pytest.raises(ValueError, match=r"c.pt was not written by fit \(no 'step'\)"):
        fit(small(), IMAGES, checkpoint=path, **FIT)
    save_checkpoint(path, m := small(), adam(m), TSSampler(seed=3), epoch=1)
    with pytest.raises(ValueError, match=r"c.pt was not written by fit \(no 'step'\)"):
        fit(small(), IMAGES, checkpoint=path, **FIT)


def forged(path, **extra):
    model = small()
    rng = dict(patch_generator=torch.Generator().get_state(), torch_rng=torch.get_rng_state())
    extra = {"recipe": "ts", **extra}
    save_checkpoint(path, model, adam(model), TSSampler(seed=3), **{**rng, **extra})


def test_fit_refuses_a_resume_state_it_did_not_write(tmp_path):
    path = tmp_path / "forged.pt"
    forged(path, step=-7, history="abc")
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 9.22e\+18\], got -7"):
        fit(small(), IMAGES, checkpoint=path, **FIT)
    forged(path, step=2, history="abc")
    with pytest.raises(ValueError, match="history must be a list of records, got 'abc'"):
        fit(small(), IMAGES, checkpoint=path, **FIT)
    forged(path, step=2, history=[], torch_rng=torch.zeros(7, dtype=torch.uint8))
    with pytest.raises(ValueError, match="torch_rng is not a CPU generator state"):
        fit(small(), IMAGES, checkpoint=path, **FIT)


def test_sampler_states_are_checked_before_they_are_used(tmp_path):
    x = torch.rand(2, 1, 8, 8)
    sampler = TSSampler(seed=1)
    bad = {"seed": 1, "generators": {"cpu": torch.zeros(7, dtype=torch.uint8)}}
    with pytest.raises(ValueError, match=r"\['cpu'\] is not a cpu generator state \(7 bytes\)"):
        sampler.load_state_dict(bad)
    with pytest.raises(ValueError, match="names no device: 'gpu0'"):
        sampler.load_state_dict({"seed": 1, "generators": {"gpu0": bad["generators"]["cpu"]}})
    assert torch.equal(sampler.draw(x).noise, TSSampler(seed=1).draw(x).noise)  # unchanged
    other = TSSampler(TSConfig(p_ood=0.5), seed=1)
    other.draw(x)
    with pytest.raises(ValueError, match=r"another TS configuration \(p_ood=0.5 there, 0.2 here"):
        sampler.load_state_dict(other.state_dict())
    sampler.load_state_dict(other.state_dict(), strict=False)  # asked for: the stream goes on
    assert torch.equal(sampler.draw(x).noise.flatten()[:5], other.draw(x).noise.flatten()[:5])
    save_checkpoint(tmp_path / "c.pt", small(), sampler=other)
    with pytest.raises(ValueError, match="strict=False"):
        load_checkpoint(tmp_path / "c.pt", small(), sampler=TSSampler(seed=1))


def test_single_bit_flips_never_load_altered_state(tmp_path):
    """A digest of the payload is checked on load: a flipped bit is refused or harmless."""
    import random

    path, model = tmp_path / "c.pt", small()
    save_checkpoint(path, model, adam(model), TSSampler(seed=2), step=5, history=[{"loss": 0.5}])
    good = path.read_bytes()
    rnd, refused = random.Random(0), 0
    for _ in range(200):
        bit = rnd.randrange(8 * len(good))
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(flipped)
        fresh = small()
        try:
            extra = load_checkpoint(path, fresh, adam(fresh), TSSampler(seed=2))
        except ValueError:
            refused += 1
            continue
        assert extra == {"step": 5, "history": [{"loss": 0.5}]}, bit
        assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())
    assert refused > 100


@pytest.mark.parametrize(
    ("saved", "asked"), [("free-hat", "gaussian"), ("hat", "free-hat"), ("ts", "gaussian")]
)
def test_a_checkpoint_resumes_only_under_the_recipe_that_wrote_it(tmp_path, saved, asked):
    """Issue 29.4: a swap was resumed silently (free-hat -> gaussian) or refused with messages
    about internal fields (amortised, p_ood); now it is refused by the recipes' names."""
    path = tmp_path / "c.pt"
    fit(small(), IMAGES, recipe=saved, checkpoint=path, **{**FIT, "steps": 2})
    model = small()
    before = state(model)
    with pytest.raises(ValueError) as info:
        fit(model, IMAGES, recipe=asked, checkpoint=path, **FIT)
    assert str(info.value) == (
        f"checkpoint {path} was written by recipe {saved!r}; this run asks for {asked!r}: resume "
        f"it with recipe={saved!r}, or give fit another checkpoint path"
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    fit(model, IMAGES, recipe=saved, checkpoint=path, **FIT)  # its own recipe resumes it
    assert load_checkpoint(path, small())["recipe"] == saved


def test_resuming_with_a_scheduler_the_run_did_not_have_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    fit(small(), IMAGES, checkpoint=path, **{**FIT, "steps": 2})
    model = small()
    opt = adam(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(ValueError, match="c.pt was written without a scheduler: resume it without"):
        fit(model, IMAGES, optimizer=opt, scheduler=sched, checkpoint=path, **FIT)
