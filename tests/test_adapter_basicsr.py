"""BasicSR adapter: BasicSR's real training pipeline on CPU with the TS model and dataset."""

import copy
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import ts_defense.adapters.basicsr as tsb  # noqa: E402
import yaml
from basicsr_support import make_image_dirs, tiny_options
from ts_defense.adapters.basicsr import TSGaussianDenoisingDataset, TSModel  # noqa: E402


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory):
    return make_image_dirs(tmp_path_factory.mktemp("bsr_data"))


_options = tiny_options


def test_example_yaml_runs_basicsr_train_pipeline_on_cpu(image_dirs, tmp_path):
    opt_file = tmp_path / "opt.yml"
    opt_file.write_text(yaml.safe_dump(_options(image_dirs, "ts_cpu")))
    cmd = [sys.executable, "-m", "ts_defense.adapters.basicsr", "-opt", str(opt_file)]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    exp = tmp_path / "experiments" / "ts_cpu"
    log = next(exp.glob("train_ts_cpu_*.log")).read_text()
    assert "Model [TSModel] is created." in log
    assert "Dataset [TSGaussianDenoisingDataset] - train is built." in log
    losses = [float(v) for v in re.findall(r"l_pix: ([0-9.e+-]+)", log)]
    ood = [float(v) for v in re.findall(r"ts_ood: ([0-9.e+-]+)", log)]
    assert len(losses) == len(ood) == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), losses
    assert 0.25 < np.mean(ood) < 0.75  # p_ood = 0.5 over 160 draws
    assert len(re.findall(r"# psnr: [0-9.]+", log)) >= 2  # validation at 20, 40 and the end
    for f in ("models/net_g_20.pth", "models/net_g_latest.pth", "training_states/20.state"):
        assert (exp / f).is_file(), f
    state = torch.load(tsb.sampler_state_path(str(exp / "training_states"), 20), weights_only=True)
    assert state["config"]["p_ood"] == 0.5 and state["generators"]


def _model_options(image_dirs: Path, tmp_path: Path) -> dict:
    opt = _options(image_dirs, "resume")
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    states = tmp_path / "training_states"
    states.mkdir()
    opt["path"].update(training_states=str(states), models=str(tmp_path))
    return opt


def test_sampler_state_is_saved_and_resumed_with_the_training_state(image_dirs, tmp_path):
    opt = _model_options(image_dirs, tmp_path)
    gt = torch.rand(2, 3, 16, 16)
    first = TSModel(copy.deepcopy(opt))  # BasicSR pops keys off its options
    first.gt = gt
    first.optimize_parameters(1)
    first.save_training_state(0, 1)
    expected = []
    for it in (2, 3):
        first.optimize_parameters(it)
        expected.append(first.lq.clone())
    state_file = Path(opt["path"]["training_states"]) / "1.state"
    resume_state = torch.load(state_file, weights_only=False)
    opt["path"]["resume_state"] = str(state_file)
    second = TSModel(copy.deepcopy(opt))
    second.resume_training(resume_state)
    second.gt = gt
    for it, want in zip((2, 3), expected, strict=True):
        second.optimize_parameters(it)
        torch.testing.assert_close(second.lq, want)
    assert second.ts_drawn == 4 and first.ts_drawn == 6


