"""The wheel installs ``ts_defense`` with ``ts_defense.adapters`` inside it, every subpackage of
the source tree, and no top-level ``adapters`` module (PyPI already has one)."""

import subprocess
import sys
import zipfile
from pathlib import Path

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
