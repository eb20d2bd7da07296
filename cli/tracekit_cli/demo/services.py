"""The demo's services, each run as its own process: ``python -m tracekit_cli.demo.services ROLE``.

    client -> gateway (ASGI) -> orders (WSGI) --orders.created--> fulfilment worker
    fulfilment -> inventory (WSGI); fulfilment --pricing.N--> pricing replicas 1..3
    pricing replicas --pricing.replies--> aggregator -> orders (WSGI)

Every service calls ``tracekit.init()`` and nothing else tracekit-specific but the middleware line
and the ``tracekit.messaging`` calls around the queue: what a real service would do. Injected
faults: the inventory fails for the discontinued SKU, and pricing replica 3 is slow on bulk orders.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from typing import Any

import requests

import tracekit
from tracekit import messaging
from tracekit_cli.demo.queue import Message, Queue, open_queue

log = logging.getLogger("tracekit.demo")

FAILING_SKU = "discontinued"
BULK_QUANTITY = 10
SLOW_REPLICA = 3
PRICING_REPLICAS = (1, 2, 3)


def _config() -> tuple[dict[str, int], Queue]:
    ports = json.loads(os.environ["TRACEKIT_DEMO_PORTS"])
    return ports, open_queue(os.environ["TRACEKIT_DEMO_QUEUE"])


def _url(ports: dict[str, int], service: str) -> str:
    return f"http://127.0.0.1:{ports[service]}"


def _publish(queue: Queue, destination: str, body: dict[str, Any]) -> None:
    headers: dict[str, str] = {}
    with messaging.publish(headers, system=queue.system, destination=destination):
        queue.put(destination, body, headers)


# --- HTTP services --------------------------------------------------------------------------


def gateway_app(ports: dict[str, int]) -> Any:
    """The public entry: an ASGI (Starlette) app that forwards checkouts to the orders service."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tracekit.asgi import TracekitMiddleware

    client = httpx.AsyncClient(timeout=10)  # one client: connections and TLS setup are reused

    async def checkout(request: Request) -> JSONResponse:
        order = await request.json()
        log.info("checkout for %s x%s", order.get("sku"), order.get("quantity"))
        response = await client.post(f"{_url(ports, 'orders')}/orders", json=order)
        return JSONResponse(response.json(), status_code=response.status_code)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/checkout", checkout, methods=["POST"]), Route("/health", health)]
    )
    return TracekitMiddleware(app)


def orders_app(queue: Queue) -> Any:
    """The orders service: a WSGI (Flask) app that queues new orders and records their prices."""
    from flask import Flask, request

    import tracekit.flask

    app = Flask("orders")

    @app.post("/orders")
    def create_order() -> tuple[dict[str, Any], int]:
        order = {**request.get_json(), "order_id": uuid.uuid4().hex[:12]}
        _publish(queue, "orders.created", order)
        log.info("order %s accepted", order["order_id"])
        return {"order_id": order["order_id"], "correlation_id": tracekit.correlation_id()}, 202

    @app.put("/orders/<order_id>/price")
    def set_price(order_id: str) -> tuple[dict[str, Any], int]:
        log.info("order %s priced at %s", order_id, request.get_json().get("price"))
        return {"order_id": order_id}, 200

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    return tracekit.flask.init_app(app)


def inventory_app() -> Any:
    """The inventory service (WSGI): stock levels; the discontinued SKU fails."""
    from flask import Flask

    import tracekit.flask

    app = Flask("inventory")

    @app.get("/stock/<sku>")
    def stock(sku: str) -> tuple[dict[str, Any], int]:
        time.sleep(0.02)  # a database lookup
        if sku == FAILING_SKU:
            log.error("no stock record for %s", sku)
            return {"error": "no stock record"}, 500
        return {"sku": sku, "available": 42}, 200

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    return tracekit.flask.init_app(app)


# --- queue consumers ------------------------------------------------------------------------


def fulfil(queue: Queue, ports: dict[str, int], message: Message) -> None:
    """Check stock, then ask every pricing replica for a price (the scatter)."""
    order = message.body
    response = requests.get(f"{_url(ports, 'inventory')}/stock/{order['sku']}", timeout=10)
    response.raise_for_status()
    for replica in PRICING_REPLICAS:
        _publish(queue, f"pricing.{replica}", order)
    log.info("order %s sent to %d pricing replicas", order["order_id"], len(PRICING_REPLICAS))


