"""``python -m build`` gives an sdist and a wheel (built from the sdist) that install ``ts_defense``
with ``ts_defense.adapters`` inside it, every subpackage of the source tree, no top-level
``adapters`` module (PyPI already has one), and ``_ts_defense_torchvision`` with its ``.pth``
(``import basicsr`` on torchvision >= 0.17). The wheel goes into a fresh virtual environment,
where BasicSR imports without ts-defense, a user's BasicSR ``train.py`` trains with a ``ts``
block, and a README snippet runs."""

import math
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIM = "_ts_defense_torchvision"


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> tuple[Path, Path]:
    """``python -m build --no-isolation``: the sdist, and the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (sdist,) = out.glob("ts_defense-*.tar.gz")
    (wheel,) = out.glob("ts_defense-*.whl")
    return sdist, wheel


def test_wheel_layout(dist):
    _, wheel = dist
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ts_defense", f"{SHIM}.py", f"{SHIM}.pth"}  # no top-level `adapters`
    assert archive.read(f"{SHIM}.pth").decode() == f"import {SHIM}; {SHIM}.install()\n"
    expected = {
        "ts_defense/" + str(p.parent.relative_to(ROOT / "ts_defense")) + "/__init__.py"
        for p in (ROOT / "ts_defense").rglob("__init__.py")
    } | {
        "ts_defense/adapters/" + str(p.parent.relative_to(ROOT / "adapters")) + "/__init__.py"
        for p in (ROOT / "adapters").rglob("__init__.py")
    }
    expected = {e.replace("/./", "/") for e in expected} | {
        f"ts_defense/models/weights/{n}"
        for n in ("DnCNN-S-25.pth", "kair_dncnn_25.pth", "NOTICE.md")
    }
    assert expected <= set(names), f"missing from the wheel: {sorted(expected - set(names))}"


def test_sdist_holds_what_the_wheel_is_built_from(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {
        "pyproject.toml",
        "setup.py",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        f"{SHIM}.py",
    } <= names
    assert {"adapters/basicsr/__init__.py", "adapters/kair/__init__.py"} <= names
    assert {"examples/basicsr_ts_denoising.yml", "examples/kair_train_dncnn_ts.json"} <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "reports/"))]


def _metadata(dist: tuple[Path, Path]) -> list:
    sdist, wheel = dist
    with tarfile.open(sdist) as tar:
        (pkg_info,) = [
            m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
        ]
        sdist_meta = tar.extractfile(pkg_info).read().decode()
    wheel_meta = zipfile.ZipFile(wheel).read("ts_defense-0.1.0.dist-info/METADATA").decode()
    return [Parser().parsestr(text) for text in (sdist_meta, wheel_meta)]


def test_wheel_and_sdist_metadata_a_user_can_trust(dist):
    wheel = zipfile.ZipFile(dist[1])
    assert (
        "ts-defense developers"
        in wheel.read("ts_defense-0.1.0.dist-info/licenses/LICENSE").decode()
    )
    entry = wheel.read("ts_defense-0.1.0.dist-info/entry_points.txt").decode()
    assert "ts-defense = ts_defense.app.cli:main" in entry
    for meta in _metadata(dist):
        assert meta["Name"] == "ts-defense" and meta["Version"] == "0.1.0"
        assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
        assert meta["Author"] == "ts-defense developers"
        assert meta["Summary"].startswith("Out-of-distribution typical-set (TS) training")
        assert meta["Description-Content-Type"] == "text/markdown"
        assert {"denoising", "adversarial robustness"} <= set(meta["Keywords"].split(","))
        classifiers = meta.get_all("Classifier")
        assert "Programming Language :: Python :: 3 :: Only" in classifiers
        assert not [c for c in classifiers if c.startswith("License ::")]  # the SPDX field
        extras = set(meta.get_all("Provides-Extra"))
        assert {"archs", "bm3d", "basicsr", "dev", "all"} <= extras
        requires = meta.get_all("Requires-Dist")
        assert 'spandrel>=0.3; extra == "archs"' in requires
        assert 'basicsr>=1.4.2; extra == "basicsr"' in requires
        assert meta["Requires-Python"] == ">=3.10"
        assert meta.get_all("Project-URL") is None and meta["Home-page"] is None  # none invented


def _fresh_venv(root: Path, *install: str) -> Path:
    """A fresh virtual environment at ``root`` with ``pip install --no-deps --no-index
    *install`` (no network). Its dependencies (torch, BasicSR, ...) come from this test's
    environment through a path entry after the venv's own site-packages; the ``.pth`` files
    there (the editable install of a checkout) are not run, so ``ts_defense`` can only come from
    what was installed. Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = _python(python, "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    deps = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    Path(purelib, "zz_test_dependencies.pth").write_text("\n".join(deps) + "\n")
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *install]
    run = subprocess.run(pip, capture_output=True, text=True, env=_clean_env(), cwd=root)
    assert run.returncode == 0, run.stderr
    return python


