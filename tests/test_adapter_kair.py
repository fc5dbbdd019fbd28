"""KAIR adapter: the launcher against a stand-in written from KAIR's contract, and against a real
KAIR checkout when ``$TS_DEFENSE_KAIR_ROOT`` names one (KAIR is not installable: that one test
needs the variable).

Every run is a subprocess: installing KAIR puts top-level ``models``/``data``/``utils`` modules
on ``sys.path``, which must not leak into the other tests.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

STANDIN = Path(__file__).parent / "kair_standin"
EXAMPLE = Path(__file__).parents[1] / "examples" / "kair_train_dncnn_ts.json"
KAIR_ENV = "TS_DEFENSE_KAIR_ROOT"


def read_options(path: Path) -> dict:
    """KAIR's option format: JSON with ``//`` comments."""
    return json.loads("".join(line.split("//")[0] + "\n" for line in path.read_text().splitlines()))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from skimage.io import imsave

    from ts_defense.data import bundled_images

    root = tmp_path_factory.mktemp("kair")
    for sub, size, names in (("trainH", 64, ("camera", "moon", "coins", "page")),
                             ("testH", 32, ("camera", "text"))):  # fmt: skip
        (root / sub).mkdir()
        for name, img in zip(names, bundled_images(names, size=size), strict=True):
            imsave(root / sub / f"{name}.png", (img[0].numpy() * 255).round().astype(np.uint8))
    return root


def tiny_options(workdir: Path, task: str, **top) -> Path:
    """The example option file made tiny: 4-image batches of 32-pixel patches, test every 5."""
    opt = read_options(EXAMPLE)
    opt.update(task=task, merge_bn=False, **top)
    opt["path"]["root"] = str(workdir / "out")
    opt["datasets"]["train"].update(dataroot_H=str(workdir / "trainH"), H_size=32)
    opt["datasets"]["train"].update(dataloader_num_workers=0, dataloader_batch_size=4)
    opt["datasets"]["test"]["dataroot_H"] = str(workdir / "testH")
    opt["netG"].update(nc=16, nb=4)
    opt["train"].update(checkpoint_test=5, checkpoint_save=5, checkpoint_print=1)
    opt["train"]["G_optimizer_lr"] = 1e-3
    path = workdir / f"{task}.json"
    path.write_text("// written by the test\n" + json.dumps(opt, indent=1))
    return path


def launch(kair: Path, options: Path, steps: int, cwd: Path) -> str:
    cmd = [sys.executable, "-m", "ts_defense.adapters.kair", "--kair-root", str(kair)]
    cmd += ["--opt", str(options), "--max-steps", str(steps)]
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout + run.stderr  # KAIR's logger writes to stderr


def logged(out: str, key: str) -> list[float]:
    return [float(v) for v in re.findall(rf"{key}: ([0-9.e+-]+)", out)]


def check_training(out: str, models: Path, steps: int) -> None:
    losses, ood = logged(out, "G_loss"), logged(out, "ts_ood")
    assert len(losses) == len(ood) == steps, out[-2000:]
    third = steps // 3  # blind sigma makes single batch losses noisy: compare thirds
    assert np.mean(losses[-third:]) < np.mean(losses[:third]), losses
    assert 0 < np.mean(ood) < 1  # p_ood = 0.5: both kinds of draws happened
    assert f"TS training finished: stopped after {steps} steps" in out
    assert (models / f"{steps}_G.pth").is_file()
    state = torch.load(models / f"{steps}_tssampler.pth", weights_only=True)
    assert state["config"]["p_ood"] == 0.5


def test_launcher_trains_dncnn_with_ts_model_on_the_standin(workdir):
    out = launch(STANDIN, tiny_options(workdir, "dncnn", gpu_ids=[0]), 10, workdir)
    check_training(out, workdir / "out" / "dncnn" / "models", 10)
    assert len(re.findall(r"test psnr", out)) == 4  # two test images at steps 5 and 10
    resumed = launch(STANDIN, tiny_options(workdir, "dncnn", gpu_ids=[0]), 12, workdir)
    assert "Loading TS sampler state" in resumed and len(logged(resumed, "G_loss")) == 2


