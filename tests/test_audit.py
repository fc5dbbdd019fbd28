"""``ts-defense evaluate`` / ``compare`` (issue 14): a user's weights file (spandrel detects the
architecture), a zoo name, ``module:function``, a folder of grey and colour images; the report
files and their numbers; one-line refusals of bad input; one set of units; --help defaults."""

import json
import math
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ts_defense import Denoiser
from ts_defense.app.audit.images import Picture, choose_tiles, per_image
from ts_defense.app.cli import build_parser, main
from ts_defense.attacks import DenoisingPGD, L2DenoisingPGD, ObsAtk
from ts_defense.evaluation.metrics import psnr
from ts_defense.models import DnCNN
from ts_defense.models.zoo import SOURCES, weights_file

FAST = ["--attack", "pgd", "--steps", "1", "--eps", "4", "8", "--obsatk-eps", "4"]


def near_identity(net):
    """Scale the last layer down: a residual net that barely changes its input, so that the
    attacks have a gradient and the PSNR order (attacked < clean) is meaningful."""
    last = [p for p in net.parameters() if p.dim() == 4][-1]
    with torch.no_grad():
        last.mul_(0.01)
    return net


def tiny_model():
    """For ``test_audit:tiny_model`` (module:function)."""
    torch.manual_seed(0)
    return Denoiser(near_identity(DnCNN(depth=3, features=4)), predicts="noise")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two small PNGs: one grey, one colour (RGBA: the alpha is dropped)."""
    path = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 24)[None, :] * np.ones((24, 1))
    Image.fromarray(ramp.astype(np.uint8)).save(path / "a_grey.png")
    colour = np.stack([ramp, ramp.T, 255 - ramp, np.full_like(ramp, 255)], -1)
    colour[8:16, 8:16, :3] = rng.integers(0, 255, (8, 8, 3))
    Image.fromarray(colour.astype(np.uint8)).save(path / "b_colour.png")
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("ts-defense: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def check_report(out, models):
    data = json.loads((out / "audit.json").read_text())
    assert list(data["models"]) == models and data["images"] == ["a_grey.png", "b_colour.png"]
    for name in models:
        m = data["models"][name]
        for i in range(2):
            clean = m["per_image"]["psnr_clean"][i]
            attacked = m["per_image"]["pgd"]["8"]["psnr"][i]
            assert math.isfinite(clean) and math.isfinite(attacked)
            assert attacked < m["per_image"]["pgd"]["4"]["psnr"][i] < clean
            assert m["per_image"]["obsatk"]["psnr"][i] < clean
        assert m["mean"]["psnr_clean"] == pytest.approx(np.mean(m["per_image"]["psnr_clean"]))
    md = (out / "audit.md").read_text()
    assert "## Leaderboard" in md and "| **mean** |" in md and "eps 4, 8 (grey levels)" in md
    assert (out / "audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_evaluate_a_spandrel_weights_file_and_a_python_function(tmp_path, folder, capsys):
    from spandrel.architectures.DnCNN import DnCNN as KairDnCNN

    torch.manual_seed(0)
    net = near_identity(KairDnCNN(in_nc=1, out_nc=1, nc=4, nb=8))  # KAIR's keys: model.N.*
    torch.save(net.state_dict(), tmp_path / "kair.pth")
    out = tmp_path / "out"
    argv = ["compare", str(tmp_path / "kair.pth"), "test_audit:tiny_model", "--images"]
    assert main(argv + [str(folder), "--out", str(out), "--no-transfer", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "estimated run time about" in printed and "| kair |" in printed
    data = check_report(out, ["kair", "tiny_model"])
    assert data["models"]["kair"]["source"].startswith("DnCNN")
    assert data["transfer"] is None and "left out" in data["transfer_note"]


def test_spandrel_drunet_gets_its_noise_map_and_any_image_size(tmp_path):
    from spandrel.architectures.DRUNet import DRUNet

    from ts_defense.app.audit import resolve_model

    torch.manual_seed(0)
    net = DRUNet(in_nc=4, out_nc=3, nc=[4, 8, 8, 8], nb=2)  # colour, with a noise-level map
    torch.save(net.state_dict(), tmp_path / "drunet.pth")
    model = resolve_model(str(tmp_path / "drunet.pth"))
    assert model.channels == 3 and model.denoiser.noise_level == "map"
    y = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        low, high = model.denoiser(y, 5 / 255), model.denoiser(y, 50 / 255)
    assert low.shape == y.shape and not torch.equal(low, high)  # sigma reaches the network


def test_evaluate_a_zoo_model_with_transfer_and_tiles(tmp_path, folder, shared_data, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", "dncnn-s-25", "--images", str(folder), "--out", str(out), "--tile", "16"]
    assert main(argv + ["--data", str(shared_data), *FAST]) == 0
    data = check_report(out, ["dncnn-s-25"])
    m = data["models"]["dncnn-s-25"]
    assert "SHA-256 " + SOURCES["DnCNN-S-25.pth"].sha256 in m["source"]
    assert data["transfer"]["sources"] == ["dncnn-s-25", "kair-dncnn-25"]
    # white-box PGD on itself at the same budget hurts at least as much as the transfer
    assert m["mean"]["transfer"]["kair-dncnn-25"] > m["mean"]["pgd"]["8"]["psnr"] - 0.5
    assert "PSNR drop" in (out / "audit.md").read_text()


def test_tiles_fold_back_into_the_whole_image_psnr():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(1, 1, 32, 48, generator=gen)
    est = clean + 0.1 * torch.randn(clean.shape, generator=gen)
    im = choose_tiles(Picture.from_tensor("x", clean), tile=16, tiles="all", seed=0)
    assert im.count == 6 and im.size == (16, 16)
    ((_, x),) = im.batches(6, 1)
    ((_, y),) = choose_tiles(Picture.from_tensor("x", est), 16, "all", 0).batches(6, 1)
    folded = per_image(psnr(x, y), [im], "psnr")
    assert folded[0] == pytest.approx(psnr(clean, est)[0], abs=1e-6)


def test_bad_input_exits_2_with_one_line(tmp_path, folder, capsys):
    base = ["--images", str(folder), "--out", str(tmp_path / "o"), "--no-transfer", *FAST]
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model.0.weight": Payload()}, f)
    cases = [
        (["evaluate", str(tmp_path / "missing.pth")], f"no such file: {tmp_path / 'missing.pth'}"),
        (["evaluate", str(tmp_path / "evil.pth")], "refusing to load"),
        (["evaluate", "no-such-model"], "named model"),
        (["evaluate", "nomodule_xyz:fn"], "cannot import"),
        (["evaluate", "dncnn-s-25", "--eps", "0.03"], "grey levels 0..255"),
        (["evaluate", "dncnn-s-25", "--sigma", "0.1"], "--sigma 0.1 looks like image units"),
        (["compare", "dncnn-s-25"], "at least two models"),
        (["evaluate", "bm3d"], "use it as a transfer target instead"),
        (["evaluate", "dncnn-s-25", "--images", str(tmp_path / "nowhere")], "neither a folder"),
    ]
    for argv, message in cases:
        assert main([argv[0], *base, *argv[1:]]) == 2, argv
        assert message in one_error_line(capsys), argv
    assert not marker.exists()
    assert main(["attack", "--eps", "0.03", "--out", str(tmp_path / "o")]) == 2
    assert "--eps 0.03 looks like image units" in one_error_line(capsys)
    assert main(["sampler-report", "--sigma", "0.1", "--out", str(tmp_path / "o")]) == 2
    assert "grey levels 0..255" in one_error_line(capsys)


def test_attacks_refuse_grey_levels():
    den = tiny_model()
    with pytest.raises(ValueError, match=r"budgets are in image units \(8/255, not 8\)"):
        DenoisingPGD(den, 25 / 255, eps=8)
    with pytest.raises(ValueError, match=r"noise levels are in image units \(25/255, not 25\)"):
        DenoisingPGD(den, 25)
    with pytest.raises(ValueError, match=r"sigma=.* image units"):
        DenoisingPGD(den, torch.tensor([0.1, 25.0]))
    with pytest.raises(ValueError, match="budgets are in image units"):
        ObsAtk(den, 25 / 255, eps=5)
    assert L2DenoisingPGD(den, 25 / 255, rho=1.5).eps == 1.5  # rho is a ratio, not a unit
    assert DenoisingPGD(den, 1.0, eps=1.0).eps == 1.0  # the image range itself is allowed


def test_named_weights_are_checked_and_missing_ones_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TS_DEFENSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TS_DEFENSE_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError) as err:
        weights_file("DnCNN-S-15.pth")  # not shipped with the package
    message = str(err.value)
    assert SOURCES["DnCNN-S-15.pth"].url in message and str(tmp_path / "cache") in message
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "DnCNN-S-15.pth").write_bytes(b"not the file")
    with pytest.raises(ValueError, match="refusing .*SHA-256"):
        weights_file("DnCNN-S-15.pth")
    (tmp_path / "mine" / "weights").mkdir(parents=True)
    (tmp_path / "mine" / "weights" / "DnCNN-S-25.pth").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="refusing .*SHA-256"):  # a given folder comes first
        weights_file("DnCNN-S-25.pth", tmp_path / "mine")


@pytest.mark.parametrize("name", ["dncnn-s-25", "kair-dncnn-25"])
def test_the_two_mit_dncnn_25s_ship_with_the_package(name, tmp_path, monkeypatch):
    """No data folder, no cache: the package's own files load, checked against their pins."""
    from ts_defense.models.zoo import BUNDLED_WEIGHTS, WEIGHTS_OF, load_model

    monkeypatch.setenv("TS_DEFENSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TS_DEFENSE_DATA", str(tmp_path / "data"))
    path = weights_file(WEIGHTS_OF[name])
    assert path.parent == BUNDLED_WEIGHTS and path.stat().st_size > 2_000_000
    notice = (BUNDLED_WEIGHTS / "NOTICE.md").read_text()
    assert SOURCES[path.name].sha256 in notice and notice.count("MIT License") == 2
    den = load_model(name)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        out = den(
            x + 25 / 255 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)),
            25 / 255,
        )
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_every_option_of_every_subcommand_shows_its_default():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert {"evaluate", "compare", "attack", "transfer", "demo", "sampler-report"} <= set(
        sub.choices
    )
    for name, p in sub.choices.items():
        text = " ".join(p.format_help().split())
        options = [a for a in p._actions if a.option_strings and a.dest != "help"]
        assert text.count("(default: ") == len(options), name
    attack_help = " ".join(sub.choices["attack"].format_help().split())
    assert "choices: pgd, pgd-l2, obsatk" in attack_help and "choices: clean, output" in attack_help


