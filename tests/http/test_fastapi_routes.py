"""Route names under FastAPI's own router (0.16x), which leaves Starlette's ``scope["route"]``
unset for every route that is not an ``APIRoute`` (its ``/docs``, ``/openapi.json``,
``app.add_route``, ``app.mount("/static", StaticFiles(...))``) and sets it to the router's own
``APIRoute`` for a router included with a prefix (``include_router(api, prefix="/api")``), whose
template lacks that prefix. Users saw ``GET`` spans and ``_unmatched`` metrics for pages that
answered 200, ``GET /things/{thing_id}`` for both ``/api/…`` and ``/v2/…``, and a FastAPI
app's routers mounted under ``/v1`` named without ``/v1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import APIRouter, FastAPI
from loopback import start_uvicorn
from metric_labels import routes_labelled
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tracekit import asgi


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("plain")


def _api(static: Path) -> FastAPI:
    # FastAPI's own span off: tracekit's SERVER span is the one users get
    app = FastAPI(telemetry={"tracing": False})
    things = APIRouter()

    @things.get("/things/{thing_id}")
    def thing(thing_id: int) -> dict[str, int]:
        return {"thing": thing_id}

    app.include_router(things, prefix="/api")
    app.include_router(things, prefix="/v2")
    app.add_route("/plain/{kind}", plain)
    app.add_route("/healthz", plain)  # one endpoint, two routes
    app.mount("/static", StaticFiles(directory=static))
    return app


@pytest.fixture
def static(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_text("a")
    return tmp_path


def test_fastapi_routes_are_named_by_their_whole_template(
    wait_for_spans: Any, static: Path
) -> None:
    registry = CollectorRegistry()
    app = _api(static)
    app.mount("/v1", _api(static))
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="fastapi-routes")
    expected = {
        "/api/things/1": (200, "/api/things/{thing_id}"),
        "/v2/things/2": (200, "/v2/things/{thing_id}"),
        "/docs": (200, "/docs"),
        "/openapi.json": (200, "/openapi.json"),
        "/plain/a": (200, "/plain/{kind}"),
        "/healthz": (200, "/healthz"),
        "/static/a.txt": (200, "/static"),
        "/v1/api/things/3": (200, "/v1/api/things/{thing_id}"),
        "/v1/docs": (200, "/v1/docs"),
        "/v1/healthz": (200, "/v1/healthz"),
        "/v1/static/a.txt": (200, "/v1/static"),
        "/v1/typo": (404, None),
        "/typo": (404, None),
    }
    _assert_named(app, registry, expected, wait_for_spans)


def test_fastapi_routes_under_a_starlette_mount_are_named(
    wait_for_spans: Any, static: Path
) -> None:
    # Starlette's router names its Mount in the scope; FastAPI's router below it names no plain
    # route, so the Mount stayed there as if nothing below it had matched
    registry = CollectorRegistry()
    inner = FastAPI(telemetry={"tracing": False})
    inner.add_route("/healthz", plain)
    middle = FastAPI(telemetry={"tracing": False})
    middle.add_route("/plain/{kind}", plain)
    middle.mount("/inner", inner)
    app = Starlette(routes=[Mount("/fa", app=_api(static)), Mount("/middle", app=middle)])
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="fastapi-mounted")
    expected = {
        "/fa/docs": (200, "/fa/docs"),
        "/fa/healthz": (200, "/fa/healthz"),
        "/fa/plain/a": (200, "/fa/plain/{kind}"),
        "/fa/static/a.txt": (200, "/fa/static"),
        "/fa/api/things/1": (200, "/fa/api/things/{thing_id}"),
        "/middle/plain/b": (200, "/middle/plain/{kind}"),
        "/middle/inner/healthz": (200, "/middle/inner/healthz"),
        "/fa/typo": (404, None),
        "/middle/inner/typo": (404, None),
    }
    _assert_named(app, registry, expected, wait_for_spans)


def _with_an_operations_router(static: Path) -> FastAPI:
    app = FastAPI(telemetry={"tracing": False})
    files = StaticFiles(directory=static)
    app.add_route("/healthz", plain)
    app.mount("/static", files)
    ops = APIRouter()  # the same endpoint and files again, in a router of their own
    ops.add_route("/ready", plain)
    ops.mount("/files", files)
    app.include_router(ops, prefix="/ops")
    return app


def test_a_plain_route_of_an_included_router_is_named_by_its_own_path(
    wait_for_spans: Any, static: Path
) -> None:
    # FastAPI's router names no plain route of an included router in the scope and lists it
    # nowhere: the lookup by endpoint took the application's route to the same endpoint, and
    # /ops/ready was named /healthz, /ops/files/a.txt /static
    registry = CollectorRegistry()
    app = _with_an_operations_router(static)
    app.mount("/v1", _with_an_operations_router(static))
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="fastapi-ops")
    expected = {
        "/healthz": (200, "/healthz"),
        "/static/a.txt": (200, "/static"),
        "/ops/ready": (200, "/ops/ready"),
        "/ops/files/a.txt": (200, "/ops/files"),
        "/v1/ops/ready": (200, "/v1/ops/ready"),
        "/v1/ops/files/a.txt": (200, "/v1/ops/files"),
    }
    _assert_named(app, registry, expected, wait_for_spans)


def _with_a_mounted_shop() -> FastAPI:
    app = FastAPI(telemetry={"tracing": False})
    shop = FastAPI(telemetry={"tracing": False})

    @shop.get("/orders/{order_id}")
    def order(order_id: int) -> dict[str, int]:
        return {"order": order_id}

    legacy = Starlette()
    legacy.add_route("/carts/{cart_id}", plain)
    api = APIRouter()
    api.mount("/shop", shop)
    api.mount("/legacy", legacy)
    app.include_router(api, prefix="/api")
    return app


def test_an_application_mounted_in_an_included_router_is_named_under_that_mount(
    wait_for_spans: Any,
) -> None:
    # The search for the mounts above the route found the route in the mounted application
    # alone, no list showing the included router's mount: /api/shop/orders/5 was named
    # /orders/{order_id}, as if the application were the top one
    registry = CollectorRegistry()
    app = _with_a_mounted_shop()
    versioned = _with_a_mounted_shop()
    app.mount("/v1", versioned)
    app.mount("/v2", versioned)
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="fastapi-shop")
    expected = {
        "/api/shop/orders/5": (200, "/api/shop/orders/{order_id}"),
        "/api/legacy/carts/7": (200, "/api/legacy/carts/{cart_id}"),
        "/v1/api/shop/orders/5": (200, "/v1/api/shop/orders/{order_id}"),
        "/v2/api/shop/orders/6": (200, "/v2/api/shop/orders/{order_id}"),
    }
    _assert_named(app, registry, expected, wait_for_spans)


def _files_mounted_twice(static: Path) -> FastAPI:
    app = FastAPI(telemetry={"tracing": False})
    files = StaticFiles(directory=static)  # one application at two paths (a GraphQL app too)
    app.mount("/static", files)
    app.mount("/assets", files)
    return app


def test_one_application_mounted_at_two_paths_is_named_by_the_mount_the_request_took(
    wait_for_spans: Any, static: Path
) -> None:
    # FastAPI's router names neither mount: the lookup by endpoint matched the path below the
    # mount against both, and took the first, so /assets/a.txt was named /static
    registry = CollectorRegistry()
    app = _files_mounted_twice(static)
    app.mount("/v1", _files_mounted_twice(static))
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="fastapi-twice")
    expected = {
        "/static/a.txt": (200, "/static"),
        "/assets/a.txt": (200, "/assets"),
        "/v1/static/a.txt": (200, "/v1/static"),
        "/v1/assets/a.txt": (200, "/v1/assets"),
    }
    _assert_named(app, registry, expected, wait_for_spans)


def test_one_application_mounted_at_a_path_and_under_it_is_named_by_the_mount_taken(
    wait_for_spans: Any, static: Path
) -> None:
    # the root path /v2/static ends with what either mount matches: /static was taken first
    registry = CollectorRegistry()
    app = FastAPI(telemetry={"tracing": False})
    files = StaticFiles(directory=static)
    app.mount("/static", files)
    app.mount("/v2/static", files)
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="fastapi-nested")
    expected = {"/static/a.txt": (200, "/static"), "/v2/static/a.txt": (200, "/v2/static")}
    _assert_named(app, registry, expected, wait_for_spans)


def test_files_mounted_at_the_root_are_named_by_that_mount(
    wait_for_spans: Any, static: Path
) -> None:
    # A single-page app's files mounted under the API (app.mount("/", StaticFiles(...))): the
    # mount's template is empty, so every file it served was a 200 under "_unmatched", its
    # span named "GET", where the same files at /static are the route /static
    registry = CollectorRegistry()
    app = FastAPI(telemetry={"tracing": False})
    app.add_route("/healthz", plain)
    spa = Starlette(routes=[Mount("/", routes=[Route("/about", plain)])])  # one that routes
    app.mount("/spa", spa)
    app.mount("/", StaticFiles(directory=static, html=True))  # last: it takes every path
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="fastapi-spa")
    expected = {
        "/healthz": (200, "/healthz"),
        "/a.txt": (200, "/"),
        "/missing.js": (404, "/"),  # the files' own 404, as /static/missing.js is /static
        "/spa/about": (200, "/spa/about"),
    }
    _assert_named(app, registry, expected, wait_for_spans)


def test_a_router_mounted_at_the_root_that_matches_nothing_names_no_route(
    wait_for_spans: Any,
) -> None:
    registry = CollectorRegistry()
    app = Starlette(routes=[Mount("/", routes=[Route("/about", plain)])])
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="root-router")
    expected = {"/about": (200, "/about"), "/typo": (404, None)}
    _assert_named(app, registry, expected, wait_for_spans)


def _assert_named(
    app: Any, registry: CollectorRegistry, expected: dict[str, tuple[int, str | None]],
    wait_for_spans: Any,
) -> None:  # fmt: skip
    """Served by uvicorn, each path in ``expected`` answers its status, and its span and
    metrics name its route (None: no route matched, a plain ``GET`` and ``_unmatched``)."""
    url, stop = start_uvicorn(app)
    try:
        answered = {path: requests.get(url + path, timeout=10).status_code for path in expected}
    finally:
        stop()

    assert answered == {path: status for path, (status, _) in expected.items()}
    spans = wait_for_spans(len(expected))
    named = {span.attributes["url.path"]: (span.name, span.attributes.get("http.route"))
             for span in spans}  # fmt: skip
    assert named == {
        path: (f"GET {route}" if route else "GET", route) for path, (_, route) in expected.items()
    }
    assert routes_labelled(registry) == {route or "_unmatched" for _, route in expected.values()}


class _CountingMount(Mount):
    """A Mount that counts how often its routes are read (tracekit's search for the mounts above
    a route reads them; Starlette's routing does not)."""

    reads = 0

    @property
    def routes(self) -> list[Any]:
        _CountingMount.reads += 1
        return super().routes


def test_a_fastapi_router_under_a_mount_is_searched_for_once(wait_for_spans: Any) -> None:
    # FastAPI keeps an included router's routes where no list shows them: the search for the
    # mounts above such a route finds none, and ran again, through every route of the
    # application, on every request (about 0.2 ms a request with 200 routes)
    api = FastAPI(telemetry={"tracing": False})
    things = APIRouter()

    @things.get("/things/{thing_id}")
    def thing(thing_id: int) -> dict[str, int]:
        return {"thing": thing_id}

    api.include_router(things, prefix="/api")
    app = Starlette(routes=[_CountingMount("/v1", app=api)])
    app.add_middleware(
        asgi.TracekitMiddleware, registry=CollectorRegistry(), service_name="fastapi-searched"
    )
    url, stop = start_uvicorn(app)
    try:
        first = requests.get(url + "/v1/api/things/1", timeout=10)
        wait_for_spans(1)
        after_the_first = _CountingMount.reads
        later = [requests.get(url + f"/v1/api/things/{n}", timeout=10) for n in range(2, 7)]
    finally:
        stop()

    spans = wait_for_spans(6)
    assert [first.status_code, *(response.status_code for response in later)] == [200] * 6
    assert {span.name for span in spans} == {"GET /v1/api/things/{thing_id}"}
    assert _CountingMount.reads == after_the_first


class _CountingFastAPI(FastAPI):
    """A FastAPI app that counts how often its routes are read (FastAPI's routing reads its
    router's, not these)."""

    reads = 0

    @property
    def routes(self) -> list[Any]:
        _CountingFastAPI.reads += 1
        return super().routes


def test_a_route_fastapi_leaves_unnamed_is_looked_up_once(wait_for_spans: Any) -> None:
    # /docs, add_route routes and StaticFiles mounts are found by their endpoint among the
    # application's routes: a walk through all of them on every request (~10 us with 200)
    app = _CountingFastAPI(telemetry={"tracing": False})
    for number in range(50):
        app.add_route(f"/other/{number}", plain)
    app.add_route("/healthz", plain)
    app.add_middleware(
        asgi.TracekitMiddleware, registry=CollectorRegistry(), service_name="fastapi-looked-up"
    )
    url, stop = start_uvicorn(app)
    try:
        first = requests.get(url + "/healthz", timeout=10)
        wait_for_spans(1)
        after_the_first = _CountingFastAPI.reads
        later = [requests.get(url + "/healthz", timeout=10) for _ in range(5)]
    finally:
        stop()

    spans = wait_for_spans(6)
    assert [first.status_code, *(response.status_code for response in later)] == [200] * 6
    assert [span.name for span in spans] == ["GET /healthz"] * 6
    assert _CountingFastAPI.reads == after_the_first
