"""The import graph: no cycle among tracekit's modules, and every module imports on its own.

A cycle makes what works depend on which module a program happens to import first
(``tracekit.flask`` and ``tracekit.wsgi`` were one, through a lazy import). Imports inside
functions count, since they run too; imports under ``if TYPE_CHECKING:`` do not, since they never
run. The graph is read from the source, so a cycle is found whether or not a test walks into it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracekit
import tracekit_cli

PACKAGES = {
    "tracekit": Path(tracekit.__file__).parent,
    "tracekit_cli": Path(tracekit_cli.__file__).parent,
}


def module_files() -> dict[str, Path]:
    """Every module of both packages by dotted name (a package by its ``__init__``)."""
    found = {}
    for name, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [name, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def imported_names(module: str) -> Iterator[str]:
    """Dotted names ``module`` imports (``from a import b``: ``a.b``), not type-checking ones."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for n in _type_checking_blocks(tree) for n in ast.walk(n)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(package, node.level, node.module)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _absolute(package: str, level: int, name: str | None) -> str:
    """``from .nodes import`` in ``tracekit.diff.model`` names ``tracekit.diff.nodes``."""
    if level == 0:
        return name or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{name}" if name else base


def _type_checking_blocks(tree: ast.Module) -> Iterator[ast.stmt]:
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from node.body


def known_module(name: str) -> str | None:
    """The module ``name`` is or lives in (``tracekit.semconv.X`` lives in ``tracekit.semconv``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        targets = {known_module(name) for name in imported_names(module)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "tracekit.wsgi" in graph["tracekit.flask"]
    assert "tracekit._http.server" in graph["tracekit.wsgi"]
    assert "tracekit.store.exporter" in graph["tracekit._runtime.setup"]  # a lazy import counts
    assert "tracekit.diff.nodes" in graph["tracekit.diff.model"]  # a relative import too


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_library_never_imports_the_cli_side() -> None:
    """Library code imports neither the CLI package nor click or rich, even lazily."""
    offending = {
        (module, name)
        for module in MODULES
        if not module.startswith("tracekit_cli")
        for name in imported_names(module)
        if name.split(".")[0] in ("tracekit_cli", "click", "rich")
    }
    assert offending == set()


PROBE = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed[name] = f"{type(error).__name__}: {error}"
print(json.dumps(failed))
"""


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_module_imports_in_a_fresh_interpreter(package: str) -> None:
    names = [m for m in MODULES if m.split(".")[0] == package and not m.endswith("__main__")]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *names], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}
