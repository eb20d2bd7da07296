"""A Node.js service between two tracekit services, all exporting to ``tracekit collector``.

The estate of the docs' "Node.js services on the way" section: a FastAPI gateway under uvicorn
calls a Node service set up with ``@opentelemetry/sdk-node`` and its HTTP instrumentation
(configured by ``OTEL_*`` variables alone, as its users do), which calls a Starlette service. Each
is a process of its own; the collector is the real command; what the user sees is what
``tracekit trace``, ``search``, ``services`` and ``diff`` print.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from loopback import free_port
from tests.receiver._collector_process import start_collector
from tests.receiver._js_sdk import JS, start_service, stop_service

from tracekit.store import Store

CLI = [sys.executable, "-c", "from tracekit_cli.main import main; main()"]

GATEWAY = textwrap.dedent(
    """
    import os, socket, sys
    import httpx, tracekit, uvicorn
    from fastapi import FastAPI
    from tracekit.asgi import TracekitMiddleware

    tracekit.init(service_name="gateway")
    app = FastAPI()
    app.add_middleware(TracekitMiddleware)

    @app.get("/checkout/{order_id}")
    async def checkout(order_id: str) -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            reserved = await client.get(f"{os.environ['NODE']}/reserve/{order_id}")
        return {"price": reserved.text}

    sock = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print("listening", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    """
)
PRICING = textwrap.dedent(
    """
    import logging, socket, sys
    import tracekit, uvicorn
    from opentelemetry import trace
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from tracekit.asgi import TracekitMiddleware

    tracekit.init(service_name="pricing")
    tracer = trace.get_tracer("pricing")

    async def price(request):
        logging.getLogger("pricing").warning("pricing %s", request.path_params["order_id"])
        for line in range(8):  # one query per line of the order
            with tracer.start_as_current_span("SELECT order_lines"):
                pass
        return PlainTextResponse("12.50")

    app = TracekitMiddleware(Starlette(routes=[Route("/price/{order_id}", price)]))
    sock = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    print("listening", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    """
)


@dataclass
class Estate:
    gateway: str  # its URL
    node: str  # the Node service's URL
    store: Path


@pytest.fixture
def estate(request: pytest.FixtureRequest, node: str, tmp_path: Path) -> Iterator[Estate]:
    """The collector, then pricing, the Node service and the gateway; the Node service's
    ``OTEL_PROPAGATORS`` is the test's parameter (unset: the SDK's default). Its exporters
    (traces, logs and metrics, the last at its stop) must have reported no error."""
    store = tmp_path / "tracekit.db"
    collector, port = start_collector(store)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    base |= {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    base |= {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BLRP_SCHEDULE_DELAY": "100"}
    node_env = {"OTEL_SERVICE_NAME": "inventory-node", "OTEL_LOG_LEVEL": "error"}
    node_env |= {"OTEL_LOGS_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp"}
    if request.param is not None:
        node_env["OTEL_PROPAGATORS"] = request.param
    ports = {name: free_port() for name in ("pricing", "node", "gateway")}
    node_errors: list[str] = []
    with contextlib.ExitStack() as running:  # stopped in the reverse order, each whatever happens
        running.callback(_stop_collector, collector, estate_said := [])
        for name, command, env in [
            ("pricing", [sys.executable, "-c", PRICING], {}),
            ("node", [node, str(JS / "sdk_service.js")], node_env),
            ("gateway", [sys.executable, "-c", GATEWAY], {}),
        ]:
            env |= {"TRACEKIT_METRICS_PORT": str(free_port()), "PORT": str(ports[name])}
            env |= {"PEER": f"http://127.0.0.1:{ports['pricing']}"}
            env |= {"NODE": f"http://127.0.0.1:{ports['node']}"}
            process = start_service([*command, str(ports[name])], {**base, **env})
            if name == "node":
                running.callback(lambda process=process: node_errors.append(stop_service(process)))
            else:
                running.callback(stop_service, process, -signal.SIGTERM)
        url = "http://127.0.0.1:{}".format
        yield Estate(url(ports["gateway"]), url(ports["node"]), store)
    assert node_errors == [""], node_errors
    # (Node's metrics, the HTTP instrumentation's, go at its stop: acknowledged, not stored)
    assert "metrics received and dropped" in estate_said[0]


def _stop_collector(collector: subprocess.Popen[str], said: list[str]) -> None:
    collector.terminate()
    collector.wait(30)
    said.append(collector.stderr.read() if collector.stderr else "")


def _checkout(estate: Estate, correlation_id: str) -> None:
    request = urllib.request.Request(
        f"{estate.gateway}/checkout/{correlation_id}", headers={"X-Correlation-ID": correlation_id}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read() == b'{"price":"12.50"}'


def _stored(estate: Estate, requests: int) -> None:
    """Wait until every service has exported its part of ``requests`` requests: its SERVER
    spans (each ends after the rest of its work) and the two log lines of each."""

    def done() -> bool:
        servers = [span for span in reader.spans_since(0) if span.kind == "SERVER"]
        return len(servers) >= 3 * requests and reader.count_logs() >= 2 * requests

    with Store(estate.store) as reader:
        wait_for(done, 15, f"{requests} requests stored")


def _cli(estate: Estate, *args: str) -> tuple[int, Any]:
    shown = subprocess.run(
        [*CLI, *args, "--store", str(estate.store), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.stderr == "" or shown.returncode == 1, shown.stderr
    return shown.returncode, json.loads(shown.stdout)


@pytest.mark.parametrize("estate", [None], indirect=True, ids=["sdk-default-propagators"])
def test_a_request_through_node_is_one_path_in_every_command(estate: Estate) -> None:
    """One trace, the Node hop in its place under its service name, the correlation ID carried
    on through Node in baggage, the Node service's log line under its span."""
    _checkout(estate, "order-1")
    _checkout(estate, "order-2")
    _stored(estate, 2)
    code, path = _cli(estate, "trace", "order-1")
    assert code == 0 and len(path["trace_ids"]) == 1
    assert path["services"] == ["gateway", "inventory-node", "pricing"]
    assert [(h["from_service"], h["to_service"], h["type"]) for h in path["hops"]] == [
        ("gateway", "inventory-node", "http"),
        ("inventory-node", "pricing", "http"),
    ]
    by_id = {span["span_id"]: span for span in path["spans"]}
    node_server, node_client = (
        next(s for s in path["spans"] if (s["service"], s["kind"]) == ("inventory-node", kind))
        for kind in ("SERVER", "CLIENT")
    )
    assert by_id[node_server["parent_span_id"]]["service"] == "gateway"
    assert by_id[node_server["parent_span_id"]]["kind"] == "CLIENT"
    assert node_client["parent_span_id"] == node_server["span_id"]
    priced = next(s for s in path["spans"] if s["name"] == "GET /price/{order_id}")
    assert priced["parent_span_id"] == node_client["span_id"]
    assert priced["attributes"]["correlation.id"] == "order-1"  # from baggage
    assert {(log["service"], log["body"], log["span_id"]) for log in path["logs"]} == {
        ("inventory-node", "reserving order-1", node_server["span_id"]),
        ("pricing", "pricing order-1", priced["span_id"]),
    }
    code, found = _cli(estate, "search")
    assert code == 0
    assert [(r["correlation_id"], r["root_service"]) for r in found["requests"]] == [
        ("order-2", "gateway"),
        ("order-1", "gateway"),
    ]
    code, graph = _cli(estate, "services")
    assert code == 0
    assert sorted((e["from"], e["to"], e["calls"]) for e in graph["edges"]) == [
        ("gateway", "inventory-node", 2),
        ("inventory-node", "pricing", 2),
    ]
    code, diff = _cli(estate, "diff", "order-1", "order-2")
    assert code in (0, 1)  # the same calls; their times may differ
    assert {change["kind"] for change in diff["changes"]} <= {"duration", "timing"}


@pytest.mark.parametrize("estate", ["tracecontext"], indirect=True, ids=["no-baggage"])
def test_a_request_whose_id_node_dropped_is_named_by_the_id_it_entered_with(
    estate: Estate,
) -> None:
    """With no ``baggage`` among its propagators, Node carries the trace but not the
    correlation ID, and pricing makes up one of its own, on more spans than the gateway's.
    ``search`` named the request by the gateway's ID, but ``trace`` typed with its trace ID
    named it by pricing's (the one most spans carry), and joined the traces of that one."""
    _checkout(estate, "order-3")
    _stored(estate, 1)
    code, found = _cli(estate, "search")
    assert code == 0
    (listed,) = found["requests"]
    assert listed["correlation_id"] == "order-3"
    code, path = _cli(estate, "trace", listed["trace_id"])
    assert code == 0 and path["correlation_id"] == "order-3"
    assert path["services"] == ["gateway", "inventory-node", "pricing"]
    priced = next(s for s in path["spans"] if s["name"] == "GET /price/{order_id}")
    assert priced["attributes"]["correlation.id"] != "order-3"  # what Node did not carry


@pytest.mark.parametrize("estate", [None], indirect=True, ids=["sdk-default-propagators"])
def test_a_request_entering_at_node_is_listed_as_diff_names_it(estate: Estate) -> None:
    """Node's HTTP server span has no route: the SDK names it ``GET``, its path in ``url.path``.
    ``search`` listed each such request as "inventory-node: GET", where ``diff`` names the same
    entry "GET /reserve/{id}"; it lists it so too."""
    for order in ("42", "43"):
        headers = {"X-Correlation-ID": f"order-{order}"}  # not carried: Node does not read it
        request = urllib.request.Request(f"{estate.node}/reserve/{order}", headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.read() == b"12.50"
    with Store(estate.store) as reader:
        wait_for(lambda: sum(s.kind == "SERVER" for s in reader.spans_since(0)) >= 4, 15, "stored")
    code, found = _cli(estate, "search")
    assert code == 0
    listed = [(r["root_service"], r["root_name"]) for r in found["requests"]]
    assert listed == [("inventory-node", "GET /reserve/{id}")] * 2
    shown = subprocess.run([*CLI, "search", "--store", str(estate.store), "--format", "text"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.stdout.count("inventory-node: GET /reserve/{id}") == 2
    first, second = (r["trace_id"] for r in found["requests"])
    code, diff = _cli(estate, "diff", first, second)
    assert "GET /reserve/{id}" in {node["name"] for node in diff["nodes"]}
