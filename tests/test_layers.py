"""The import graph has layers: each part of flaxsent imports only the parts below it.

The graph counts every import, function-level ones included, of every module of the installed
packages (`flaxsent.convert` and `flaxsent.bench` are folders at the top of the repository
mapped into the package). `python -m tests.test_layers OUT.png` draws it.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOTS = ("flaxsent", "flaxsent.convert", "flaxsent.bench")
# Bottom to top. A part may import its own modules and those of any LOWER layer, never one of
# its own layer or above. `flaxsent` is the package root with its public aliases (beam, ray).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("flaxsent.errors", "flaxsent.version"),
    ("flaxsent.io",),
    ("flaxsent.core",),
    ("flaxsent.embedded", "flaxsent.convert", "flaxsent.evaluate", "flaxsent.predict",
     "flaxsent.explain"),
    ("flaxsent.train", "flaxsent.serve", "flaxsent.integrations", "flaxsent.probe"),
    ("flaxsent.aot",),
    ("flaxsent.bench",),
    ("flaxsent.cli",),
    ("flaxsent",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def modules_of(roots: dict[str, Path]) -> dict[str, Path]:
    """Every module under the roots (name -> file), packages by their __init__."""
    out: dict[str, Path] = {}
    for root, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            name = ".".join((root, *rel))
            # a nested root (convert, bench) is listed under its own name, not twice
            if not any(other != root and name.startswith(other + ".") or name == other
                       for other in roots if other.startswith(root + ".")):
                out[name] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute names an import statement may load (`from a import b`: a and a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(parts[:len(parts) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(roots: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ours it imports anywhere in its body (parents included: importing
    a.b.c runs a and a.b first, except the module's own packages, which have run before it: a.b.d
    importing a.b.c adds a.b.c, not a.b; a.b.d importing a.b itself adds a.b)."""
    modules = modules_of(roots)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parts = name.split(".")
        own = {".".join(parts[:i]) for i in range(1, len(parts))}
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, name, path.name == "__init__.py"):
                    steps = target.split(".")
                    parents = {".".join(steps[:i]) for i in range(1, len(steps))} - own
                    edges.update(p for p in (*parents, target) if p in modules and p != name)
        graph[name] = edges
    return graph


def part_of(module: str) -> str:
    """The layer part a module belongs to: the longest listed prefix."""
    best = max((p for p in RANK if module == p or module.startswith(p + ".")), key=len)
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import of a part at the importer's layer or above (itself aside)."""
    bad = []
    for module, targets in sorted(graph.items()):
        here = part_of(module)
        for target in sorted(targets):
            there = part_of(target)
            if there == here or (there == "flaxsent" and target == "flaxsent"
                                 and here != "flaxsent"):
                continue  # its own part; the root package itself runs for any import
            if RANK[there] >= RANK[here]:
                bad.append(f"{module} ({here}) -> {target} ({there})")
    return bad


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


def installed_roots() -> dict[str, Path]:
    """Where each root package lives (convert/ and bench/ are mapped into flaxsent)."""
    found = {}
    for name in ROOTS:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        found[name] = Path(list(spec.submodule_search_locations)[0])
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(installed_roots())


def test_every_module_belongs_to_a_layer(graph):
    assert "flaxsent.core.classifier" in graph and "flaxsent.bench.harness" in graph
    assert all(part_of(m) in RANK for m in graph)
    listed = {p for p in RANK if p != "flaxsent"}
    assert listed <= {part_of(m) for m in graph}, "a layer lists a part that does not exist"


def test_no_import_points_up_or_sideways(graph):
    assert upward_imports(graph) == []


def test_no_import_cycles_among_modules(graph):
    assert find_cycles(graph) == []


def test_core_imports_nothing_heavy_or_optional(graph):
    """The core runs on a TPU host: no torch, transformers, web framework or scale-out engine."""
    optional = ("torch", "transformers", "fastapi", "uvicorn", "apache_beam", "ray", "pyarrow",
                "matplotlib", "psutil")
    roots = installed_roots()
    for module, path in modules_of(roots).items():
        if part_of(module) not in ("flaxsent.core", "flaxsent.io", "flaxsent.errors"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
        top |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and not node.level}
        # pyarrow and torch are imported lazily, for the formats and files that need them
        eager = {n for n in top if n in optional and n not in ("pyarrow", "torch")}
        assert not eager, f"{module} imports {sorted(eager)}"


def test_an_upward_import_and_a_cycle_are_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.d import h\n")
    (pkg / "sub" / "d.py").write_text("from pkg.sub.e import k\n")  # a sibling: no cycle
    (pkg / "sub" / "e.py").write_text("k = 1\n")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import g\n")
    (pkg / "sub" / "c.py").write_text("import pkg.a\n")
    graph = import_graph({"pkg": pkg})
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.sub.d"] == {"pkg.sub.e"} and graph["pkg.sub"] == {"pkg.sub.d"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def draw(graph: dict[str, set[str]], out: str) -> None:
    """The graph between parts as a PNG: one row per layer, bottom to top; every arrow points
    down (an upward one would be drawn red)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    edges: dict[tuple[str, str], int] = {}
    for module, targets in graph.items():
        for target in targets:
            a, b = part_of(module), part_of(target)
            if a != b and target != "flaxsent":
                edges[(a, b)] = edges.get((a, b), 0) + 1
    where = {}
    for rank, parts in enumerate(LAYERS):
        for i, part in enumerate(parts):
            where[part] = ((i + 1) / (len(parts) + 1), rank)
    fig, ax = plt.subplots(figsize=(11, 8))
    for (a, b), n in sorted(edges.items()):
        (x0, y0), (x1, y1) = where[a], where[b]
        up = RANK[b] >= RANK[a]
        ax.annotate("", xy=(x1, y1 + 0.12), xytext=(x0, y0 - 0.12),
                    arrowprops={"arrowstyle": "->", "color": "red" if up else "0.55",
                                "lw": 0.6 + 0.15 * min(n, 8), "shrinkA": 4, "shrinkB": 4})
    for part, (x, y) in where.items():
        label = part.removeprefix("flaxsent.") if part != "flaxsent" else "flaxsent (root)"
        ax.text(x, y, label, ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round", "fc": "#e8f0fe", "ec": "#4a6fa5"})
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(LAYERS) - 0.4)
    ax.axis("off")
    ax.set_title("flaxsent's import graph between parts: each arrow points to a lower layer")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    draw(import_graph(installed_roots()), sys.argv[1] if len(sys.argv) > 1 else "layers.png")
