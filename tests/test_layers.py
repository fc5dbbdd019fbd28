"""The import picture: the folders of ``ts_defense`` are layers and no import (at module level
or inside a function) runs back up. ``training`` and ``evaluation`` are siblings: neither
imports the other. The package ``__init__`` is the facade and may import from any layer."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK = {"noise": 1, "models": 2, "attacks": 3, "training": 4, "evaluation": 4, "adapters": 5}
RANK["app"] = 6  # the root's private helpers (_checks, _io, data, seeding, ...) are rank 0


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (len(parts) > 2 or parts[1] in RANK) else "(root)"


def _modules():
    for path in sorted((ROOT / "ts_defense").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), path, path.name == "__init__.py"
    for path in sorted((ROOT / "adapters").rglob("*.py")):
        rel = path.relative_to(ROOT / "adapters").with_suffix("")
        name = ".".join(("ts_defense", "adapters", *rel.parts)).removesuffix(".__init__")
        yield name, path, path.name == "__init__.py"


def _imports(module: str, path: Path, package: bool):
    base = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + [node.module or ""])
            else:
                target = node.module or ""
            targets = [target.rstrip(".")]
            if not node.module:  # from .. import typical: the names are modules
                targets = [f"{targets[0]}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        yield from (t for t in targets if t.startswith("ts_defense."))


def test_no_import_runs_back_up_the_layers():
    upward = []
    for module, path, package in _modules():
        if module == "ts_defense":
            continue
        here = _layer(module)
        for target in _imports(module, path, package):
            there = _layer(target)
            rank_here, rank_there = RANK.get(here, 0), RANK.get(there, 0)
            sibling = here != there and rank_here == rank_there and rank_here > 0
            if rank_there > rank_here or sibling:
                upward.append(f"{module} imports {target}")
    assert not upward, "\n".join(upward)


def test_the_picture_sees_every_layer():
    layers = {_layer(m) for m, _, _ in _modules()}
    assert set(RANK) | {"(root)"} <= layers, layers
    found = {t for m, p, pkg in _modules() for t in _imports(m, p, pkg)}
    assert "ts_defense.noise.sampler" in found and "ts_defense.attacks" in found
