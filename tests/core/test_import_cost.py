"""Services must not pay for the operator side: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import tracekit, tracekit.asgi, tracekit.wsgi
print(json.dumps(sorted(sys.modules)))
"""

FORBIDDEN_PREFIXES = ("click", "rich", "tracekit.store", "tracekit.receiver", "tracekit_cli")
LAZY_TARGETS = ("requests", "httpx", "urllib3", "aiohttp", "flask", "django", "starlette")


def loaded_modules() -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(result.stdout)


def test_import_loads_neither_cli_nor_store_nor_receiver() -> None:
    modules = loaded_modules()

    assert "tracekit.asgi" in modules  # the probe did import what it claims
    offending = [m for m in modules if m.split(".")[0] in ("click", "rich", "tracekit_cli")]
    offending += [m for m in modules if m.startswith(FORBIDDEN_PREFIXES[2:4])]
    assert offending == []


def test_import_does_not_import_instrumented_libraries() -> None:
    modules = set(loaded_modules())

    assert [lib for lib in LAZY_TARGETS if lib in modules] == []
