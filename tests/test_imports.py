"""The package's shape: every module imports, the modules' imports of each other form no circle
(read from their source, so a circle that Python happens to tolerate still fails), and the
package root stays small."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = "recsys_kdef"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE
MAX_ROOT_MODULES = 10


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports at run time (imports under `if TYPE_CHECKING:`
    excluded); `from a import b` counts a.b when that is a module, else a."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".rstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle [a, b, ..., a] of `graph`, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_the_modules_import_each_other_without_a_circle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_circle():
    planted = {**GRAPH, "recsys_kdef.io": GRAPH["recsys_kdef.io"] | {"recsys_kdef.train"}}
    cycle = find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert {"recsys_kdef.io", "recsys_kdef.train"} <= set(cycle)


def test_the_package_root_has_at_most_ten_modules():
    root = sorted(p.name for p in SOURCE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_models_and_objectives_import_one_way():
    """Objectives read the models' outputs; models never import objectives or read files
    through the checkpoint code."""
    for name, imports in GRAPH.items():
        if name.startswith(f"{PACKAGE}.models"):
            bad = {
                m
                for m in imports
                if m.startswith((f"{PACKAGE}.objectives", f"{PACKAGE}.checkpoint"))
            }
            assert not bad, f"{name} imports {sorted(bad)}"
