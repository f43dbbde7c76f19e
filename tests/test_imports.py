"""The import graph of vista2d_core has no cycle, counting imports inside functions too (only those under
``if TYPE_CHECKING:`` are left out), so the core reads top to bottom; and the core imports no plugin."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "vista2d_core"
MODULES = sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__")


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> set[str]:
    """The vista2d_core modules (and other top-level packages) ``path`` imports, at any depth."""
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if _type_checking(node):
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.module.startswith("vista2d_core."):
                found.add(node.module.split(".")[1])
            else:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        todo.extend(ast.iter_child_nodes(node))
    return found


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` (a list of nodes, the first repeated at the end), or [] when there is none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_checker_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_core_modules_import_each_other_without_a_cycle() -> None:
    graph = {m: imports(CORE / f"{m}.py") & set(MODULES) - {m} for m in MODULES}
    assert cycle(graph) == []


def test_the_core_imports_no_plugin() -> None:
    plugins = {p.name for p in (CORE.parent / "plugins").iterdir() if p.is_dir()}
    for module in [*MODULES, "__init__"]:
        assert not imports(CORE / f"{module}.py") & plugins, module


PLUGIN_SURFACE = {"errors", "interfaces", "files"}  # the part of the core plugins may import (docs/architecture.md)


def test_plugins_import_only_the_core_modules_meant_for_them() -> None:
    roots = [CORE.parent / "plugins", CORE.parent / "docs" / "examples"]
    for path in (p for root in roots for p in root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        used = {n.module.split(".")[1] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("vista2d_core.")}
        used |= {a.name.split(".")[1] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names if a.name.startswith("vista2d_core.")}
        assert used <= PLUGIN_SURFACE, f"{path}: imports vista2d_core.{sorted(used - PLUGIN_SURFACE)}"
