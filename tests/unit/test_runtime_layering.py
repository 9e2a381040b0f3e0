"""The worker runtime's modules form layers: no module imports one that imports it back
(directly or through others), at module level or inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "worker" / "runtime"


def _imports(path: Path) -> set[str]:
    """Runtime modules ``path`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "worker.runtime":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("worker.runtime."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[2] for a in node.names if a.name.startswith("worker.runtime.")
            }
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_runtime_modules_import_each_other_without_cycles() -> None:
    graph = {p.stem: _imports(p) - {p.stem} for p in RUNTIME.glob("*.py")}
    assert {"attempt", "job", "fanout", "runner", "context"} <= set(graph)
    assert "job" in graph["runner"] and "attempt" in graph["job"]  # the parse sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