@pytest.mark.parametrize("recipe", ["ts-hat", "free-hat"])
def test_adversarial_recipe_attacks_half_of_each_batch_and_resumes(image_dirs, tmp_path, recipe):
    opt = _model_options(image_dirs, tmp_path)
    p_ood = 0.5 if recipe.startswith("ts") else 0.0  # a recipe without TS refuses p_ood > 0
    opt["ts"].update(recipe=recipe, adversarial={"eps": 4}, p_ood=p_ood)
    gt = torch.rand(4, 3, 16, 16)
    first = TSModel(copy.deepcopy(opt))
    first.gt = gt
    first.optimize_parameters(1)
    first.optimize_parameters(2)
    assert first.ts_adversarial.config.eps == 4 / 255
    first.save_training_state(0, 2)
    weights = copy.deepcopy(first.get_bare_model(first.net_g).state_dict())  # BasicSR's .pth
    expected = []
    for it in (3, 4):
        first.gt = gt
        first.optimize_parameters(it)
        expected.append(first.lq.detach().clone())
    state_file = Path(opt["path"]["training_states"]) / "2.state"
    opt["path"]["resume_state"] = str(state_file)
    second = TSModel(copy.deepcopy(opt))
    second.get_bare_model(second.net_g).load_state_dict(weights)
    second.resume_training(torch.load(state_file, weights_only=False))
    for it, want in zip((3, 4), expected, strict=True):
        second.gt = gt
        second.optimize_parameters(it)
        torch.testing.assert_close(second.lq.detach(), want)


def test_adversarial_options_belong_to_the_model(image_dirs):
    with pytest.raises(ValueError, match="belongs to the model"):
        TSGaussianDenoisingDataset(_dataset_opt(image_dirs, ts={"recipe": "hat"}))


def test_compile_in_the_model_block_compiles_the_draw(image_dirs, tmp_path):
    opt = _model_options(image_dirs, tmp_path)
    eager = TSModel(copy.deepcopy(opt))  # BasicSR pops keys off its options
    opt["ts"] = {**opt["ts"], "compile": True}
    model = TSModel(opt)
    assert model.ts_sampler.compile and not eager.ts_sampler.compile
    gt = torch.rand(2, 3, 16, 16)
    for m in (model, eager):
        m.gt = gt
        m.optimize_parameters(1)
    torch.testing.assert_close(model.lq, eager.lq, rtol=1e-5, atol=1e-6)  # same seed and stream


def test_list_outputs_are_reduced_to_the_last(image_dirs, tmp_path):
    model = TSModel(_model_options(image_dirs, tmp_path))
    net = model.get_bare_model(model.net_g)
    x = torch.rand(1, 3, 8, 8)
    plain = net(x)
    net.forward = lambda y: [torch.zeros_like(y), plain]  # a coarse-to-fine network
    assert torch.equal(model.net_g(x), plain)


def _dataset_opt(image_dirs: Path, **overrides) -> dict:
    opt = dict(_options(image_dirs, "ds")["datasets"]["train"], phase="train", scale=1)
    opt.update(overrides)
    return opt


def test_dataset_applies_ts_noise_at_the_nominal_sigma(image_dirs):
    ds = TSGaussianDenoisingDataset(
        _dataset_opt(image_dirs, sigma_type="choice", sigma_range=[15, 50], ts={"p_ood": 1.0})
    )
    items = [ds[i % len(ds)] for i in range(16)]
    assert all(it["lq"].shape == it["gt"].shape == (3, 32, 32) for it in items)
    assert all(it["ts_ood"] for it in items)
    assert {round(it["sigma"] * 255) for it in items} == {15, 50}
    gauss = TSGaussianDenoisingDataset(_dataset_opt(image_dirs, ts={"p_ood": 0.0}))
    noise = torch.stack([it["lq"] - it["gt"] for it in map(gauss.__getitem__, range(4))])
    assert abs(float(noise.std()) * 255 - 25) < 1.5  # plain Gaussian at sigma_range = 25


