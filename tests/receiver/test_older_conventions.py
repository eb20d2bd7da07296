"""Spans written under the older semantic conventions read as well as stable ones.

An agent sends (OTLP/JSON, as many Java, Go and .NET agents still name things) an HTTP call from
``inventory`` to ``pricing`` that fails with 503, and a message from ``orders`` to ``billing``
through RabbitMQ. ``tracekit trace`` must show the same hops, routes and errors as for the same
spans under the stable names, and ``tracekit services`` the same edges.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.receiver.conftest import post

from tracekit.path import reconstruct, service_map
from tracekit.receiver import Receiver
from tracekit.store import Store

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OLD = {
    "client": {"http.method": "GET", "http.url": "http://pricing:8080/prices/42?currency=EUR",
               "net.peer.name": "pricing", "http.status_code": 503},
    "server": {"http.method": "GET", "http.target": "/prices/42?currency=EUR",
               "http.status_code": 503, "net.host.name": "pricing"},
    "producer": {"messaging.system": "rabbitmq", "messaging.destination": "orders.created",
                 "messaging.operation": "publish"},
    "consumer": {"messaging.system": "rabbitmq", "messaging.destination": "orders.created",
                 "messaging.operation": "process"},
}  # fmt: skip
STABLE = {
    "client": {"http.request.method": "GET",
               "url.full": "http://pricing:8080/prices/42?currency=EUR",
               "server.address": "pricing", "http.response.status_code": 503},
    "server": {"http.request.method": "GET", "url.path": "/prices/42",
               "http.response.status_code": 503, "server.address": "pricing"},
    "producer": {"messaging.system": "rabbitmq", "messaging.destination.name": "orders.created",
                 "messaging.operation.type": "publish"},
    "consumer": {"messaging.system": "rabbitmq", "messaging.destination.name": "orders.created",
                 "messaging.operation.type": "process"},
}  # fmt: skip


def _value(value: object) -> dict[str, object]:
    return {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}


def _span(
    service: str, span_id: str, parent: str, kind: int, role: str, names: dict[str, Any], at: int
) -> dict[str, object]:
    attributes = [{"key": k, "value": _value(v)} for k, v in names[role].items()]
    status = {"code": 2} if role in ("client", "server") else {}
    span = {"traceId": TRACE, "spanId": span_id, "parentSpanId": parent, "name": f"{role} op",
            "kind": kind, "startTimeUnixNano": str(at), "endTimeUnixNano": str(at + 20_000_000),
            "attributes": attributes, "status": status}  # fmt: skip
    return {"resource": {"attributes": [{"key": "service.name", "value": _value(service)}]},
            "scopeSpans": [{"spans": [span]}]}  # fmt: skip


def _request(names: dict[str, Any]) -> bytes:
    now = time.time_ns() - 10**9
    spans = [
        _span("gateway", "0000000000000001", "", 2, "none", {"none": {}}, now),
        _span("inventory", "0000000000000002", "0000000000000001", 3, "client", names, now + 1),
        _span("pricing", "0000000000000003", "0000000000000002", 2, "server", names, now + 2),
        _span("orders", "0000000000000004", "0000000000000001", 4, "producer", names, now + 3),
        _span("billing", "0000000000000005", "0000000000000004", 5, "consumer", names, now + 4),
    ]
    return json.dumps({"resourceSpans": spans}).encode()


def _view(receiver: Receiver, reader: Store, names: dict[str, Any]) -> dict[str, object]:
    reply = post(receiver, "/v1/traces", _request(names), {"Content-Type": "application/json"})
    assert reply.status == 200
    path = reconstruct(reader, TRACE)
    assert path is not None
    edges = service_map(reader.spans_by_trace_ids([TRACE]))
    return {
        "hops": [
            (h.from_service, h.to_service, h.type, h.system, h.destination) for h in path.hops
        ],
        "errors": sorted((e.service, e.message) for e in path.errors),
        "edges": [(e.from_service, e.to_service, e.type, e.calls, e.errors) for e in edges],
    }


@pytest.mark.parametrize("names", [OLD, STABLE], ids=["older", "stable"])
def test_hops_routes_and_errors_read_alike(
    names: dict[str, Any], receiver: Receiver, reader: Store
) -> None:
    view = _view(receiver, reader, names)
    assert view["hops"] == [
        ("inventory", "pricing", "http", "http", "GET /prices/42"),
        ("orders", "billing", "messaging", "rabbitmq", "orders.created"),
    ]
    assert ("pricing", "HTTP 503") in view["errors"]  # not a bare "error"
    assert ("inventory", "pricing", "http", 1, 1) in view["edges"]  # type: ignore[operator]


def test_tracekit_trace_shows_the_older_names_hop(receiver: Receiver, store_path: Path) -> None:
    assert (
        post(receiver, "/v1/traces", _request(OLD), {"Content-Type": "application/json"}).status
        == 200
    )
    done = subprocess.run(
        [sys.executable, "-c", "from tracekit_cli.main import main; main()", "trace", TRACE,
         "--store", str(store_path), "--format", "text"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "GET /prices/42" in done.stdout and "HTTP 503" in done.stdout
    assert "orders.created" in done.stdout