@pytest.mark.slow  # fit's first Adam imports torch._dynamo: seconds, once per session
def test_checkpoints_of_fit_basicsr_and_kair_are_evaluated_directly(tmp_path, folder, capsys):
    from spandrel.architectures.DnCNN import DnCNN as KairDnCNN

    from ts_defense import fit
    from ts_defense.app.audit import resolve_model
    from ts_defense.data import bundled_images

    torch.manual_seed(0)
    run = tmp_path / "runs" / "dncnn.pt"  # the README's fit example, shrunk
    images = bundled_images(("camera",), size=32)
    fit(DnCNN(depth=3, features=4), images, steps=2, batch_size=2, patch_size=16, lr=1e-4,
        predicts="noise", checkpoint=run, progress=False)  # fmt: skip
    out = tmp_path / "out"
    argv = ["evaluate", str(run), "--images", str(folder), "--out", str(out), "--no-transfer"]
    assert main(argv + FAST) == 0, capsys.readouterr().err
    data = json.loads((out / "audit.json").read_text())
    assert "model of a ts-defense checkpoint" in data["models"]["dncnn"]["source"]
    assert math.isfinite(data["models"]["dncnn"]["mean"]["psnr_clean"])
    # fit(ema=...): the weights the run ended with are the average, and those are audited
    averaged = DnCNN(depth=3, features=4)
    fit(averaged, images, steps=3, batch_size=2, patch_size=16, lr=1e-2, ema=0.5,
        predicts="noise", checkpoint=tmp_path / "ema.pt", progress=False)  # fmt: skip
    model = resolve_model(str(tmp_path / "ema.pt"))
    assert "weight average (ema)" in model.source
    for got, want in zip(model.denoiser.parameters(), averaged.parameters(), strict=True):
        assert torch.equal(got, want)
    raw = torch.load(tmp_path / "ema.pt", weights_only=True)["model"]["layers.0.weight"]
    assert not torch.equal(raw, averaged.layers[0].weight)  # the raw weights moved on
    # BasicSR's net_g_*.pth: the EMA weights when there are some
    plain, ema = (KairDnCNN(in_nc=1, out_nc=1, nc=4, nb=8) for _ in range(2))
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, tmp_path / "g.pth")
    torch.save({"params": plain.state_dict()}, tmp_path / "p.pth")
    for name, net, key in (("g.pth", ema, "params_ema"), ("p.pth", plain, "params")):
        model = resolve_model(str(tmp_path / name))
        assert f"BasicSR {key}" in model.source
        first = next(model.denoiser.parameters())
        assert torch.equal(first, net.state_dict()["model.0.weight"])
    # KAIR's *_G.pth is a state dict; with a wrapper's prefix too
    prefixed = {f"module.{k}": v for k, v in ema.state_dict().items()}
    torch.save(prefixed, tmp_path / "1000_G.pth")
    first = next(resolve_model(str(tmp_path / "1000_G.pth")).denoiser.parameters())
    assert torch.equal(first, ema.state_dict()["model.0.weight"])