def test_dataset_validation_noise_is_fixed_per_image(image_dirs):
    opt = {"phase": "val", "dataroot_gt": str(image_dirs / "val"), "in_ch": 1, "sigma_test": 25}
    ds = TSGaussianDenoisingDataset(opt)
    a, b = ds[1], ds[1]
    assert a["lq"].shape == (1, 32, 32)
    torch.testing.assert_close(a["lq"], b["lq"])
    assert not torch.equal(ds[0]["lq"] - ds[0]["gt"], a["lq"] - a["gt"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ts": {"families": {"radial": 1, "cauchy": 1}}}, r"datasets\.train\.ts: unknown noise"),
        (
            {"ts": {"families": {"radial": {"band": [0.3, 0.1]}}}},
            r"datasets\.train\.ts: families\.radial\.band=\(0\.3, 0\.1\)",
        ),
        ({"ts": {"band": [0.3, 0.1]}}, r"datasets\.train\.ts: unknown TS option.*'band' under"),
        ({"ts": {"p_oood": 0.5}}, r"datasets\.train\.ts: unknown TS option\(s\) 'p_oood'"),
        ({"sigma_range": 0.1}, r"datasets\.train\.sigma_range=0\.1 looks like \[0, 1\] units"),
        ({"sigma_range": [0, 0.2], "sigma_type": "random"}, r"sigma_range\[1\]=0\.2 looks like"),
        ({"sigma_range": 300}, r"sigma_range=300 is outside 0\.\.255"),
        ({"sigma_type": "uniform"}, r"unknown datasets\.train\.sigma_type 'uniform'"),
        ({"ts": {"sigma": 25}}, r"datasets\.train\.ts\.sigma is set by the dataset options"),
        ({"ts": {"compile": True}}, r"datasets\.train\.ts\.compile belongs to the model"),
    ],
)
def test_dataset_options_are_validated_naming_the_key(image_dirs, overrides, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TSGaussianDenoisingDataset(_dataset_opt(image_dirs, **overrides))


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        (None, r"ts\.sigma is required"),
        ({"sigma": 25 / 255}, r"ts\.sigma=0\.098\d* looks like \[0, 1\] units"),
        ({"sigma": 25, "families": {"gauss": 1}}, r"ts: unknown noise family 'gauss'"),
        (
            {"sigma": 25, "families": {"local": {"band": [0.4, 0.2]}}},
            r"ts: families\.local\.band=\(0\.4, 0\.2\) must satisfy",
        ),
        ({"sigma": 25, "recipe": "pgd"}, r"ts: unknown recipe 'pgd'"),
        (
            {"sigma": 25, "recipe": "hat", "adversarial": {"eps": 0.03}},
            r"ts\.adversarial\.eps=0\.03 looks like \[0, 1\] units: BasicSR and KAIR options give "
            r"eps in grey levels 0\.\.255 \(write 8, not 8/255 = 0\.031\)",
        ),
        ({"sigma": 25, "recipe": "ts", "adversarial": {"eps": 8}}, r"no adversarial part"),
        (
            {"sigma": 25, "recipe": "free-hat", "strength": 0.03},
            r"ts\.strength=0\.03 looks like \[0, 1\] units",
        ),
        ({"sigma": 25, "recipe": "gaussian", "strength": 8}, r"ts: .*no adversarial part"),
        ({"sigma": 25, "compile": "yes"}, r"ts\.compile must be true or false, got 'yes'"),
    ],
)
def test_model_options_are_validated_naming_the_key(image_dirs, tmp_path, ts, message):
    opt = _model_options(image_dirs, tmp_path)
    opt["ts"] = ts
    with pytest.raises((ValueError, TypeError), match=message):
        TSModel(opt)


def test_torchvision_shim_only_when_the_old_module_is_missing(monkeypatch):
    import importlib

    from ts_defense.adapters.basicsr import _compat

    old = sys.modules.pop(_compat.OLD)
    try:
        assert _compat.patch_torchvision() is True
        assert sys.modules[_compat.OLD] is importlib.import_module(_compat.NEW)
        assert _compat.patch_torchvision() is False  # already there: unchanged
        fixed = object()
        monkeypatch.setitem(sys.modules, _compat.OLD, fixed)
        assert _compat.patch_torchvision() is False and sys.modules[_compat.OLD] is fixed
    finally:
        sys.modules[_compat.OLD] = old


