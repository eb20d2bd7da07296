"""Services must not pay for the operator side: checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from loopback import free_port

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


INIT_PROBE = """
import json, sys
import tracekit
tracekit.init("probe", metrics_port=0)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_init_imports_no_http_client_nor_grpc_for_the_otlp_exporter(protocol: str) -> None:
    """The OTLP exporter is made at the first export: ``init`` in gunicorn's master
    (``--preload``) imported ``requests`` and ``urllib3`` before the gevent worker patched
    ``ssl``, and the app's HTTPS calls failed (``tests/lifecycle/test_gevent_workers_https.py``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    result = subprocess.run(
        [sys.executable, "-c", INIT_PROBE],
        env={
            **clean,
            "TRACEKIT_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody there
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    modules = set(json.loads(result.stdout.splitlines()[-1]))

    assert "tracekit._runtime.export_watch" in modules  # the probe did make the OTLP pipeline
    assert [m for m in ("requests", "urllib3", "grpc") if m in modules] == []
