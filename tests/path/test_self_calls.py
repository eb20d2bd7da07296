"""A service that calls its own endpoint over HTTP: a hop like any other.

``shop`` (Flask, ``tracekit.flask.init_app``) runs in a process of its own exporting into a real
store (``TRACEKIT_EXPORTER=store``), as a user runs it; its ``/checkout`` asks its own
``/price/<sku>`` twice with requests (a monolith reaching a module through its public API, or
a load balancer sending the call back to the same service). The real CLI reads the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conditions import wait_for

from tracekit.records import BackendError
from tracekit.store import Store
from tracekit_cli.main import cli

SHOP = textwrap.dedent(
    """
    import flask, requests
    import tracekit, tracekit.flask
    from werkzeug.serving import make_server

    tracekit.init("shop")
    app = flask.Flask("shop")
    tracekit.flask.init_app(app)

    @app.route("/checkout")
    def checkout():
        prices = [requests.get(f"{SELF}/price/{sku}", timeout=10).text for sku in ("a-1", "b-2")]
        return ",".join(prices)

    @app.route("/price/<sku>")
    def price(sku):
        return "7"

    server = make_server("127.0.0.1", 0, app, threaded=True)
    SELF = f"http://127.0.0.1:{server.server_port}"
    print(server.server_port, flush=True)
    server.serve_forever()
    """
)
SPANS = 5  # checkout's server span, and for each price a client span and a server span


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store holding one checkout (correlation ID ``self-call``) of the real shop."""
    path = tmp_path_factory.mktemp("self") / "tracekit.db"
    env = {**os.environ, "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(path),
           "TRACEKIT_METRICS_PORT": "0", "OTEL_BSP_SCHEDULE_DELAY": "50"}  # fmt: skip
    shop = subprocess.Popen(
        [sys.executable, "-c", SHOP], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert shop.stdout is not None
        url = f"http://127.0.0.1:{int(shop.stdout.readline())}"
        answer = httpx.get(f"{url}/checkout", headers={"X-Correlation-ID": "self-call"})
        assert answer.text == "7,7"
        wait_for(lambda: _stored(path) >= SPANS, 20, f"{SPANS} spans", ignoring=(BackendError,))
    finally:
        shop.terminate()
        shop.wait(10)
    yield path


def _stored(path: Path) -> int:
    with Store(path) as opened:
        return len(opened.spans_by_correlation_id("self-call"))


def run(store: Path, *args: str) -> Any:
    # 200 columns: the text view's lines whole, whatever terminal the suite runs in
    result = CliRunner().invoke(cli, [*args, "--store", str(store)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_a_call_to_its_own_endpoint_is_a_hop(store: Path) -> None:
    """Neither call was a hop: ``0 hops``, no line under "hops:", though each crossed the
    network as a call to another service does (a message a service sends itself was one)."""
    doc = json.loads(run(store, "trace", "self-call", "--format", "json"))

    spans = {span["span_id"]: span for span in doc["spans"]}
    clients = [s for s in doc["spans"] if s["kind"] == "CLIENT"]
    hops = [(h["from_service"], h["to_service"], h["type"], h["destination"], h["latency_ms"],
             spans[h["from_span_id"]]["kind"], spans[h["to_span_id"]]["kind"])
            for h in doc["hops"]]  # fmt: skip
    expected = ("shop", "shop", "http", "GET /price/{sku}")
    assert hops == [(*expected, c["duration_ms"], "CLIENT", "SERVER") for c in clients]
    text = run(store, "trace", "self-call", "--format", "text")
    assert "1 service, 1 trace, 2 hops, 0 errors" in text.splitlines()[1]
    below = text.split("\nhops:\n")[1].splitlines()
    assert [line.split("  latency")[0] for line in below[:2]] == [
        "  shop -> shop  http GET /price/{sku}"
    ] * 2


def test_the_service_map_shows_the_calls_to_itself(store: Path) -> None:
    rows = run(store, "services", "--since", "1d", "--format", "text").splitlines()
    assert [row.split()[:4] for row in rows[1:]] == [["shop", "shop", "http", "2"]]