@pytest.mark.parametrize("recipe", ["hat", "ts-free-hat"])
def test_launcher_trains_adversarial_recipes(workdir, recipe):
    options = tiny_options(workdir, f"dncnn-{recipe}", gpu_ids=[0])
    opt = read_options(options)
    p_ood = 0.5 if recipe.startswith("ts") else 0.0  # a recipe without TS refuses p_ood > 0
    opt["ts"].update(recipe=recipe, adversarial={"eps": [0, 8]}, p_ood=p_ood)
    options.write_text(json.dumps(opt))
    out = launch(STANDIN, options, 6, workdir)
    models = workdir / "out" / f"dncnn-{recipe}" / "models"
    state = torch.load(models / "5_tsadversarial.pth", weights_only=True)
    assert state["config"]["eps"] == [0.0, 8 / 255] or state["config"]["eps"] == (0.0, 8 / 255)
    assert state["config"]["amortised"] == (recipe == "ts-free-hat")
    assert "TS training finished: stopped after 6 steps" in out


def test_launcher_trains_ffdnet_with_nominal_sigma_in_c(workdir):
    options = tiny_options(workdir, "ffdnet", model="ts_plain2")
    opt = read_options(options)
    opt["ts"]["sigma"] = [5, 50]
    opt["netG"].update(in_nc=2)  # the stand-in's net takes the sigma as a channel
    for d in opt["datasets"].values():
        d.update(dataset_type="ffdnet", sigma=[0, 75])
    options.write_text(json.dumps(opt))
    out = launch(STANDIN, options, 40, workdir)  # blind sigma: a noisy loss, more steps
    check_training(out, workdir / "out" / "ffdnet" / "models", 40)


DATASET_CHECK = """
import sys, torch
from ts_defense.adapters.kair import install
from ts_defense.adapters.kair.dataset import dataset_classes
install(sys.argv[1])
from utils.utils_option import dict_to_nonedict as nd  # KAIR hands datasets NoneDicts
root = sys.argv[2]
base = dict(name="t", phase="train", n_channels=1, H_size=16, dataroot_H=root + "/trainH",
            ts={"p_ood": 1.0, "families": {"radial": 1}})
for kind, sigma in (("ts_dncnn", 25), ("ts_ffdnet", [5, 50]), ("ts_fdncnn", [5, 50])):
    ds = dataset_classes()[kind](nd(dict(base, sigma=sigma)))
    item = ds[0]
    h, low = item["H"], item["L"]
    nominal = item["C"].item() if "C" in item else (low[1, 0, 0].item() if kind == "ts_fdncnn"
                                                   else 25 / 255)
    if kind == "ts_fdncnn":
        assert low.shape[0] == 2 and torch.all(low[1] == low[1, 0, 0]), "map channel kept"
    noise = low[:1] - h
    dev = (noise.pow(2).mean() / nominal**2 - 1) / 2
    assert item["ts_ood"] and 0.05 <= abs(dev.item()) <= 0.35 + 1e-4, (kind, dev)
    test = dataset_classes()[kind](nd(dict(base, phase="test", sigma=sigma, sigma_test=25,
                                           dataroot_H=root + "/testH")))
    assert torch.equal(test[0]["L"], test[0]["L"]), "fixed-seed test noise"
for bad, msg in (({"sigma": 0.1}, "datasets.train.sigma=0.1 looks like [0, 1] units"),
                 ({"ts": {"families": {"radial": {"band": [0.3, 0.1]}}}},
                  "datasets.train.ts: families.radial.band=(0.3, 0.1)")):
    try:
        dataset_classes()["ts_dncnn"](nd(dict(base, **bad)))
    except ValueError as err:
        assert msg in str(err), err
    else:
        raise AssertionError(bad)
print("datasets ok")
"""


def test_datasets_swap_kair_noise_for_ts_noise_on_the_standin(workdir):
    cmd = [sys.executable, "-c", DATASET_CHECK, str(STANDIN), str(workdir)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "datasets ok" in run.stdout, run.stderr[-3000:]


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        ({"sigma": 25, "families": {"gauss": 1}}, r"ts: unknown noise family 'gauss'"),
        (
            {"sigma": 25, "families": {"local": {"band": [0.4, 0.2]}}},
            r"ts: families\.local\.band=\(0\.4, 0\.2\) must satisfy",
        ),
        ({"sigma": 0.1}, r"ts\.sigma=0\.1 looks like \[0, 1\] units"),
        ({"p_ood": 0.5}, r"ts\.sigma is required"),
        ({"sigma": 25, "compile": 1}, r"ts\.compile must be true or false, got 1"),
    ],
)
def test_launcher_rejects_bad_ts_options_naming_the_key(workdir, ts, message, capsys):
    assert re.search(message, refused(tiny_options(workdir, "bad", ts=ts), capsys))


PROG = "python -m ts_defense.adapters.kair"