@pytest.fixture(scope="module")
def venv(tmp_path_factory, dist) -> Path:
    """A fresh virtual environment with the wheel installed."""
    return _fresh_venv(tmp_path_factory.mktemp("venv") / "env", str(dist[1]))


def test_editable_install_gets_the_pth_too(tmp_path):
    """``pip install -e`` (as run.sh does): the ``.pth`` in site-packages, the module from the
    checkout through setuptools' editable finder."""
    python = _fresh_venv(tmp_path / "env", "--no-build-isolation", "-e", str(ROOT))
    out = _python(
        python,
        f"import sys; import {SHIM} as m\n"
        "print(m.__file__, m.Finder in sys.meta_path, 'torch' in sys.modules)",
        cwd=tmp_path,
    )
    assert out.split() == [str(ROOT / f"{SHIM}.py"), "True", "False"]


def _clean_env() -> dict:
    """This process's environment without PYTHONPATH (which may point at the checkout)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _python(python: Path, code: str, cwd: Path | None = None) -> str:
    run = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=_clean_env(), cwd=cwd
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
def test_fresh_venv_imports_basicsr_without_ts_defense(venv, tmp_path):
    """The ``.pth`` adds a finder at start-up without importing torch; ``import basicsr`` then
    works on today's torchvision with nothing of ours imported by hand."""
    out = _python(
        venv,
        "import sys\n"
        "assert 'torch' not in sys.modules and 'ts_defense' not in sys.modules\n"
        "import basicsr\n"
        "old = sys.modules['torchvision.transforms.functional_tensor']\n"
        "print(old.__name__, 'ts_defense' in sys.modules, sys.prefix)\n",
        cwd=tmp_path,
    )
    name, imported, prefix = out.split()
    assert imported == "False" and Path(prefix) == venv.parents[1]
    run = subprocess.run(
        [str(venv), "-X", "importtime", "-c", "pass"], capture_output=True, text=True, cwd=tmp_path
    )
    lines = [line.split("|") for line in run.stderr.splitlines() if line.count("|") == 2]
    (at,) = [i for i, (_, _, mod) in enumerate(lines) if mod.strip() == SHIM]
    depth = len(lines[at][2]) - len(lines[at][2].lstrip())
    assert len(lines[at - 1][2]) - len(lines[at - 1][2].lstrip()) <= depth  # imports nothing
    import torchvision

    if tuple(int(v) for v in re.findall(r"\d+", torchvision.__version__)[:2]) >= (0, 17):
        assert name == "torchvision.transforms._functional_tensor"


