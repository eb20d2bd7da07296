"""Starlette before 1.7 leaves no ``route`` in the scope: its router names only the endpoint.

Under a mount tracekit then looked the endpoint up among the application's own routes, and a
request to ``/tenants/acme/files/a/b.txt`` (a route of the mount, its endpoint shared with a
top-level route) was named ``GET /items/{item_id}``, in its span and in the metrics' ``http_route``
label: another route's traffic, with nothing telling the user it was wrong. A route found by its
endpoint is now taken only if the request's path fits its template; else the request is named by
no route (span ``GET``, ``http_route="_unmatched"``) rather than a wrong one. The app runs on the
installed Starlette with the scope as 1.6.0 leaves it (1.6.0's routing is 1.7.0's without the
two lines that set ``scope["route"]``).
"""

from __future__ import annotations

from typing import Any

import requests
from metric_labels import routes_labelled
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from tracekit import asgi


async def file_or_item(request: Request) -> PlainTextResponse:
    request.scope.pop("route", None)  # as Starlette 1.6.0's router leaves the scope
    return PlainTextResponse("ok")


def test_a_route_under_a_mount_is_never_named_after_another_route(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/items/{item_id:int}", file_or_item),
                            Mount("/tenants/{tenant}",
                                  routes=[Route("/files/{name:path}", file_or_item)])])  # fmt: skip
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="files")
    url = serve_asgi(app)

    for path in ("/items/7", "/tenants/acme/files/a/b.txt"):
        assert requests.get(url + path, timeout=10).status_code == 200

    named = {
        span.attributes["url.path"]: (span.name, span.attributes.get("http.route"))
        for span in wait_for_spans(2)
    }
    assert named == {
        "/items/7": ("GET /items/{item_id}", "/items/{item_id}"),
        "/tenants/acme/files/a/b.txt": ("GET", None),
    }
    assert routes_labelled(registry) == {"/items/{item_id}", "_unmatched"}
