"""A 404 under a mounted Starlette application matched the mount, and no route below it.

Starlette leaves the mount in the scope as the request's route when the router below it finds
nothing, and tracekit named the request after it: ``GET /v1`` with ``http.route`` ``/v1`` and the
metrics' ``http_route="/v1"``, a route the application does not have, mixing every mistyped URL
under ``/v1`` with the requests it serves. OpenTelemetry sets ``http.route`` only for a route the
framework matched; a 404 has none, as at the top level (span ``GET``, ``http_route="_unmatched"``).
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import requests
from loopback import start_uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from tracekit import asgi


async def item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def whatever_is_below(scope: Any, receive: Any, send: Any) -> None:
    """A mounted app with no routes of its own (as ``StaticFiles``): the mount is its route."""
    await PlainTextResponse("file")(scope, receive, send)


class OtherFramework:
    """An application of a framework with routes of its own, which Starlette's router does not
    name in the scope: the mount is its route."""

    def __init__(self) -> None:
        self.routes = ["/reports"]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("report")(scope, receive, send)


def _app(registry: CollectorRegistry) -> Starlette:
    app = Starlette(routes=[
        Mount("/v1", app=Starlette(routes=[Route("/items/{item_id}", item)])),
        Mount("/tenants/{tenant}", routes=[Route("/items/{item_id}", item)]),
        Mount("/static", app=whatever_is_below),
        Mount("/other", app=OtherFramework()),
    ])  # fmt: skip
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="mounts")
    return app


def test_a_404_under_a_mount_claims_no_route(serve_asgi: Any, wait_for_spans: Any) -> None:
    registry = CollectorRegistry()
    url = serve_asgi(_app(registry))
    sent = {"/v1/nope": 404, "/tenants/acme/nope": 404, "/nope": 404,
            "/v1/items/1": 200, "/static/site.css": 200, "/other/reports": 200}  # fmt: skip

    for path, status in sent.items():
        assert requests.get(url + path, timeout=10).status_code == status

    named = {
        span.attributes["url.path"]: (span.name, span.attributes.get("http.route"))
        for span in wait_for_spans(len(sent))
    }
    assert named == {
        "/v1/nope": ("GET", None),
        "/tenants/acme/nope": ("GET", None),
        "/nope": ("GET", None),
        "/v1/items/1": ("GET /v1/items/{item_id}", "/v1/items/{item_id}"),
        "/static/site.css": ("GET /static", "/static"),
        "/other/reports": ("GET /other", "/other"),
    }
    counted = {
        (sample.labels["http_route"], sample.labels["http_response_status_code"]): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "http_server_request_duration_seconds_count"
    }
    assert counted == {("_unmatched", "404"): 3.0, ("/v1/items/{item_id}", "200"): 1.0,
                       ("/static", "200"): 1.0, ("/other", "200"): 1.0}  # fmt: skip


def test_a_mounted_app_is_freed_once_no_longer_served() -> None:
    """An app factory makes one app per test (or per reload): each app whose mounts tracekit
    named was kept (up to 4,096), with its state, extensions and their pools."""

    async def order(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["number"])

    shop = Starlette(routes=[Route("/orders/{number}", order)])
    app = Starlette(routes=[Mount("/shop", app=shop)])
    app.add_middleware(asgi.TracekitMiddleware, registry=CollectorRegistry())
    gone = weakref.ref(app), weakref.ref(shop)
    url, stop = start_uvicorn(app)
    assert requests.get(url + "/shop/orders/7", timeout=10).text == "7"
    stop()
    del app, shop, stop
    gc.collect()

    assert [ref() for ref in gone] == [None, None]
