"""The import structure of src/wae, read from the code with ``ast``: every import (module-level or inside a function)
goes to the importer's own layer or a lower one, and the import graph has no circle. The layer order is the one in
the README's Development section."""
from __future__ import annotations

import ast
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "wae"

LAYERS = [
    ["wae.errors", "wae._version", "wae.registry", "wae.runtime", "wae.typed", "wae.yamlio", "wae.renames"],
    ["wae.config", "wae.priors", "wae.divergences", "wae.networks", "wae.likelihoods", "wae.files"],
    ["wae.data"],
    ["wae.models"],
    ["wae.serialization"],
    ["wae.plots", "wae.reports", "wae.compare"],
    ["wae.evaluation"],
    ["wae.presets"],
    ["wae.training"],
    ["wae.experiments", "wae.estimator", "wae.cluster", "wae.samplers"],
    ["wae.cli", "wae.io", "wae"],  # the command line and the public facades (the package root, wae.io)
]
"""Bottom to top. A module belongs to the first entry that equals it or is a package above it."""


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (SRC / Path(*name.split(".")) / "__init__.py").exists()


def exists(name: str) -> bool:
    p = SRC / Path(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """Every wae module ``path`` imports (relative imports resolved; ``from P import m`` counts m when it is a
    module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name == "wae" or a.name.startswith("wae."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == "wae" or target.startswith("wae.")):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if exists(f"{target}.{a.name}")]
            out.update(subs or [target])
            if len(subs) < len(node.names):
                out.add(target)
    out.discard(me)
    return {m for m in out if exists(m)}


def layer(name: str) -> int:
    best = None
    for i, group in enumerate(LAYERS):
        for entry in group:
            if name == entry or name.startswith(entry + "."):
                if best is None or len(entry) > best[1]:
                    best = (i, len(entry))
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS (and the README)")
    return best[0]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def upward_imports() -> list[str]:
    bad = []
    for mod, deps in sorted(graph().items()):
        for d in sorted(deps):
            if layer(d) > layer(mod):
                bad.append(f"{mod} (layer {layer(mod)}) imports {d} (layer {layer(d)})")
    return bad


def test_no_module_imports_a_higher_layer():
    bad = upward_imports()
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def find_circle() -> list[str] | None:
    g = graph()
    # importing a.b.c runs the package a.b's __init__ first (but not the root facade's: it imports only models)
    for mod in list(g):
        for d in list(g[mod]):
            parts = d.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent != mod and not mod.startswith(parent + ".") and is_package(parent):
                    g[mod].add(parent)
    g.pop("wae", None)
    for deps in g.values():
        deps.discard("wae")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_circle():
    circle = find_circle()
    assert circle is None, "import circle: " + " → ".join(circle)


def test_the_checks_see_a_planted_upward_import_and_circle(tmp_path, monkeypatch):
    pkg = tmp_path / "wae"
    (pkg / "models").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from .models import base\n")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "base.py").write_text("def f():\n    from ..cli import main\n")  # a local import, upwards
    (pkg / "data" / "__init__.py").write_text("from . import a\n")
    (pkg / "data" / "a.py").write_text("from .b import x\n")
    (pkg / "data" / "b.py").write_text("from .a import y\n")  # a circle a → b → a
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    assert upward_imports() == ["wae.models.base (layer 3) imports wae.cli (layer 10)"]
    assert find_circle() == ["wae.cli", "wae.models.base", "wae.cli"]
    (pkg / "models" / "base.py").write_text("")
    assert upward_imports() == [] and find_circle() == ["wae.data.a", "wae.data.b", "wae.data.a"]
    (pkg / "data" / "b.py").write_text("")
    assert find_circle() is None


def test_every_model_module_registers_a_model_without_being_listed_anywhere():
    """Adding a model is adding one file to src/wae/models: the package imports each of its modules."""
    from wae.models import FAMILIES, list_models

    on_disk = sorted(p.stem for p in (PKG / "models").glob("*.py") if not p.stem.startswith("_")
                     and p.stem not in ("base", "registry"))
    assert list(FAMILIES) == on_disk
    registered = {e.cls.__module__.rsplit(".", 1)[-1] for e in list_models()}
    assert registered == set(on_disk)
