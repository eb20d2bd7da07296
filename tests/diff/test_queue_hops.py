"""``tracekit diff`` across queue hops: request/reply over a queue (web asks pricing over
RabbitMQ and waits for the reply on a queue of its own) and a redelivered message. Built
through real OpenTelemetry SDK providers into a real store (``sdk_requests``).
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from diff_cli import diff_document
from sdk_requests import Deployment, Request, _carried, _context

from tracekit_cli.main import cli


def quote(request: Request, pricing_ms: float) -> None:
    """web: ask (10-12 ms), pricing works ``pricing_ms``, its reply taken 3 ms after sent."""
    root = request.entry("web", "/quote", 0, 60 + pricing_ms)
    ask = request.publish(root, "rpc", 10, 12)
    work = request.consume("pricing", ask, 15, 20 + pricing_ms)
    answer = request.publish(work, "reply", 18 + pricing_ms, 19 + pricing_ms)
    request.consume("web", answer, 22 + pricing_ms, 24 + pricing_ms)


def test_a_slower_replier_is_where_the_time_went_not_its_caller(deployment: Deployment) -> None:
    """pricing took 200 ms longer in B. The diff also reported the caller's self time,
    78 -> 278 ms, as a change of its own: its wait for the reply counted as its own work. The
    wait for a reply is now no self time, like the wait for a synchronous call."""
    a, b = deployment.request(), deployment.request()
    quote(a, 20)
    quote(b, 220)
    deployment.flush()
    store = str(deployment.store.path)
    result = CliRunner().invoke(
        cli, ["diff", a.correlation_id, b.correlation_id, "--store", store, "--format", "json"]
    )
    assert result.exit_code == 1, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    labels = {n["id"]: n["label"] for n in doc["nodes"]}
    timed = [labels.get(c["node"]) for c in doc["changes"] if c["kind"] == "timing"]
    assert "web: POST /quote" not in timed
    assert doc["headline"] == "+200.0 ms end to end (+250%): 100% in web -> pricing: rpc"


def test_a_redelivery_waited_in_the_queue_from_the_failed_delivery(deployment: Deployment) -> None:
    """In B the worker's first delivery was rejected after 25 ms and the broker delivered the
    message again 1 s later. The diff's queue wait counted the failed handler's 25 ms as time queued
    (3 -> 1031 ms); the message was queued 3 ms, then 1000 ms after the failure."""
    a, b = deployment.request(), deployment.request()
    for request in (a, b):
        root = request.entry("shop", "/order", 0, 20)
        sent = request.publish(root, "orders", 10, 12)
        request.consume("worker", sent, 15, 40)
        if request is b:  # the first delivery was nacked: the broker delivers it again
            request.consume("worker", sent, 1040, 1060)
    deployment.flush()
    store = str(deployment.store.path)
    result = CliRunner().invoke(
        cli, ["diff", a.correlation_id, b.correlation_id, "--store", store, "--format", "json"]
    )
    doc: dict[str, Any] = json.loads(result.stdout)
    worker = next(n for n in doc["nodes"] if n["label"] == "shop -> worker: orders")
    assert (worker["a"]["queue_wait_ms"], worker["b"]["queue_wait_ms"]) == (3.0, 1003.0)


def test_a_longer_long_poll_before_the_request_is_no_difference(deployment: Deployment) -> None:
    """A pull consumer's long poll began 50 ms before request A and 400 ms before request B;
    the requests were alike. The diff said +350 ms end to end (+175%), then, with the path
    counting the poll from its message, still a self time 167 -> 517 ms of the hop: the poll's
    wait before the message arrived is no time of the request's."""
    a, b = deployment.request(), deployment.request()
    for request, poll in ((a, -50), (b, -400)):
        root = request.entry("shop", "/order", 0, 120)
        sent = request.publish(root, "orders", 100, 105)
        receive = request.span("worker", "receive orders", "CONSUMER", poll, 112,
                               attrs={"messaging.system": "rabbitmq"})  # fmt: skip
        request.span("worker", "process orders", "CONSUMER", 112, 150, _context(receive),
                     links=[sent], attrs={"messaging.system": "rabbitmq",
                                          "messaging.destination.name": "orders"})  # fmt: skip
    deployment.flush()
    store = str(deployment.store.path)
    result = CliRunner().invoke(
        cli, ["diff", a.correlation_id, b.correlation_id, "--store", store, "--format", "json"]
    )
    doc: dict[str, Any] = json.loads(result.stdout)
    assert (result.exit_code, doc["changes"]) == (0, [])
    assert (doc["a"]["duration_ms"], doc["b"]["duration_ms"]) == (150.0, 150.0)


def timed_out_order(request: Request, stock_ms: float) -> None:
    """gateway gives up on orders after 90 ms (a read timeout); orders goes on: it waits
    ``stock_ms`` for stock, then publishes, and mailer takes the message 40 ms later."""
    root = request.entry("gateway", "/orders", 0, 100)
    client = request.span("gateway", "POST", "CLIENT", 10, 100, _context(root),
                          attrs={"http.request.method": "POST"}, error="ReadTimeout")  # fmt: skip
    route = {"http.route": "/orders", "http.request.method": "POST"}
    orders = request.span("orders", "POST /orders", "SERVER", 12, stock_ms + 40,
                          _carried(client), attrs=route)  # fmt: skip
    request.call(orders, "stock", "/reserve", 20, 20 + stock_ms)
    sent = request.publish(orders, "orders.created", stock_ms + 25, stock_ms + 30)
    request.consume("mailer", sent, stock_ms + 70, stock_ms + 80)


def test_work_after_the_caller_timed_out_is_where_the_time_went_not_the_queue(
    deployment: Deployment,
) -> None:
    """The gateway timed out on orders, which went on to call stock and publish a message; in
    B stock took 200 ms longer. The diff put all of it in the queue wait (`100% queue wait on
    orders.created`) as if the message had waited from the timeout: the path stopped at the
    moment the caller gave up, and the wait was counted from there. The message waited 40 ms
    in both."""
    a, b = deployment.request(), deployment.request()
    timed_out_order(a, 220)
    timed_out_order(b, 420)
    deployment.flush()
    status, doc = diff_document(deployment.store.path, a.correlation_id, b.correlation_id)
    assert status == 1
    assert doc["headline"] == "+200.0 ms end to end (+67%): 100% in orders -> stock: GET /reserve"
    mailer = next(n for n in doc["nodes"] if n["label"] == "orders -> mailer: orders.created")
    assert (mailer["a"]["queue_wait_ms"], mailer["b"]["queue_wait_ms"]) == (40.0, 40.0)
