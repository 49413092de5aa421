"""The module graph of the project: no import cycles (module-level or inside functions), and the
dependency rules of DESIGN.md: vaecore imports no framework and no backend package, jaxvae never
imports torch, torchvae never imports jax. ``importlib.import_module`` counts as an import: with a
literal name it is an edge, with a computed one a hidden edge, which fails."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vaecore", "jaxvae", "torchvae", "twinvae")
FRAMEWORKS = {"jax": ("jax", "flax", "optax", "orbax"), "torch": ("torch", "triton")}


def modules() -> dict[str, Path]:
    found = {}
    for p in PACKAGES:  # sub-packages too: vaecore.settings.config, vaecore.settings (its __init__)
        for f in (ROOT / p).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if f.stem == "__init__" else parts)] = f
    found.update({f.stem: f for f in (ROOT / "train.py", ROOT / "evaluate.py")})
    return found


def imports(path: Path) -> set[str]:
    """Every module named in an import statement of the file, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}  # from vaecore import rng
            names.update(subs)
            if not subs <= PROJECT_MODULES:  # a name from the package's own __init__, not a submodule
                names.add(node.module)
        elif dynamic_import(node) and isinstance(node.args[0], ast.Constant):
            names.add(node.args[0].value)
    return names


def dynamic_import(node: ast.AST) -> bool:
    """``importlib.import_module(...)`` or ``__import__(...)``."""
    return isinstance(node, ast.Call) and node.args and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
        or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))


def test_no_hidden_imports():
    """A module named at run time (``importlib.import_module(f"{backend}vae")``) is an edge no reader
    and no graph can see: every import names its module."""
    hidden = [f"{name}:{node.lineno}" for name, path in modules().items()
              for node in ast.walk(ast.parse(path.read_text()))
              if dynamic_import(node) and not isinstance(node.args[0], ast.Constant)]
    assert not hidden, f"imports of computed module names: {hidden}"


def test_the_hidden_edge_check_sees_a_computed_import():
    tree = ast.parse("import importlib\ndef f(b):\n    return importlib.import_module(f'{b}vae.evaluation')\n")
    assert [n for n in ast.walk(tree) if dynamic_import(n) and not isinstance(n.args[0], ast.Constant)]


PROJECT_MODULES = set(modules())


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from jaxvae import params`` names the package too)."""
    mods = modules()
    return {name: {m for m in imports(path) if m in mods and m != name} for name, path in mods.items()}


def test_no_import_cycles():
    g = graph()
    assert g["twinvae.train_cli"] and g["vaecore.runner.options"]  # the graph sees imports inside functions too
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
