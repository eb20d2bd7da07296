"""``tracekit diff`` on a version that turned a synchronous call into a queue hop: one change.

Real services, each a process of its own exporting into one store (``TRACEKIT_EXPORTER=store``):
``gateway`` (Flask) answers ``/checkout/<how>``: ``call`` asks ``inventory`` over HTTP with
requests, ``queue`` publishes the same work onto a RabbitMQ queue with pika; ``inventory`` serves
``/stock/<sku>`` (Flask) and consumes that queue with pika in the same process. Both are the
same service name either way, so a user reading the diff wants to be told the call became a
message, not that one hop went and an unrelated one came.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conditions import need, wait_for
from diff_cli import diff_document

from tracekit.records import BackendError
from tracekit.store import Store
from tracekit_cli.main import cli

AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

SERVICE = textwrap.dedent(
    """
    import os, sys, threading, time
    import flask, pika, requests
    import tracekit, tracekit.flask
    from werkzeug.serving import make_server

    NAME, QUEUE = sys.argv[1], os.environ["QUEUE"]
    tracekit.init(NAME)
    app = flask.Flask(NAME)
    tracekit.flask.init_app(app)

    def channel():
        connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
        opened = connection.channel()
        opened.queue_declare(QUEUE)
        return connection, opened

    @app.route("/checkout/<how>")
    def checkout(how):
        if how == "call":
            return requests.get(os.environ["INVENTORY"] + "/stock/sku-42", timeout=10).text
        connection, opened = channel()
        opened.basic_publish("", QUEUE, b"sku-42")
        connection.close()
        return "queued"

    @app.route("/stock/<sku>")
    def stock(sku):
        time.sleep(0.01)
        return "40"

    def consume():
        def handle(opened, method, properties, body):
            time.sleep(0.01)
            opened.basic_ack(method.delivery_tag)
        connection, opened = channel()
        opened.basic_consume(QUEUE, handle)
        opened.start_consuming()

    if NAME == "inventory":
        threading.Thread(target=consume, daemon=True).start()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()
    """
)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The store the services export into, and gateway's base URL."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except Exception:
        need(False, f"RabbitMQ at {AMQP_URL}")
    store = tmp_path_factory.mktemp("swap") / "tracekit.db"
    queue = f"tracekit-test-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store),
           "TRACEKIT_METRICS_PORT": "0", "OTEL_BSP_SCHEDULE_DELAY": "50",
           "AMQP_URL": AMQP_URL, "QUEUE": queue}  # fmt: skip
    started: list[subprocess.Popen[str]] = []
    try:
        for name in ("inventory", "gateway"):
            process = subprocess.Popen(
                [sys.executable, "-c", SERVICE, name], env=env, stdout=subprocess.PIPE, text=True
            )
            started.append(process)
            assert process.stdout is not None
            env["INVENTORY"] = f"http://127.0.0.1:{int(process.stdout.readline())}"
        yield store, env["INVENTORY"]
    finally:
        for process in started:
            process.terminate()
            process.wait(10)
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        connection.channel().queue_delete(queue)
        connection.close()


def checkout(services: tuple[Path, str], how: str) -> str:
    """One checkout through gateway, its three spans (server, client or producer, and
    inventory's server or consumer) awaited in the store; its correlation ID."""
    correlation_id = f"swap-{how}-{uuid.uuid4().hex[:8]}"
    answer = httpx.get(
        f"{services[1]}/checkout/{how}", headers={"X-Correlation-ID": correlation_id}
    )
    assert answer.status_code == 200, answer.text

    def spans() -> int:
        with Store(services[0]) as store:
            traces = {s.trace_id for s in store.spans_by_correlation_id(correlation_id)}
            return len(store.spans_by_trace_ids(traces)) if traces else 0

    wait_for(lambda: spans() >= 3, 20, f"3 spans of {correlation_id}", ignoring=(BackendError,))
    return correlation_id


@pytest.mark.parametrize(("a", "b"), [("call", "queue"), ("queue", "call")])
def test_a_call_that_became_a_message_is_one_change(
    services: tuple[Path, str], a: str, b: str
) -> None:
    """The diff said ``removed gateway -> inventory: GET /stock/{sku}`` and ``added gateway ->
    inventory: tracekit-test-…``: two changes, as if one call went and an unrelated one came."""
    a_id, b_id = checkout(services, a), checkout(services, b)
    status, doc = diff_document(services[0], a_id, b_id)

    assert status == 1
    queue = next(n["name"] for n in doc["nodes"] if n["kind"] == "messaging")
    words = {"call": "call GET /stock/{sku}", "queue": f"message {queue}"}
    said = f"gateway -> inventory: {words[a]} became {words[b]}"
    structure = [c for c in doc["changes"] if c["category"] == "structure"]
    assert [(c["kind"], c["message"]) for c in structure] == [("added", said)]
    labels = {n["id"]: n["label"] for n in doc["nodes"]}
    replaced = [labels[structure[0]["node"]], *(labels[n] for n in structure[0]["related"])]
    hops = {
        "call": "gateway -> inventory: GET /stock/{sku}",
        "queue": f"gateway -> inventory: {queue}",
    }
    assert replaced == [hops[b], hops[a]]
    shown = CliRunner().invoke(
        cli,
        ["diff", a_id, b_id, "--store", str(services[0]), "--format", "text"],
        env={"COLUMNS": "200"},  # one line each, whatever the terminal the tests run in
    )
    changes = shown.stdout.split("\nchanges (")[1].split("\n\n")[0]
    assert [line for line in changes.splitlines() if "structure" in line] == [
        f"  structure  {said}"
    ]
