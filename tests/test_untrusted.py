"""Untrusted files (issue 7): every weights/state file loads with ``weights_only=True``; a pickle
whose payload would run code is refused with a clear error at every loading entry point; BasicSR
option files load with a safe YAML loader; unknown option keys are rejected by name."""

import ast
import importlib
import math
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from ts_defense.adapters._options import sampler_from_options

from ts_defense import TSSampler, load_checkpoint, save_checkpoint
from ts_defense._io import safe_load
from ts_defense.models import DnCNN, load_dncnn

ROOT = Path(__file__).resolve().parents[1]


def basicsr_module(name: str) -> types.ModuleType:
    """``name`` imported after the adapter (which makes BasicSR importable and safe)."""
    importlib.import_module("ts_defense.adapters.basicsr")
    return importlib.import_module(name)


class Payload:
    """Unpickling this creates ``marker``: proof that the file ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def evil_file(path, marker, wrap=lambda p: {"weights": p}):
    with open(path, "wb") as f:
        pickle.dump(wrap(Payload(marker)), f, protocol=2)
    return path


def torch_load_calls():
    """(file, line, keywords) of every ``torch.load(...)`` in the package and adapters."""
    for folder in ("ts_defense", "adapters", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
                    yield path.relative_to(ROOT), node.lineno, kw


def test_every_torch_load_is_weights_only_and_goes_through_safe_load():
    calls = list(torch_load_calls())
    assert calls, "the scan found no torch.load at all"
    for path, line, kw in calls:
        assert kw.get("weights_only") is True, f"{path}:{line} torch.load without weights_only"
    assert {str(p) for p, _, _ in calls} == {"ts_defense/_io.py"}, calls


def test_checkpoint_with_payload_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = evil_file(tmp_path / "ckpt.pt", marker, lambda p: {"format": p, "model": {}})
    with pytest.raises(ValueError, match="refusing to load .*ckpt.pt: not a plain tensor"):
        load_checkpoint(path, DnCNN(depth=3, features=4))
    assert not marker.exists()
    # the same payload inside a real torch zip file
    torch_file = tmp_path / "zip.pt"
    torch.save({"format": "ts-defense-checkpoint-1", "sampler": Payload(marker)}, torch_file)
    with pytest.raises(ValueError, match="refusing to load"):
        load_checkpoint(torch_file, DnCNN(depth=3, features=4))
    assert not marker.exists()


def test_weights_and_torn_files_are_refused(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="refusing to load"):
        load_dncnn(evil_file(tmp_path / "w.pth", marker))
    torn = tmp_path / "torn.pt"
    save_checkpoint(torn, DnCNN(depth=3, features=4))
    torn.write_bytes(torn.read_bytes()[:100])
    with pytest.raises(ValueError, match="refusing to load"):
        load_checkpoint(torn, DnCNN(depth=3, features=4))
    with pytest.raises(FileNotFoundError, match="sampler state not found"):
        safe_load(tmp_path / "none.pth", "sampler state")
    assert not marker.exists()


def test_basicsr_resume_refuses_a_sampler_state_with_payload(tmp_path):
    from ts_defense.adapters.basicsr import TSModelMixin, sampler_state_path

    class Base:
        def resume_training(self, state):
            pass

    model = type("M", (TSModelMixin, Base), {})
    m = model.__new__(model)
    m.ts_sampler, m.ts_adversarial = TSSampler(seed=0), None
    m.opt = {"path": {"resume_state": str(tmp_path / "7.state")}}
    marker = tmp_path / "ran"
    evil_file(sampler_state_path(str(tmp_path), 7), marker, lambda p: {"seed": 0, "generators": p})
    with pytest.raises(ValueError, match="refusing to load .*7.ts_sampler.pth"):
        m.resume_training({"iter": 7})
    assert not marker.exists()
    torch.save(TSSampler(seed=3).state_dict(), sampler_state_path(str(tmp_path), 7))
    m.resume_training({"iter": 7})  # a genuine state still loads
    assert m.ts_sampler.seed == 3


def test_kair_load_refuses_a_sampler_state_with_payload(tmp_path, monkeypatch):
    from ts_defense.adapters.kair.model import TSKairMixin

    marker = tmp_path / "ran"
    path = evil_file(tmp_path / "5_tssampler.pth", marker)
    utils = types.ModuleType("utils")
    option = types.ModuleType("utils.utils_option")
    option.find_last_checkpoint = lambda folder, net_type: (5, str(path))
    monkeypatch.setitem(sys.modules, "utils", utils)
    monkeypatch.setitem(sys.modules, "utils.utils_option", option)

    class Base:
        def load(self):
            pass

    model = type("K", (TSKairMixin, Base), {})
    m = model.__new__(model)
    m.ts_sampler = TSSampler(seed=0)
    m.opt = {"path": {"models": str(tmp_path)}}
    with pytest.raises(ValueError, match="refusing to load .*5_tssampler.pth"):
        m.load()
    assert not marker.exists()


def test_basicsr_option_files_load_with_a_safe_yaml_loader(tmp_path, monkeypatch):
    parse_options = basicsr_module("basicsr.utils.options").parse_options

    marker = tmp_path / "pwned"
    opt = tmp_path / "evil.yml"
    opt.write_text(f"name: x\nmodel_type: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    monkeypatch.setattr(sys, "argv", ["train.py", "-opt", str(opt)])
    with pytest.raises(yaml.constructor.ConstructorError, match="python/object/apply"):
        parse_options(str(tmp_path), is_train=True)
    assert not marker.exists()
    example = (ROOT / "examples" / "basicsr_ts_denoising.yml").read_text()
    loaded = yaml.load(example, Loader=basicsr_module("basicsr.utils.options").ordered_yaml()[0])
    assert loaded == yaml.safe_load(example)  # plain option files are read as before


HOSTILE_OVERRIDES = [
    ['--force_yml=name"];__import__("os").system("touch M");opt["name=x'],  # = form
    ["--force_y", 'name"]=0;__import__("os").system("touch M");#=1'],  # a prefix
    ["--force_yml", "name=[__import__('os').system('touch M')]"],  # a value BasicSR evals
    ["--force_yml", 'a"]=0;import os;os.mkdir("M");#=1'],
    ["--force_yml", "train:ema_decay"],  # no value
    ["--force_yml", "a b=1"],
    ["--force_yml", "nosection:key=1"],
]


def _launch(tmp_path, monkeypatch, argv, text="name: x\ntrain: {ema_decay: 0.9}\n"):
    """Run the BasicSR launcher up to BasicSR's pipeline; returns the option file it got."""
    train = basicsr_module("basicsr.train")
    main = basicsr_module("ts_defense.adapters.basicsr.__main__").main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "o.yml").write_text(text)
    handed = []

    def pipeline(root):
        handed.append((list(sys.argv), Path(sys.argv[2]).read_text()))

    monkeypatch.setattr(train, "train_pipeline", pipeline)
    main(["-opt", "o.yml", *argv])
    return handed[0]