def refused(options: Path, capsys) -> str:
    """The launcher's one-line refusal of ``options``: exit 2 before KAIR is on ``sys.path``
    (in this process: nothing of KAIR may leak into the other tests) or any folder exists."""
    from ts_defense.adapters.kair.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["--kair-root", str(STANDIN), "--opt", str(options), "--max-steps", "1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith(f"{PROG}: error: ")
    assert str(STANDIN) not in sys.path and not (options.parent / "out" / "bad").exists()
    return err


def _edited(workdir: Path, edit, text=None) -> Path:
    """The tiny option file after ``edit(opt)`` (or with ``text(json_text)`` applied)."""
    path = tiny_options(workdir, "bad")
    opt = read_options(path)
    edit(opt)
    path.write_text(json.dumps(opt) if text is None else text(json.dumps(opt)))
    return path


def _misplace(opt, under):
    opt[under]["ts"] = opt.pop("ts")


def _ts_dataset(opt, **train):
    """KAIR's own model with TS noise in its data loader."""
    opt.pop("ts")
    opt["model"] = "plain"
    opt["datasets"]["train"].update(dataset_type="ts_dncnn", **train)


def _adversarial_ffdnet(opt):
    opt["model"] = "ts_plain2"
    opt["ts"].update(recipe="hat", p_ood=0.0)  # a recipe without TS refuses p_ood > 0


BAD_OPTION_FILES = {  # issue 29.5-6: each of these gave a KAIR traceback, or trained anyway
    "unknown ts key": (
        lambda o: o["ts"].update(bogus=1),
        None,
        r"ts: unknown TS option\(s\) 'bogus'",
    ),
    "sigma in image units": (
        lambda o: o["ts"].update(sigma=0.1),
        None,
        r"ts\.sigma=0\.1 looks like \[0, 1\] units",
    ),
    "NaN p_ood": (
        lambda o: o["ts"].update(p_ood=math.nan),
        None,
        r"ts: p_ood must lie in \[0, 1\], got nan",
    ),
    "infinite sigma": (
        lambda o: o["ts"].update(sigma=math.inf),
        None,
        r"ts\.sigma must be a finite number",
    ),
    "ts under netG": (
        lambda o: _misplace(o, "netG"),
        None,
        r"netG\.ts: a ts block is read only at the top level or under datasets\.<phase>, not "
        r"under netG; move it to the top level \(read by model ts_plain or ts_plain2\)",
    ),
    "ts under train": (lambda o: _misplace(o, "train"), None, r"train\.ts: a ts block is read"),
    "model plain with a top-level ts": (
        lambda o: o.update(model="plain"),
        None,
        r"ts: model 'plain' ignores the ts block",
    ),
    "a repeated key": (
        lambda o: None,
        lambda t: t.replace('"sigma": 25', '"sigma": 0.1, "sigma": 25', 1),
        r"--opt \S+bad\.json: ts\.sigma is given twice \(0\.1, then 25\); keep one",
    ),
    "nested 100,000 deep": (
        lambda o: None,
        lambda t: t.replace('"task": "bad"', '"task": ' + "[" * 100_000 + "]" * 100_000),
        r"--opt \S+bad\.json: options nested deeper than 32 levels",
    ),
    "adversarial eps in image units": (
        lambda o: o["ts"].update(recipe="hat", adversarial={"eps": 0.03}, p_ood=0.0),
        None,
        r"ts\.adversarial\.eps=0\.03 looks like \[0, 1\] units: BasicSR and KAIR options give "
        r"eps in grey levels 0\.\.255 \(write 8, not 8/255 = 0\.031\)",
    ),
    "ts in the test phase": (
        lambda o: o["datasets"]["test"].update(dataset_type="ts_dncnn", ts={"p_ood": 1}),
        None,
        r"datasets\.test\.ts: the test phase ignores the ts block",
    ),
    "ts for a KAIR dataset": (
        lambda o: o["datasets"]["train"].update(ts={"p_ood": 1}),
        None,
        r"datasets\.train\.ts: dataset_type 'dncnn' ignores the ts block",
    ),
    "dataset ts under a TS model": (
        lambda o: o["datasets"]["train"].update(dataset_type="ts_dncnn", ts={"p_ood": 1}),
        None,
        r"datasets\.train\.ts: model 'ts_plain' ignores the dataset's ts block",
    ),
    "dataset sigma in image units": (
        lambda o: _ts_dataset(o, sigma=0.1),
        None,
        r"datasets\.train\.sigma=0\.1 looks like \[0, 1\] units",
    ),
    "adversarial ts_plain2": (
        _adversarial_ffdnet,
        None,
        r"ts\.recipe: adversarial recipes train models called as netG\(L\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OPTION_FILES))
def test_launcher_refuses_bad_option_files_in_one_line(workdir, case, capsys):
    edit, text, message = BAD_OPTION_FILES[case]
    err = refused(_edited(workdir, edit, text), capsys)
    assert re.search(message, err), err


@pytest.mark.slow
def test_launcher_refuses_a_deep_file_without_a_traceback(workdir):
    """The whole command, as a user runs it (``RecursionError`` was the traceback)."""
    path = _edited(workdir, lambda o: None, lambda t: "[" * 100_000 + "]" * 100_000)
    cmd = [sys.executable, "-m", "ts_defense.adapters.kair", "--kair-root", str(STANDIN)]
    run = subprocess.run([*cmd, "--opt", str(path)], capture_output=True, text=True, cwd=workdir)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr == f"{PROG}: error: --opt {path}: options nested deeper than 32 levels\n"


@pytest.mark.slow
def test_launcher_names_what_a_kair_checkout_cannot_import(workdir, tmp_path):
    """A KAIR checkout whose requirements are not installed: one line, KAIR's install line."""
    for name in ("main_train_psnr.py", "models/select_model.py", "data/select_dataset.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "data" / "select_dataset.py").write_text("import no_such_kair_requirement\n")
    options = tiny_options(workdir, "noreq")
    cmd = [sys.executable, "-m", "ts_defense.adapters.kair", "--kair-root", str(tmp_path)]
    run = subprocess.run([*cmd, "--opt", str(options)], capture_output=True, text=True, cwd=workdir)
    assert run.returncode == 2 and run.stderr == (
        f"{PROG}: error: KAIR at {tmp_path} cannot be imported (No module named "
        f"'no_such_kair_requirement'): pip install -r {tmp_path / 'requirement.txt'}\n"
    ), run.stderr[-2000:]


def test_kair_root_must_be_a_checkout(tmp_path):
    from ts_defense.adapters.kair import kair_root

    with pytest.raises(FileNotFoundError, match=r"is not a KAIR checkout: missing \['main_train"):
        kair_root(tmp_path)


@pytest.mark.skipif(not os.environ.get(KAIR_ENV), reason=f"needs a KAIR checkout in ${KAIR_ENV}")
def test_launcher_against_a_real_kair_checkout(workdir):
    kair = Path(os.environ[KAIR_ENV])
    out = launch(kair, tiny_options(workdir, "real", gpu_ids=[0]), 10, workdir)
    check_training(out, workdir / "out" / "real" / "models", 10)
    log = (workdir / "out" / "real" / "train.log").read_text()
    assert len(re.findall(r"Average PSNR : [0-9.]+dB", log)) == 2
    cmd = [sys.executable, "-c", DATASET_CHECK, str(kair), str(workdir)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "datasets ok" in run.stdout, run.stderr[-3000:]


def test_kair_plain_model_with_ts_dataset_trains_stops_and_resumes_on_cpu(workdir):
    """KAIR's own "plain" model (CUDA whenever gpu_ids is set) with the ts_dncnn dataset: it
    runs on the CPU, --max-steps stops it, and a resume reloads KAIR's optimizer state."""
    options = tiny_options(workdir, "plain", model="plain", gpu_ids=[0])
    opt = read_options(options)
    opt.pop("ts")
    opt["train"]["G_optimizer_reuse"] = True
    for d in opt["datasets"].values():
        d.update(dataset_type="ts_dncnn")
    opt["datasets"]["train"]["ts"] = {"p_ood": 0.5}  # the test phase would ignore one
    options.write_text(json.dumps(opt))
    models = workdir / "out" / "plain" / "models"
    out = launch(STANDIN, options, 10, workdir)
    assert len(logged(out, "G_loss")) == 10 and "stopped after 10 steps" in out
    assert (models / "10_G.pth").is_file() and (models / "10_optimizerG.pth").is_file()
    resumed = launch(STANDIN, options, 12, workdir)
    assert "Loading optimizerG" in resumed and len(logged(resumed, "G_loss")) == 2


def test_launcher_flags_are_checked_in_one_line(workdir):
    cmd = [sys.executable, "-m", "ts_defense.adapters.kair", "--kair-root", str(STANDIN)]
    options = ["--opt", str(tiny_options(workdir, "flags"))]
    for extra, message in ((["--max-steps", "9" * 400], "--max-steps must be an int below"),
                           (["--max-step", "3"], "")):  # fmt: skip
        run = subprocess.run(cmd + options + extra, capture_output=True, text=True, cwd=workdir,
                             timeout=120)  # fmt: skip
        assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]
        assert "Traceback" not in run.stderr


def test_launcher_needs_the_option_file(capsys):
    from ts_defense.adapters.kair.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["--kair-root", str(STANDIN)])
    assert stop.value.code == 2 and "arguments are required: --opt" in capsys.readouterr().err
