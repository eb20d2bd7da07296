"""One list of routes (or one router) mounted twice: ``Mount("/v1", routes=api)`` and
``Mount("/v2", routes=api)``, the same API under two versions. The route objects are the same
under both mounts, and tracekit named every request after the first mount it found them under:
``GET /v2/items/2`` was ``GET /v1/items/{item_id}``, its metrics counted as v1's traffic.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from loopback import start_uvicorn
from metric_labels import routes_labelled
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router

from tracekit import asgi


async def item(request: Request) -> PlainTextResponse:
    return PlainTextResponse("item")


def _app(registry: CollectorRegistry) -> Starlette:
    api = [Route("/items/{item_id}", item)]
    orders = Router(routes=[Route("/orders/{order_id:int}", item)])
    app = Starlette(routes=[
        Mount("/v1", routes=api),
        Mount("/v2", routes=api),
        Mount("/tenants/{tenant}", routes=[Mount("/shop", app=orders)]),
        Mount("/shop", app=orders),
        *api,
    ])  # fmt: skip
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="versions")
    return app


@pytest.mark.parametrize("root_path", ["", "/api"])  # behind a proxy that strips /api
def test_a_route_mounted_twice_is_named_by_the_mount_the_request_came_through(
    wait_for_spans: Any, root_path: str
) -> None:
    registry = CollectorRegistry()
    url, stop = start_uvicorn(_app(registry), root_path=root_path)
    expected = {
        "/v1/items/1": "/v1/items/{item_id}",
        "/v2/items/2": "/v2/items/{item_id}",
        "/items/3": "/items/{item_id}",
        "/tenants/acme/shop/orders/4": "/tenants/{tenant}/shop/orders/{order_id}",
        "/shop/orders/5": "/shop/orders/{order_id}",
    }

    try:
        for path in expected:
            assert requests.get(url + path, timeout=10).status_code == 200
    finally:
        stop()

    routes = {
        span.attributes["url.path"].removeprefix(root_path): span.attributes["http.route"]
        for span in wait_for_spans(len(expected))
    }
    assert routes == expected
    assert routes_labelled(registry) == set(expected.values())
