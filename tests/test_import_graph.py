"""The module graph of the project: no import cycles (module-level or inside functions), and the
dependency rules of DESIGN.md: vaecore imports no framework and no backend package, jaxvae never
imports torch, torchvae never imports jax."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vaecore", "jaxvae", "torchvae")
FRAMEWORKS = {"jax": ("jax", "flax", "optax", "orbax"), "torch": ("torch", "triton")}


def modules() -> dict[str, Path]:
    found = {f"{p}.{f.stem}": f for p in PACKAGES for f in (ROOT / p).glob("*.py") if f.stem != "__init__"}
    found.update({f.stem: f for f in (ROOT / "train.py", ROOT / "evaluate.py")})
    return found


def imports(path: Path) -> set[str]:
    """Every module named in an import statement of the file, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # from vaecore import rng
    return names


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(path) if m in mods and m != name} for name, path in mods.items()}


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_dependency_rules():
    mods = modules()
    for name, path in mods.items():
        names = imports(path)
        roots = {n.split(".")[0] for n in names}
        if name.startswith("vaecore."):
            bad = roots & {*FRAMEWORKS["jax"], *FRAMEWORKS["torch"], "jaxvae", "torchvae"}
            assert not bad, f"{name} imports {sorted(bad)}"
        if name.startswith("jaxvae."):
            assert not roots & {*FRAMEWORKS["torch"], "torchvae"}, name
        if name.startswith("torchvae."):
            assert not roots & {*FRAMEWORKS["jax"], "jaxvae"}, name
