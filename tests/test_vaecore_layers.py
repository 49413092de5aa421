"""vaecore's sub-packages import only what their docstrings allow: the foundation modules at the top
(files, rng, posterior, schedules, pinning) import no sub-package; settings imports the foundation only;
data and runs add settings; scoring adds data and runs; task adds scoring; runner may import them all.
A module's imports are read from its source (``import vaecore.x...``, ``from vaecore.x import ...``,
``from vaecore import x``), those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

VAECORE = Path(__file__).resolve().parents[1] / "vaecore"
FOUNDATION = {"files", "rng", "posterior", "schedules", "pinning"}
ALLOWED = {  # sub-package -> the sub-packages its modules may import (besides itself and the foundation)
    "foundation": set(),
    "settings": set(),
    "data": {"settings"},
    "runs": {"settings"},
    "scoring": {"settings", "data", "runs"},
    "task": {"settings", "data", "runs", "scoring"},
    "runner": {"settings", "data", "runs", "scoring", "task"},
}


def imported_parts(source: str) -> set[str]:
    """The first component under vaecore of every vaecore module a source imports."""
    parts = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "vaecore" else [f"vaecore.{a.name}" for a in node.names]
        else:
            continue
        parts |= {n.split(".")[1] for n in names if n.startswith("vaecore.")}
    return parts


def layer_of(path: Path) -> str:
    rel = path.relative_to(VAECORE)
    return "foundation" if len(rel.parts) == 1 else rel.parts[0]


MODULES = sorted(p for p in VAECORE.rglob("*.py") if p.name != "__init__.py" or len(p.relative_to(VAECORE).parts) > 1)


def test_every_sub_package_is_declared_and_the_foundation_is_complete():
    packages = {p.name for p in VAECORE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED) - {"foundation"}
    assert {p.stem for p in VAECORE.glob("*.py")} - {"__init__"} == FOUNDATION


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(VAECORE)) for p in MODULES])
def test_imports_follow_the_layers(path):
    layer = layer_of(path)
    allowed = ALLOWED[layer] | FOUNDATION | ({layer} if layer != "foundation" else set())
    bad = imported_parts(path.read_text()) - allowed
    assert not bad, f"vaecore/{path.relative_to(VAECORE)} ({layer}) imports vaecore.{sorted(bad)}; allowed: {sorted(allowed)}"


def test_the_check_sees_a_forbidden_import():
    assert imported_parts("from vaecore.runner import driver\nimport vaecore.task.tasks\nfrom vaecore import rng") == \
        {"runner", "task", "rng"}
