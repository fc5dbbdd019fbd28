"""The audit's run (app/audit/run.py): tiles go through the model in bounded batches, memory
stays flat in the image size, every model sees the same noisy tiles whatever its batch, and a
long estimate names the options that shorten it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ts_defense import Denoiser
from ts_defense.app.audit import AuditConfig, AuditModel, Picture, batch_size, run_audit
from ts_defense.app.audit import run as audit_run
from ts_defense.app.cli import main
from ts_defense.models import DnCNN

TESTS = Path(__file__).parent


class Recorder(nn.Module):
    """A network that remembers the largest batch it was given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.largest = net, 0

    def forward(self, x):
        self.largest = max(self.largest, x.shape[0])
        return self.net(x)


def recorded_model() -> AuditModel:
    torch.manual_seed(0)
    net = DnCNN(depth=3, features=4)
    with torch.no_grad():
        net.layers[-1].weight.mul_(0.01)
    return AuditModel("rec", Denoiser(Recorder(net), predicts="noise").eval(), 1, "test")


def test_tiles_go_through_the_model_in_bounded_batches_with_the_same_noise():
    image = torch.rand(1, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    pics = [Picture.from_tensor("big", image)]
    fast = {"budgets": (8 / 255,), "steps": 1, "transfer": False, "tile": 16, "tiles": "all"}
    fast["attack"] = "pgd"
    results, bounds = [], []
    for memory in (150_000, 10**9):
        model = recorded_model()
        config = AuditConfig(**fast, batch_memory=memory)
        bounds.append(batch_size(model.denoiser, 1, (16, 16), config.sigma, memory))
        results.append(run_audit([model], pics, config, progress=False).data)
        assert model.denoiser.model.largest == bounds[-1]  # never above the bound, and used
    assert 1 < bounds[0] < 8 and bounds[1] == audit_run.MAX_BATCH  # 36 tiles: batching matters
    small, large = (r["models"]["rec"]["per_image"] for r in results)
    assert small["psnr_clean"] == large["psnr_clean"]  # each tile's noise is its own
    assert small["atypical_windows_noisy"] == large["atypical_windows_noisy"]
    assert results[0]["tiles"]["big"]["size"] == [16, 16]
    assert len(results[0]["tiles"]["big"]["corners"]) == 36


def test_batch_size_follows_the_memory_a_tile_takes():
    small = Denoiser(DnCNN(depth=3, features=4), predicts="noise").eval()
    wide = Denoiser(DnCNN(depth=9, features=32), predicts="noise").eval()
    args = (1, (128, 128), 25 / 255, 2**24)
    assert batch_size(wide, *args) < batch_size(small, *args)  # a larger model, fewer tiles
    assert batch_size(small, 1, (256, 256), 25 / 255, 2**24) < batch_size(small, *args)
    assert batch_size(wide, 1, (128, 128), 25 / 255, 1) == 1  # at least one


RSS = """
import resource, sys
from ts_defense.app.audit import AuditConfig, estimate_text, resolve_images, resolve_model
from ts_defense.app.audit import run_audit
model, images = resolve_model("test_audit:tiny_model"), resolve_images(sys.argv[1])
config = AuditConfig(budgets=(8 / 255,), steps=1, obsatk_eps=4 / 255, transfer=False,
                     attack="pgd")
estimate_text([model], images, config)
run_audit([model], images, config, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_of_a_large_image_is_within_twice_that_of_a_small_one(tmp_path):
    peaks = {}
    for side in (512, 4000):
        folder = tmp_path / str(side)
        folder.mkdir()
        Image.new("L", (side, side), 128).save(folder / "grey.png")
        run = subprocess.run(
            [sys.executable, "-c", RSS, str(folder)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (TESTS.parent, TESTS)))},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        peaks[side] = int(run.stdout.split()[-1])
    assert peaks[4000] < 2 * peaks[512], peaks  # all its tiles at once: 35 GB for 12000 x 12000


def slow_machine(monkeypatch, seconds_per_pixel):
    monkeypatch.setattr(audit_run, "_pass_seconds", lambda den, x, sigma: seconds_per_pixel)


def test_a_long_estimate_says_which_options_bring_it_down(monkeypatch):
    from test_audit import tiny_model

    model = AuditModel("tiny", tiny_model(), 1, "test")
    photos = [Picture(f"p{k}.jpg", np.zeros((2000, 3000, 3), np.uint8)) for k in range(3)]
    config = AuditConfig(attack="pgd")
    slow_machine(monkeypatch, 1e-3)
    text = audit_run.estimate_text([model], photos, config)
    total = float(re.search(r"estimated run time about (\d+) s", text).group(1))
    assert (
        total > audit_run.LONG_RUN
        and "larger than 64 x 64 scored on at most 4 random tiles" in text
    )
    assert "over 10 minutes; to bring it down:" in text
    options = dict(re.findall(r"(--[a-z-]+(?: \d+)?) \(about (\d+) s\)", text))
    steps = int(next(k for k in options if k.startswith("--steps")).split()[1])
    assert set(options) == {"--tiles 1", f"--steps {steps}", "--no-transfer"}, text
    assert all(float(v) < total for v in options.values())
    assert float(options[f"--steps {steps}"]) <= audit_run.LONG_RUN  # the most steps that fit:
    more = audit_run.estimate_text([model], photos, AuditConfig(attack="pgd", steps=steps + 1))
    assert float(re.search(r"about (\d+) s", more).group(1)) > audit_run.LONG_RUN
    assert float(options["--tiles 1"]) == pytest.approx(total / 4, abs=1)
    assert f"fewer images (about {total / 3:.0f} s each)" in text
    every = audit_run.estimate_text([model], photos, AuditConfig(attack="pgd", tiles="all"))
    assert "cut into tiles of that size, all scored" in every and "--tiles 4 (about" in every
    slow_machine(monkeypatch, 1e-7)
    short = audit_run.estimate_text([model], photos, config)
    assert "estimated run time about" in short and "bring it down" not in short


def test_tile_options_are_checked(capsys):
    for bad in ({"tiles": 0}, {"tiles": "some"}, {"tile": 4}, {"tile": -1}, {"batch_memory": 0}):
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            AuditConfig(**bad)
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "dncnn-s-25", "--tiles", "0"])
    assert stop.value.code == 2 and "--tiles: expected a positive count or 'all'" in (
        capsys.readouterr().err
    )


def test_transfer_scores_each_tile_on_the_noise_the_white_box_run_drew(shared_data):
    """The tiles of one batch each get their own test noise under transfer too (they used to
    share one draw per batch there, so transfer and white-box compared different inputs)."""
    image = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    pics = [Picture.from_tensor("four", image)]
    config = AuditConfig(budgets=(8 / 255,), steps=1, attack="pgd", tile=32, tiles="all")
    data = run_audit([recorded_model()], pics, config, data_dir=shared_data, progress=False).data
    tiles = audit_run.plan(pics, config.tile, config.tiles, config.seed)
    assert tiles[0].count == 4
    transfer_clean = audit_run.per_image(data["transfer"]["clean_per_image"]["rec"], tiles, "psnr")
    assert transfer_clean == pytest.approx(data["models"]["rec"]["per_image"]["psnr_clean"])
