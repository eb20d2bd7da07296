"""Every public module pins its surface in a sorted ``__all__`` (in the style of httpx's test).

A public module is one whose dotted name has no part starting with ``_``. Its ``__all__`` must
name everything it defines with a public name (functions, classes, constants), each name once, in
ruff's isort-style order (RUF022), and every name in it must exist. ``import tracekit`` leaves only
public names in the package's namespace, and its public modules are reachable as attributes
(``tracekit.wsgi.TracekitMiddleware``) without being imported by ``import tracekit``.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracekit


def public_modules() -> list[str]:
    found = ["tracekit"]
    for info in pkgutil.walk_packages(tracekit.__path__, "tracekit."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


PUBLIC_MODULES = public_modules()


def natural_isort_key(name: str) -> tuple[int, list[object]]:
    """RUF022's order: SCREAMING_SNAKE_CASE, then CamelCase, then the rest; numbers as numbers."""
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    parts = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    return group, parts


def defined_public_names(module: types.ModuleType) -> set[str]:
    """Names the module's own source binds at top level (imports aside), without a ``_``."""
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    return {name for name in _bound(tree.body) if not name.startswith("_")}


def _bound(statements: list[ast.stmt]) -> Iterator[str]:
    for node in statements:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            yield from _bound(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _bound(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                yield from _bound(handler.body)


def test_public_modules_are_found() -> None:
    assert {"tracekit", "tracekit.asgi", "tracekit.wsgi", "tracekit.store"} <= set(PUBLIC_MODULES)
    assert not [m for m in PUBLIC_MODULES if "._" in m]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_names_what_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    exported = list(module.__all__)
    assert all(isinstance(n, str) for n in exported)
    assert exported == sorted(set(exported), key=natural_isort_key), f"{name}.__all__ unsorted"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what does not exist"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_name_is_exported(name: str) -> None:
    module = importlib.import_module(name)
    unlisted = sorted(defined_public_names(module) - set(module.__all__))
    assert unlisted == [], f"{name} defines public names missing from __all__"


PROBE = """
import json, sys, types
import tracekit
before = sorted(m for m in sys.modules if m.startswith("tracekit."))
public = sorted(n for n in vars(tracekit) if not n.startswith("_"))
modules = sorted(n for n in public if isinstance(getattr(tracekit, n), types.ModuleType))
listed = dir(tracekit)
app = tracekit.wsgi.TracekitMiddleware(lambda environ, start_response: [])
asgi = tracekit.asgi.TracekitMiddleware
try:
    tracekit.no_such_module
    missing = "no error"
except AttributeError as error:
    missing = str(error)
print(json.dumps({"before": before, "public": public, "modules": modules, "dir": listed,
                  "dir_after": dir(tracekit),
                  "app": type(app).__module__, "missing": missing}))
"""


@pytest.fixture(scope="module")
def fresh_import() -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_package_namespace_holds_only_public_names(fresh_import: dict[str, object]) -> None:
    public = set(fresh_import["public"])  # type: ignore[arg-type]
    modules = set(fresh_import["modules"])  # type: ignore[arg-type]
    assert public - modules == set(tracekit.__all__) - {"__version__"}
    listed = fresh_import["dir"]
    assert listed == sorted({*tracekit.__all__, "correlation"})  # the one module it loads
    assert {"asgi", "wsgi"} <= set(fresh_import["dir_after"])  # type: ignore[arg-type]


def test_public_modules_are_attributes_without_being_imported_by_import_tracekit(
    fresh_import: dict[str, object],
) -> None:
    before = fresh_import["before"]
    assert "tracekit.wsgi" not in before and "tracekit.asgi" not in before  # type: ignore[operator]
    assert fresh_import["app"] == "tracekit.wsgi"
    assert fresh_import["missing"] == "module 'tracekit' has no attribute 'no_such_module'"


def test_one_public_class_per_name() -> None:
    """Two public classes of one name (the store's and the service map's ``ServiceEdge`` were)
    are easy to confuse; only the middleware is one name per framework, by design."""
    classes: dict[str, set[str]] = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for member in module.__all__:
            value = getattr(module, member)
            if isinstance(value, type):
                classes.setdefault(member, set()).add(f"{value.__module__}.{value.__qualname__}")
    clashes = {k: sorted(v) for k, v in classes.items() if len(v) > 1}
    assert clashes.pop("TracekitMiddleware") == [
        "tracekit.asgi.TracekitMiddleware",
        "tracekit.django.TracekitMiddleware",
        "tracekit.wsgi.TracekitMiddleware",
    ]
    assert clashes == {}