def test_launcher_resumes_on_cpu_with_overrides(image_dirs, tmp_path):
    """BasicSR 1.4.2's own resume maps the state to CUDA; the launcher's loads it on the CPU."""
    opt = _options(image_dirs, "resume_cpu")
    opt["train"]["total_iter"] = 20
    opt_file = tmp_path / "opt.yml"
    opt_file.write_text(yaml.safe_dump(opt))
    cmd = [sys.executable, "-m", "ts_defense.adapters.basicsr", "-opt", str(opt_file)]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    more = ["--auto_resume", "--force_yml", "train:total_iter=24", "val:val_freq=!!float 1e3"]
    run = subprocess.run(cmd + more, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    exp = tmp_path / "experiments" / "resume_cpu"
    log = sorted(exp.glob("train_resume_cpu_*.log"))[-1].read_text()
    assert "Resuming training from epoch: " in log and "iter: 20." in log
    assert "no TS sampler state" not in log
    assert len(re.findall(r"l_pix: ", log)) == 4  # iterations 21..24
    assert "total_iter: 24" in (exp / "opt.yml").read_text()  # the copy holds the override


def _ignored_ts_cases():
    sr = {"model_type": "SRModel"}
    ds_ts = {"type": "TSGaussianDenoisingDataset", "ts": {"p_ood": 0.5}}
    return [
        (sr, r"^ts: model_type 'SRModel' ignores the ts block; use model_type TSModel"),
        ({"model_type": "NoSuchModel"}, r"^ts: model_type 'NoSuchModel' is not a registered"),
        (
            {**sr, "ts": None, "datasets": {"train": {"type": "PairedImageDataset", "ts": {}}}},
            r"^datasets\.train\.ts: dataset type 'PairedImageDataset' ignores the ts block",
        ),
        (
            {**sr, "ts": None, "datasets": {"val": {**ds_ts}}},
            r"^datasets\.val\.ts: the val phase ignores the ts block",
        ),
        (
            {"datasets": {"train": {**ds_ts}}},  # TSModel (the example) and a dataset ts block
            r"^datasets\.train\.ts: model_type 'TSModel' ignores the dataset's ts block",
        ),
        (  # contents
            {"ts": {"sigma": 25, "families": {"radial": {"band": [0.4, 0.2]}}}},
            r"^ts: families\.radial\.band=\(0\.4, 0\.2\)",
        ),
        ({"ts": None}, r"^ts\.sigma is required"),  # TSModel without its block
        (
            {"network_g": {"type": "RIDNet", "ts": {"sigma": 25}}, "ts": None},
            r"^network_g\.ts: a ts block is read only at the top level or under datasets\.<phase>, "
            r"not under network_g; move it to the top level \(read by model_type TSModel\)",
        ),
        ({"train": {"ts": {"sigma": 25}}, "ts": None}, r"^train\.ts: a ts block is read only"),
        (
            {**sr, "ts": None, "datasets": {"train": {"sigma_range": 0.1}}},
            r"^datasets\.train\.sigma_range=0\.1 looks like \[0, 1\] units",
        ),
        (
            {**sr, "ts": None, "datasets": {"train": {**ds_ts, "ts": {"p_oood": 1}}}},
            r"^datasets\.train\.ts: unknown TS option\(s\) 'p_oood'",
        ),
    ]


@pytest.mark.parametrize(("overrides", "message"), _ignored_ts_cases())
def test_ts_blocks_the_types_would_ignore_are_refused(image_dirs, overrides, message):
    opt = _options(image_dirs, "check")
    for key, value in overrides.items():
        if key == "datasets":
            for phase, ds in value.items():
                opt["datasets"][phase] = {**opt["datasets"][phase], **ds}
        else:
            opt[key] = value
    with pytest.raises((ValueError, TypeError), match=message):
        tsb.check_ts_options(opt)


def test_ts_blocks_that_are_read_pass_the_check(image_dirs):
    opt = _options(image_dirs, "check")
    tsb.check_ts_options(opt)  # the example: TSModel, top-level ts, TS dataset without one
    opt.update(model_type="SRModel", ts=None)
    opt["datasets"]["train"]["ts"] = {"p_ood": 0.5}
    tsb.check_ts_options(opt)  # TS in the data loader under BasicSR's own model
    del opt["datasets"]["train"]["ts"]
    tsb.check_ts_options(opt)  # no ts anywhere: nothing to say


def test_user_train_py_refuses_an_ignored_ts_block_before_any_folder(
    image_dirs, tmp_path, monkeypatch, capsys
):
    """A user's own ``train.py``: ``train_pipeline`` exits with one line naming the option and
    the model type, before BasicSR creates ``experiments/`` or logs its banner."""
    from basicsr.train import train_pipeline

    opt = dict(_options(image_dirs, "refused"), model_type="SRModel")
    opt_file = tmp_path / "opt.yml"
    opt_file.write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(opt_file)])
    with pytest.raises(SystemExit) as exit_info:
        train_pipeline(str(tmp_path))
    message = str(exit_info.value.code)
    assert message.startswith("train.py: error: ts: model_type 'SRModel' ignores the ts block")
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.yml"]  # no experiments/, tb_logger/
    out = capsys.readouterr()
    assert "Version Information" not in out.out + out.err


