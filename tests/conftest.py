import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/stat_checks.py and friends

settings.register_profile(
    "default",
    max_examples=int(os.environ.get("TS_DEFENSE_EXAMPLES", "28")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",
)
settings.load_profile("default")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $TS_DEFENSE_DATA). Missing data fails loudly: never a silent skip."""
    from ts_defense.data import shared_data_dir

    return shared_data_dir()


def pytest_terminal_summary(terminalreporter):
    """Print how many fuzz cases each entry point got (for the reliability report)."""
    from fuzz_support import CASES

    if CASES:
        total = sum(CASES.values())
        terminalreporter.write_line(f"fuzz cases: {total} over {len(CASES)} entry points")
