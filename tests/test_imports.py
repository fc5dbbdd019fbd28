"""Start-up cost: ``import ts_defense`` loads none of the heavy optional
modules (they are imported where they are used), so they cost little more than ``import
torch``. Pinned by the modules loaded, not by a timing."""

import subprocess
import sys

HEAVY = (
    "torchattacks",
    "torchvision",
    "matplotlib",
    "skimage",
    "scipy",
    "spandrel",
    "accelerate",
    "bm3d",
    "safetensors",
    "basicsr",
)

PROBE = """
import sys
{code}
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded(code: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    last = (run.stdout.splitlines() or [""])[-1]
    return [m for m in last.split(",") if m]


def test_import_ts_defense_loads_no_heavy_optional_module():
    assert _loaded("import ts_defense") == []


def test_the_probe_sees_a_heavy_module_when_one_is_loaded():
    assert "torchattacks" in _loaded("import ts_defense.attacks")