def test_test_pipeline_refuses_before_the_results_folder(image_dirs, tmp_path, monkeypatch):
    from basicsr.test import test_pipeline

    opt = _options(image_dirs, "refused")
    opt["datasets"]["val"]["ts"] = {"p_ood": 0.5}
    opt_file = tmp_path / "opt.yml"
    opt_file.write_text(yaml.safe_dump(opt))
    monkeypatch.setattr(sys, "argv", ["test.py", "-opt", str(opt_file)])
    with pytest.raises(SystemExit, match=r"datasets\.val\.ts: the val phase ignores"):
        test_pipeline(str(tmp_path))
    assert not (tmp_path / "results").exists()


def test_launcher_refuses_with_the_same_check(image_dirs, tmp_path):
    opt_file = tmp_path / "opt.yml"
    opt_file.write_text(yaml.safe_dump(dict(_options(image_dirs, "no"), model_type="SRModel")))
    cmd = [sys.executable, "-m", "ts_defense.adapters.basicsr", "-opt", str(opt_file)]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "python -m ts_defense.adapters.basicsr: error: ts: model_type 'SRModel' ignores the ts "
        "block; use model_type TSModel (or a registered ts_model(...) class), or TS noise in the "
        "data loader (datasets.train.type TSGaussianDenoisingDataset with its own ts block)"
    )
    assert not (tmp_path / "experiments").exists() and "Version Information" not in run.stdout


