"""pyproject.toml declares what the library imports: its base dependencies are exactly the
third-party packages that flaxsent/ and convert/ import outside the optional extras, and every
optional import belongs to an extra.

An import at a module's top level runs whenever the module does, so it must be a base
dependency; an import inside a function runs only on the path that needs it (reading a .bin
needs torch, --plot needs matplotlib) and may belong to an extra. A module that exists for an
extra (the server, the Beam transform) imports that extra's packages at its top.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("flaxsent", "convert")  # convert/ is installed as flaxsent.convert; bench/ is not here
OWN = {"flaxsent"}
# import name -> distribution name, where they differ beyond - and _ and case
DISTRIBUTIONS = {"orbax": "orbax-checkpoint", "yaml": "PyYAML", "sklearn": "scikit-learn",
                 "apache_beam": "apache-beam"}
# the modules that exist for an extra (a folder ends with /)
EXTRA_MODULES = {"flaxsent/serve/": "serve", "flaxsent/integrations/beam.py": "beam",
                 "convert/onnx_export.py": "onnx"}
# packages an extra's requirement brings along, imported directly by its modules
BROUGHT_BY = {"pydantic": "fastapi", "starlette": "fastapi"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution(import_name: str) -> str:
    return normalize(DISTRIBUTIONS.get(import_name, import_name))


def requirement_names(requirements: list[str]) -> set[str]:
    """The distributions of requirement strings ('uvicorn[standard]>=0.30' -> 'uvicorn')."""
    return {normalize(re.match(r"[A-Za-z0-9._-]+", r.strip()).group(0)) for r in requirements}


def imports(source: str) -> list[tuple[str, bool]]:
    """(top-level package, inside a function) of every absolute import of third-party code."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                found.append((child.module.split(".")[0], in_function))
            visit(child, in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(source), False)
    return [(name, f) for name, f in found
            if name not in sys.stdlib_module_names and name not in OWN]


def extra_of(path: str) -> str | None:
    return next((extra for prefix, extra in EXTRA_MODULES.items()
                 if path == prefix or prefix.endswith("/") and path.startswith(prefix)), None)


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture(scope="module")
def library() -> dict[str, list[tuple[str, bool]]]:
    """Each library module (path from the repository root) -> its third-party imports."""
    return {path.relative_to(ROOT).as_posix(): imports(path.read_text(encoding="utf-8"))
            for folder in LIBRARY for path in sorted((ROOT / folder).rglob("*.py"))}


def test_every_module_level_import_of_the_library_is_a_base_dependency(project, library):
    base = requirement_names(project["dependencies"])
    missing = {f"{path}: {name}" for path, found in library.items() if extra_of(path) is None
               for name, in_function in found
               if not in_function and distribution(name) not in base}
    assert not missing, f"imported at module level but not a base dependency: {sorted(missing)}"


def test_no_base_dependency_goes_unimported(project, library):
    imported = {distribution(name) for path, found in library.items() if extra_of(path) is None
                for name, _ in found}
    unused = requirement_names(project["dependencies"]) - imported
    assert not unused, f"base dependencies no library module imports: {sorted(unused)}"


def test_every_optional_import_belongs_to_an_extra(project, library):
    base = requirement_names(project["dependencies"])
    extras = {name: requirement_names(reqs)
              for name, reqs in project["optional-dependencies"].items() if name != "test"}
    stray = set()
    for path, found in library.items():
        extra = extra_of(path)
        for name, in_function in found:
            dist = distribution(BROUGHT_BY.get(name, name))
            if dist in base:
                continue
            owners = {extra} if extra is not None and not in_function else set(extras)
            if not any(dist in extras[owner] for owner in owners):
                stray.add(f"{path}: {name}")
    assert not stray, f"optional imports no extra provides: {sorted(stray)}"


def test_the_test_extra_holds_every_other_extra(project):
    everything = requirement_names(project["optional-dependencies"]["test"])
    for name, reqs in project["optional-dependencies"].items():
        assert requirement_names(reqs) <= everything, name


def test_ruff_targets_the_oldest_python_the_package_accepts(project):
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]
    oldest = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"]).groups()
    assert ruff["target-version"] == "py" + "".join(oldest)
    assert sys.version_info[:2] >= tuple(map(int, oldest))


def test_the_scan_tells_module_level_from_function_level_imports():
    source = ("import numpy as np\nfrom jax import numpy\nimport os\nfrom . import sibling\n"
              "from flaxsent.errors import FlaxsentError\n"
              "def f():\n    import torch\n    class C:\n        import yaml\n"
              "g = lambda: __import__('x')\n")
    assert imports(source) == [("numpy", False), ("jax", False), ("torch", True),
                               ("yaml", True)]
    assert distribution("orbax") == "orbax-checkpoint" and distribution("ml_dtypes") == "ml-dtypes"
    assert requirement_names(["uvicorn[standard]>=0.30", "huggingface_hub>=0.24"]) == \
        {"uvicorn", "huggingface-hub"}
