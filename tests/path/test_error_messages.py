"""What the path says a failed span failed of, for spans other SDKs and frameworks export.

FastAPI (0.120 and later) opens spans of its own around an endpoint (``fastapi.endpoint``) and,
as OpenTelemetry's conventions allow, marks one that raised with ``error.type`` and an ERROR
status alone: no description, no exception event.
"""

from __future__ import annotations

import json

import requests
from click.testing import CliRunner
from loopback import free_port
from stopping import Service

from tracekit_cli.main import cli

APP = """
import tracekit
from fastapi import FastAPI
from tracekit.asgi import TracekitMiddleware

tracekit.init("shop")
app = FastAPI()
app.add_middleware(TracekitMiddleware)


@app.get("/orders/{order_id}")
def order(order_id: int) -> dict[str, int]:
    raise LookupError(f"no order {order_id}")
"""


def test_a_span_marked_failed_by_error_type_alone_is_named_by_it(service: Service) -> None:
    """A FastAPI endpoint that raised: ``tracekit trace`` listed FastAPI's span as failing
    of "error" (`! ERROR error`, `shop (…): error`), where it says the exception's type."""
    service.write("app.py", APP)
    port = free_port()
    service.start("-m", "uvicorn", "app:app", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url + "/openapi.json")
    answer = requests.get(url + "/orders/7", headers={"X-Correlation-ID": "order-7"}, timeout=10)
    assert answer.status_code == 500
    service.terminate()

    result = CliRunner().invoke(
        cli, ["trace", "order-7", "--store", str(service.store), "--format", "json"]
    )
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    doc = json.loads(result.stdout)
    names = {s["span_id"]: s["name"] for s in doc["spans"]}
    errors = {names[e["span_id"]]: e["message"] for e in doc["errors"]}
    assert errors == {
        "GET /orders/{order_id}": "LookupError: no order 7",
        "fastapi.endpoint": "LookupError",
    }
    text = CliRunner().invoke(
        cli, ["trace", "order-7", "--store", str(service.store), "--format", "text"]
    )
    assert "! ERROR LookupError" in text.stdout and "! ERROR error" not in text.stdout
