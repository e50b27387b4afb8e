"""No import cycles among flaxsent's own modules, counting imports inside functions too."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

PACKAGES = ("flaxsent", "flaxsent.convert", "flaxsent.bench")


def _modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Every module of the packages (name -> file), each package's __init__ included."""
    out = {}
    for package, folder in packages.items():
        out[package] = folder / "__init__.py"
        for info in pkgutil.iter_modules([str(folder)]):
            if not info.ispkg:
                out[f"{package}.{info.name}"] = folder / f"{info.name}.py"
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names (absolute), before filtering to our own."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(parts[:len(parts) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    # `from pkg import name` imports pkg.name when that is a module
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a.b/__init__ first: a.b.c, a.b, a."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (functions included)."""
    modules = _modules(packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(t for target in _targets(node, name, name in packages)
                             for t in _with_parents(target) if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def _installed_packages() -> dict[str, Path]:
    """Where each of flaxsent's packages lives (convert/ and bench/ are mapped into it)."""
    found = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        found[name] = Path(list(spec.submodule_search_locations)[0])
    return found


def test_flaxsent_has_no_import_cycles():
    graph = import_graph(_installed_packages())
    assert "flaxsent.checkpoint" in graph and "flaxsent.bench.harness" in graph
    assert find_cycles(graph) == []


def test_cycles_are_found_through_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg.a import x\nimport os\n")
    graph = import_graph({"pkg": pkg})
    assert graph["pkg.d"] == {"pkg", "pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
