"""The top-level packages form layers (DESIGN.md, "Parts and their dependencies"): contracts
at the bottom, the shared library (pixfleet) on it, the edge and the worker side by side on
both, the operator commands (cli) on top. Imports are read from the source with ``ast``, at
module level and inside functions (a lazy import is still a dependency), and so are
``importlib.import_module("...")`` calls with a literal name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = frozenset({"contracts", "pixfleet", "edge", "worker", "cli", "tests", "loadtests"})

MAY_NOT_IMPORT = {
    "contracts": OURS - {"contracts"},
    "pixfleet": frozenset({"edge", "worker", "cli"}),
    "edge": frozenset({"worker", "cli"}),
    "worker": frozenset({"edge", "cli"}),
}


def _imported(tree: ast.AST) -> set[str]:
    """Every module name ``tree`` imports, anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def imports_of(package: str) -> dict[str, set[str]]:
    """``package``'s modules (paths from the root) and the top-level packages each imports."""
    return {
        str(path.relative_to(ROOT)): {
            name.split(".")[0] for name in _imported(ast.parse(path.read_text()))
        }
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_the_parse_sees_module_and_function_level_imports() -> None:
    source = """
import contracts.names
from edge.app import create_app

def f():
    from worker.errors import UsageError
    import cli.main
    importlib.import_module("loadtests.run")
"""
    assert _imported(ast.parse(source)) == {
        "contracts.names",
        "edge.app",
        "worker.errors",
        "cli.main",
        "loadtests.run",
    }
    edge = imports_of("edge")
    assert "pixfleet" in edge["edge/app.py"] or "pixfleet" in edge["edge/resources.py"]
    assert "worker" in imports_of("cli")["cli/main.py"]  # imported inside a function


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_a_package_imports_nothing_above_it(package: str) -> None:
    forbidden = MAY_NOT_IMPORT[package]
    wrong = {
        module: sorted(names & forbidden)
        for module, names in imports_of(package).items()
        if names & forbidden
    }
    assert wrong == {}, f"{package} may not import {sorted(forbidden)}"
