"""Every ``python`` code block of the README and of ``docs/`` runs as printed: each in a fresh
interpreter, in an empty folder, with nothing defined beforehand. A block that cannot run here
(a BasicSR project's ``train.py``) is marked ``<!-- NAME; not run here: tested by
tests/FILE.py::TEST -->`` and that test must exist."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!-- (?P<mark>[^\n]*?) -->\n)?^```python\n(?P<code>.*?)^```", re.S | re.M)
ELSEWHERE = re.compile(r"not run here: tested by (tests/[\w/]+\.py)::(\w+)")


def _blocks() -> list:
    params = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code"))
            name = f"{page.relative_to(ROOT)}:{line}"
            params.append(pytest.param(match.group("mark") or "", match.group("code"), id=name))
    return params


BLOCKS = _blocks()


def test_the_pages_have_code_blocks():
    assert len(BLOCKS) >= 6, [p.id for p in BLOCKS]


@pytest.mark.slow
@pytest.mark.parametrize("mark, code", BLOCKS)
def test_code_block_runs_as_printed(mark, code, tmp_path, shared_data):
    elsewhere = ELSEWHERE.search(mark)
    if elsewhere:  # the test that runs it must exist
        path, test = elsewhere.groups()
        tree = ast.parse((ROOT / path).read_text())
        assert test in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        return
    env = {**os.environ, "TS_DEFENSE_DATA": str(shared_data)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, f"{code}\n--- stderr ---\n{run.stderr[-3000:]}"