def test_files_without_network_weights_are_refused_in_one_line(tmp_path, folder, capsys):
    from ts_defense import TSSampler, fit
    from ts_defense.data import bundled_images

    files = {
        "sampler": TSSampler(sigma=25 / 255).state_dict(),  # the adapters' *_tssampler.pth
        "state": {"epoch": 3, "iter": 1000, "optimizers": [], "schedulers": []},  # BasicSR
        "optimizer": torch.optim.Adam(DnCNN(1, 3, 4).parameters()).state_dict(),  # KAIR
        "empty": {},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / f"{name}.pth")
    run = tmp_path / "run.pt"
    fit(DnCNN(depth=3, features=4), bundled_images(("camera",), size=32), steps=1, batch_size=2,
        patch_size=16, predicts="noise", checkpoint=run, progress=False)  # fmt: skip
    state = torch.load(run, weights_only=True)
    state["model"]["layers.0.weight"] += 1  # altered weights: the digest no longer matches
    torch.save(state, tmp_path / "altered.pt")
    base = ["--images", str(folder), "--out", str(tmp_path / "o"), "--no-transfer", *FAST]
    for name in files:
        assert main(["evaluate", str(tmp_path / f"{name}.pth"), *base]) == 2, name
        assert "holds no network weights" in one_error_line(capsys), name
    assert main(["evaluate", str(tmp_path / "altered.pt"), *base]) == 2
    assert "do not match their digest" in one_error_line(capsys)