def _refused_by_launcher(tmp_path, capsys, text: str) -> str:
    """The launcher's one-line refusal of an option file (exit 2, before BasicSR starts)."""
    from ts_defense.adapters.basicsr.__main__ import main

    (tmp_path / "o.yml").write_text(text)
    with pytest.raises(SystemExit) as stop:
        main(["-opt", str(tmp_path / "o.yml")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("python -m ts_defense.adapters.basicsr: error: "), err
    assert not (tmp_path / "experiments").exists()
    return err


def _example_text(image_dirs, edit) -> str:
    opt = _options(image_dirs, "bad")
    edit(opt)
    return yaml.safe_dump(opt)


def _misplace(opt, under):
    opt[under]["ts"] = opt.pop("ts")


@pytest.mark.parametrize(
    ("edit", "text", "message"),
    [
        (lambda o: _misplace(o, "network_g"), None, r"error: network_g\.ts: a ts block is read "),
        (lambda o: _misplace(o, "train"), None, r"error: train\.ts: a ts block is read only"),
        (
            lambda o: o["ts"].update(recipe="hat", adversarial={"eps": 0.03}, p_ood=0.0),
            None,
            r"ts\.adversarial\.eps=0\.03 looks like \[0, 1\] units: .* give eps in grey levels",
        ),
        (
            lambda o: o["ts"].update(p_ood=math.nan),
            None,
            r"ts: p_ood must lie in \[0, 1\], got nan",
        ),
        (lambda o: o["ts"].update(bogus=1), None, r"ts: unknown TS option\(s\) 'bogus'"),
        (
            lambda o: None,
            lambda t: t.replace("  sigma: 25\n", "  sigma: 0.1\n  sigma: 25\n", 1),
            r"-opt \S+o\.yml: ts\.sigma is given twice \(0\.1, then 25\); keep one",
        ),
        (
            lambda o: None,
            lambda t: t.replace("name: bad", "name: " + "[" * 100_000 + "]" * 100_000),
            r"-opt \S+o\.yml: options nested deeper than 32 levels \(line \d+, column \d+\)$",
        ),
    ],
    ids=["network_g", "train", "eps", "nan", "unknown", "repeated", "deep"],
)
def test_launcher_refuses_bad_option_files_in_one_line(
    image_dirs, tmp_path, capsys, edit, text, message
):
    body = _example_text(image_dirs, edit)
    err = _refused_by_launcher(tmp_path, capsys, body if text is None else text(body))
    assert re.search(message, err.strip()), err


@pytest.mark.slow
def test_launcher_without_basicsr_says_how_to_install_it(tmp_path):
    """Issue 28.3: one line naming what is missing, not a 12-line traceback."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'basicsr':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    cmd = [sys.executable, "-m", "ts_defense.adapters.basicsr", "-opt", "o.yml"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr == (
        "python -m ts_defense.adapters.basicsr: error: ts_defense.adapters.basicsr needs BasicSR, "
        'which is not installed: pip install "ts-defense[basicsr]"\n'
    ), run.stderr[-2000:]


def test_import_without_basicsr_raises_one_line(monkeypatch):
    from ts_defense.adapters._launch import missing

    err = ModuleNotFoundError("No module named 'cv2'", name="cv2")
    line = r"^ts_defense\.adapters\.basicsr needs BasicSR, which cannot be imported \(No module "
    with pytest.raises(ModuleNotFoundError, match=line + r"named 'cv2'\): pip install") as info:
        missing(err, "ts_defense.adapters.basicsr", "BasicSR", 'pip install "ts-defense[basicsr]"')
    assert info.value.name == "cv2"
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "ts_defense.adapters.basicsr"])
    with pytest.raises(SystemExit) as stop:  # the launcher: exit 2, the same line on stderr
        missing(err, "ts_defense.adapters.basicsr", "BasicSR", 'pip install "ts-defense[basicsr]"')
    assert stop.value.code == 2


def test_user_train_py_refuses_a_repeated_key(image_dirs, tmp_path, monkeypatch):
    """BasicSR's own parse_options reads with the same loader: a repeated key is refused there
    too (by its path), not silently taken as the last."""
    from basicsr.train import train_pipeline

    text = yaml.safe_dump(_options(image_dirs, "repeated"))
    (tmp_path / "opt.yml").write_text(
        text.replace("  p_ood: 0.5\n", "  p_ood: 0.0\n  p_ood: 0.5\n")
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(tmp_path / "opt.yml")])
    with pytest.raises(SystemExit, match=r"^train\.py: error: options: ts\.p_ood is given twice"):
        train_pipeline(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.yml"]


def test_strength_in_the_ts_block_sets_the_recipes_knob():
    from ts_defense.adapters._options import training_from_options

    _, hat = training_from_options({"sigma": 25, "recipe": "free-hat", "strength": 4})
    assert hat.config.eps == (0.0, 4 / 255)  # a budget: grey levels, as adversarial.eps
    _, trades = training_from_options({"sigma": 25, "recipe": "ts-trades", "strength": 2.5})
    assert trades.config.consistency == 2.5  # a weight: as it is