def price(queue: Queue, replica: int, message: Message) -> None:
    """One pricing replica: quote a price and reply (replica 3 is slow on bulk orders)."""
    order = message.body
    if replica == SLOW_REPLICA and order.get("quantity", 1) >= BULK_QUANTITY:
        log.warning("bulk order %s: recomputing volume discounts", order["order_id"])
        time.sleep(0.6)
    quote = round(9.99 * order.get("quantity", 1) * (1 - 0.01 * replica), 2)
    _publish(queue, "pricing.replies", {"order_id": order["order_id"], "quote": quote})


class Aggregator:
    """Gathers the replicas' quotes per order and completes the order once all have answered.

    The gather is one batch CONSUMER span linked to every reply: a new trace that the path
    reconstruction joins back to the request through those links.
    """

    def __init__(self, queue: Queue, ports: dict[str, int]) -> None:
        self.queue, self.ports = queue, ports
        self.replies: dict[str, list[Message]] = {}

    def run(self, stop: threading.Event) -> None:
        """Collect replies until SIGTERM."""
        while not stop.is_set():
            message = self.queue.get("pricing.replies", timeout=0.2)
            if message is None:
                continue
            replies = self.replies.setdefault(message.body["order_id"], [])
            replies.append(message)
            if len(replies) == len(PRICING_REPLICAS):
                del self.replies[message.body["order_id"]]
                self._complete(replies)
            self.queue.done(message)

    def _complete(self, replies: list[Message]) -> None:
        order_id = replies[0].body["order_id"]
        try:
            with messaging.consume_batch(
                [m.headers for m in replies],
                system=self.queue.system,
                destination="pricing.replies",
            ):
                best = min(m.body["quote"] for m in replies)
                requests.put(
                    f"{_url(self.ports, 'orders')}/orders/{order_id}/price",
                    json={"price": best},
                    timeout=10,
                ).raise_for_status()
        except Exception:
            log.exception("completing order %s failed", order_id)


def consume_forever(queue: Queue, destination: str, handler: Any, stop: threading.Event) -> None:
    """Take messages off ``destination`` one at a time, each handled inside a CONSUMER span."""
    while not stop.is_set():
        message = queue.get(destination, timeout=0.2)
        if message is None:
            continue
        try:
            with messaging.consume(message.headers, system=queue.system, destination=destination):
                handler(message)
        except Exception:
            log.exception("handling a message from %s failed", destination)
        queue.done(message)


# --- process entry --------------------------------------------------------------------------


def _serve_wsgi(app: Any, port: int) -> None:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


def _serve_asgi(app: Any, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def _until_sigterm(loop: Any) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    loop(stop)


def main(role: str) -> None:
    """Run one service of the demo until SIGTERM; telemetry is flushed on the way out."""
    ports, queue = _config()
    service = role.split("-")[0]
    tracekit.init(service, service_version="1.4.2", environment="demo")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # access lines would drown the rest
    try:
        _run(role, ports, queue)
    finally:
        tracekit.shutdown()


def _run(role: str, ports: dict[str, int], queue: Queue) -> None:
    if role == "gateway":
        _serve_asgi(gateway_app(ports), ports["gateway"])
    elif role == "orders":
        _serve_wsgi(orders_app(queue), ports["orders"])
    elif role == "inventory":
        _serve_wsgi(inventory_app(), ports["inventory"])
    elif role == "fulfilment":
        _until_sigterm(
            lambda stop: consume_forever(
                queue, "orders.created", lambda m: fulfil(queue, ports, m), stop
            )
        )
    elif role.startswith("pricing-"):
        replica = int(role.split("-")[1])
        _until_sigterm(
            lambda stop: consume_forever(
                queue, f"pricing.{replica}", lambda m: price(queue, replica, m), stop
            )
        )
    elif role == "aggregator":
        _until_sigterm(Aggregator(queue, ports).run)
    else:
        raise SystemExit(f"unknown demo role {role!r}")


ROLES = (
    "gateway",
    "orders",
    "inventory",
    "fulfilment",
    "pricing-1",
    "pricing-2",
    "pricing-3",
    "aggregator",
)

if __name__ == "__main__":
    main(sys.argv[1])