def test_missing_spandrel_or_bm3d_is_one_line_naming_the_extra(
    tmp_path, folder, monkeypatch, capsys
):
    from spandrel.architectures.DRUNet import DRUNet

    from ts_defense.app.audit import resolve_model
    from ts_defense.models.zoo import load_model

    torch.save(DRUNet(in_nc=2, out_nc=1, nc=[4, 8, 8, 8], nb=1).state_dict(), tmp_path / "d.pth")
    torch.save(DnCNN(1, 3, 4).state_dict(), tmp_path / "dncnn.pth")
    monkeypatch.setitem(sys.modules, "spandrel", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "bm3d", None)
    base = ["--images", str(folder), "--out", str(tmp_path / "o"), "--no-transfer", *FAST]
    assert main(["evaluate", str(tmp_path / "d.pth"), *base]) == 2
    line = one_error_line(capsys)
    assert "needs spandrel, which is not installed" in line
    assert 'pip install "ts-defense[archs]"' in line
    assert resolve_model(str(tmp_path / "dncnn.pth")).source.startswith("DnCNN")  # no need
    assert main(["evaluate", "bm3d", *base]) == 2
    line = one_error_line(capsys)
    assert "BM3D model needs bm3d" in line and 'pip install "ts-defense[bm3d]"' in line
    with pytest.raises(ImportError, match=r"ts-defense\[bm3d\]"):
        load_model("bm3d")
