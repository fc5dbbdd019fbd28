"""The wheel installs ``ts_defense`` with ``ts_defense.adapters`` inside it, every subpackage of
the source tree, and no top-level ``adapters`` module (PyPI already has one)."""

import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_layout(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ts_defense-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "adapters" not in tops
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ts_defense"}
    expected = {
        "ts_defense/" + str(p.parent.relative_to(ROOT / "ts_defense")) + "/__init__.py"
        for p in (ROOT / "ts_defense").rglob("__init__.py")
    } | {
        "ts_defense/adapters/" + str(p.parent.relative_to(ROOT / "adapters")) + "/__init__.py"
        for p in (ROOT / "adapters").rglob("__init__.py")
    }
    expected = {e.replace("/./", "/") for e in expected}
    assert expected <= set(names), f"missing from the wheel: {sorted(expected - set(names))}"


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory) -> Path:
    """One wheel built for the metadata and install tests."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("ts_defense-*.whl")
    return wheel


def test_wheel_metadata_a_user_can_trust(wheel_file):
    from email.parser import Parser

    wheel = zipfile.ZipFile(wheel_file)
    meta = Parser().parsestr(wheel.read("ts_defense-0.1.0.dist-info/METADATA").decode())
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    assert (
        "ts-defense developers"
        in wheel.read("ts_defense-0.1.0.dist-info/licenses/LICENSE").decode()
    )
    assert meta["Author"] == "ts-defense developers"
    assert {"denoising", "adversarial robustness"} <= set(meta["Keywords"].split(","))
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the SPDX field says it
    extras = set(meta.get_all("Provides-Extra"))
    assert {"archs", "bm3d", "basicsr", "dev", "all"} <= extras
    assert 'spandrel>=0.3; extra == "archs"' in meta.get_all("Requires-Dist")
    assert meta["Requires-Python"] == ">=3.10"
    assert meta.get_all("Project-URL") is None and meta["Home-page"] is None  # none invented
    entry = wheel.read("ts_defense-0.1.0.dist-info/entry_points.txt").decode()
    assert "ts-defense = ts_defense.app.cli:main" in entry


@pytest.mark.slow
def test_installed_wheel_runs_the_readme_train_step(tmp_path, wheel_file):
    """The wheel installed alone (``--no-deps --target``; torch and the rest from this venv)
    imports from its own folder and runs the README's train-step snippet (seconds: mostly the
    subprocess importing torch)."""
    wheel = wheel_file
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("<!-- train-step -->\n```python\n", 1)[1].split("```", 1)[0]
    script = (
        "import torch, ts_defense\n"
        "from ts_defense.models import DnCNN\n"
        f"assert ts_defense.__file__.startswith({str(target)!r}), ts_defense.__file__\n"
        "torch.manual_seed(0)\n"
        "model = DnCNN(depth=3, features=8)\n"
        "loader = [torch.rand(4, 1, 16, 16) for _ in range(2)]\n"
        + snippet
        + "print('loss', float(result.loss))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert math.isfinite(float(run.stdout.split("loss")[-1]))