@pytest.mark.parametrize("argv", HOSTILE_OVERRIDES)
def test_basicsr_launcher_runs_no_code_from_overrides(tmp_path, monkeypatch, argv):
    with pytest.raises(SystemExit) as stop:
        _launch(tmp_path, monkeypatch, argv)
    assert stop.value.code == 2
    assert not (tmp_path / "M").exists()


def test_basicsr_launcher_applies_checked_overrides_itself(tmp_path, monkeypatch):
    overrides = ["train:ema_decay=!!float 5e-1", "name=y", "train:steps=[1, 2.5, -3]", "x=~"]
    argv, text = _launch(tmp_path, monkeypatch, ["--force_yml", *overrides, "--debug"])
    assert "--force_yml" not in argv and "--debug" in argv
    opt = yaml.safe_load(text)
    assert opt == {"name": "y", "train": {"ema_decay": 0.5, "steps": [1, 2.5, -3]}, "x": None}


def test_basicsr_option_aliases_are_refused(tmp_path, monkeypatch):
    """Nested aliases (a 1.5 kB file) would expand to 9**9 strings for BasicSR's dict2str."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "name: x\n" + "\n".join(lines) + "\n"
    assert len(bomb) < 1600
    ordered_yaml = basicsr_module("basicsr.utils.options").ordered_yaml

    with pytest.raises(yaml.composer.ComposerError, match=r"alias \*a0 refused"):
        yaml.load(bomb, Loader=ordered_yaml()[0])
    with pytest.raises(SystemExit) as stop:
        _launch(tmp_path, monkeypatch, [], text=bomb)
    assert stop.value.code == 2


@pytest.mark.parametrize("key", ["ts", "datasets.train.ts"])
def test_unknown_option_keys_are_rejected_by_name(key):
    with pytest.raises(ValueError, match=rf"{key}: unknown TS option\(s\) 'bnad'"):
        sampler_from_options({"sigma": 25, "bnad": [0.05, 0.3]}, key)
    with pytest.raises(ValueError, match=rf"{key}\.sigma=0.1 looks like \[0, 1\] units"):
        sampler_from_options({"sigma": 0.1}, key)


def refusal(path, what="checkpoint"):
    with pytest.raises(ValueError) as info:
        safe_load(path, what)
    msg = str(info.value)
    assert "\n" not in msg and "\x1b" not in msg, msg  # one plain line
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg, msg
    assert msg.startswith(f"refusing to load {path}: not a plain tensor {what} (")
    assert msg.endswith("nothing in it was executed"), msg
    return msg


def test_refusals_are_one_line_say_what_the_file_is_and_never_advise_disabling_safety(tmp_path):
    """Issue 16.2: torch's advice to re-run with weights_only=False must never reach the user."""
    marker = tmp_path / "ran"
    assert "would call getattr" in refusal(evil_file(tmp_path / "evil.pt", marker))
    torch.save({"w": Payload(marker)}, tmp_path / "evil_zip.pt")
    assert "would call getattr" in refusal(tmp_path / "evil_zip.pt")
    (tmp_path / "notes.pt").write_text("hello, not a checkpoint\n")
    assert "(neither a torch file nor a pickle)" in refusal(tmp_path / "notes.pt")
    save_checkpoint(tmp_path / "torn.pt", DnCNN(depth=3, features=4))
    (tmp_path / "torn.pt").write_bytes((tmp_path / "torn.pt").read_bytes()[:300])
    assert "(a truncated, damaged or foreign zip file)" in refusal(tmp_path / "torn.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "(an empty file)" in refusal(tmp_path / "empty.pt")
    with open(tmp_path / "short.pt", "wb") as f:
        pickle.dump({"w": [1, 2, 3]}, f, protocol=2)
    (tmp_path / "short.pt").write_bytes((tmp_path / "short.pt").read_bytes()[:-3])
    assert "(a truncated or damaged pickle)" in refusal(tmp_path / "short.pt", "weights file")
    assert not marker.exists()


def test_command_line_refuses_malicious_weights_in_one_line(tmp_path, capsys):
    from ts_defense.app.cli import main

    marker = tmp_path / "ran"
    (tmp_path / "weights").mkdir()
    evil_file(tmp_path / "weights" / "DnCNN-S-25.pth", marker)
    args = [
        "attack",
        "--model",
        "dncnn-s-25",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args + ["--images", "camera", "--size", "16", "--attacks", "fgsm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_only=False" not in err and "\x1b" not in err, err
    # a named model's file is checked against its pinned SHA-256 before anything reads it
    assert err.startswith("ts-defense: error: refusing ") and "DnCNN-S-25.pth" in err
    assert "SHA-256" in err and "DenoisingSimilitude" in err
    assert not marker.exists()


def test_safetensors_files_are_read_whatever_their_name(tmp_path):
    """Issue 29.6: a safetensors file (spandrel users have them) is read, not called a pickle."""
    from safetensors.torch import save_file

    state = DnCNN(depth=3, features=4).state_dict()
    for name in ("w.safetensors", "w.pth"):
        save_file(state, tmp_path / name)
        net = load_dncnn(tmp_path / name)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    (tmp_path / "torn.pth").write_bytes((tmp_path / "w.pth").read_bytes()[:-5])
    assert "(a truncated or damaged safetensors file)" in refusal(tmp_path / "torn.pth")


def test_safetensors_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # `import safetensors` fails
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ModuleNotFoundError) as info:
        safe_load(tmp_path / "w.safetensors", "weights file")
    msg = str(info.value)
    assert "\n" not in msg and "w.safetensors is a safetensors weights file" in msg
    assert msg.endswith("(pip install safetensors)"), msg


def test_weights_with_nan_or_inf_are_refused_naming_the_file_and_tensor(tmp_path, capsys):
    """Issue 29.6: not "estimate contains NaN or Inf" once the attack runs, but the file."""
    from ts_defense.app.cli import main

    for bad in (math.nan, math.inf):
        state = DnCNN(depth=3, features=4).state_dict()
        state["layers.2.weight"].view(-1)[3] = bad
        torch.save(state, tmp_path / "diverged.pth")
        with pytest.raises(ValueError, match=r"diverged\.pth: weights file tensor 'layers\.2\.wei"):
            load_dncnn(tmp_path / "diverged.pth")
        args = ["evaluate", str(tmp_path / "diverged.pth"), "--out", str(tmp_path / "o")]
        assert main([*args, "--no-transfer", "--steps", "1", "--eps", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "diverged.pth" in err and "'layers.2.weight'" in err
    assert safe_load(tmp_path / "diverged.pth")["layers.2.weight"].isinf().any()  # not weights