@pytest.mark.slow
def test_fresh_venv_runs_a_user_basicsr_train_py_with_ts_options(venv, tmp_path):
    """The README's ``train.py`` in a user's project: BasicSR's ``train_pipeline`` trains
    ``TSModel`` with the example's ``ts`` block, 2 iterations on the CPU."""
    from basicsr_support import make_image_dirs, tiny_options

    readme = (ROOT / "docs" / "adapters.md").read_text()
    snippet = (
        readme.split("<!-- basicsr-train-py", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(snippet + "print('ts_defense:', ts_defense.__file__)\n")
    opt = tiny_options(make_image_dirs(tmp_path / "data"), "user_ts")
    opt["train"]["total_iter"] = 2
    opt["val"]["val_freq"] = 2
    opt["logger"]["save_checkpoint_freq"] = 2
    (project / "options").mkdir()
    (project / "options" / "train_ts.yml").write_text(yaml.safe_dump(opt))
    cmd = [str(venv), "train.py", "-opt", "options/train_ts.yml"]
    run = subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=_clean_env())
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("ts_defense:")[-1].strip().startswith(str(venv.parents[1]))
    exp = project / "experiments" / "user_ts"
    log = next(exp.glob("train_user_ts_*.log")).read_text()
    assert "Model [TSModel] is created." in log
    assert len(re.findall(r"ts_ood: [0-9.e+-]+", log)) == 2
    assert (exp / "models" / "net_g_2.pth").is_file()
    assert (exp / "training_states" / "2.ts_sampler.pth").is_file()


@pytest.mark.slow
def test_fresh_venv_runs_the_readme_train_step(venv, tmp_path):
    """The docs' train-step snippet with the installed wheel (seconds: mostly torch's
    import)."""
    readme = (ROOT / "docs" / "training.md").read_text()
    snippet = readme.split("<!-- train-step -->\n```python\n", 1)[1].split("```", 1)[0]
    script = (
        "import sys, torch, ts_defense\n"
        "from ts_defense.models import DnCNN\n"
        "assert ts_defense.__file__.startswith(sys.prefix), ts_defense.__file__\n"
        "torch.manual_seed(0)\n"
        "model = DnCNN(depth=3, features=8)\n"
        "loader = [torch.rand(4, 1, 16, 16) for _ in range(2)]\n"
        + snippet
        + "print('loss', float(result.loss))\n"
    )
    out = _python(venv, script, cwd=tmp_path)
    assert math.isfinite(float(out.split("loss")[-1]))


def _fake_torchvision(root: Path, *modules: str) -> Path:
    """A stand-in ``torchvision`` package holding ``transforms/<module>.py`` for each module."""
    transforms = root / "torchvision" / "transforms"
    transforms.mkdir(parents=True)
    (root / "torchvision" / "__init__.py").write_text("")
    (transforms / "__init__.py").write_text("")
    for name in modules:
        (transforms / f"{name}.py").write_text(f"WHO = {name!r}\n")
    return root


SHIM_PROBE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import {SHIM}
{SHIM}.install()
{SHIM}.install()  # once only
assert sys.meta_path.count({SHIM}.Finder) == 1 and sys.meta_path[-1] is {SHIM}.Finder
assert 'torchvision' not in sys.modules
try:
    from torchvision.transforms.functional_tensor import WHO
except ModuleNotFoundError as err:
    print('missing', err.name)
else:
    module = sys.modules['torchvision.transforms.functional_tensor']
    print(WHO, module.__name__, module.__spec__.name)
"""


OLD, NEW = "torchvision.transforms.functional_tensor", "torchvision.transforms._functional_tensor"


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        (("_functional_tensor",), f"_functional_tensor {NEW} {NEW}"),  # the renamed module
        (("functional_tensor", "_functional_tensor"), f"functional_tensor {OLD} {OLD}"),
        ((), f"missing {OLD}"),  # nothing to alias: the usual error
    ],
)
def test_torchvision_finder_aliases_only_a_missing_module(tmp_path, modules, expected):
    """The finder comes last: where the old module exists it is never asked; where it is gone
    the renamed module is handed out as it is (its own ``__spec__``)."""
    fake = _fake_torchvision(tmp_path, *modules)
    env = {**_clean_env(), "PYTHONPATH": str(fake)}
    run = subprocess.run(
        [sys.executable, "-c", SHIM_PROBE], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected
