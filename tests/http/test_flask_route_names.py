"""Flask span names without a ``request_started`` receiver, on a real werkzeug server.

The WSGI middleware reads Flask's url rule when the response starts; these cases check the paths
where that reading could miss: a view whose exception Flask propagates (no response starts inside
the request context), a 404 (no rule), and a streamed response, under both ways of wrapping an app.
"""

from __future__ import annotations

import contextvars
import gc
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import flask
import pytest
import requests
from loopback import serving_werkzeug
from metric_labels import routes_labelled
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter, Rule

import tracekit.flask
from tracekit import wsgi


def _wrap_plain(app: flask.Flask) -> flask.Flask:
    app.wsgi_app = wsgi.TracekitMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _app(wrap: Callable[[flask.Flask], flask.Flask]) -> flask.Flask:
    app = flask.Flask("route_names")
    app.config["PROPAGATE_EXCEPTIONS"] = True  # werkzeug's server answers 500 itself

    @app.get("/boom/<int:code>")
    def boom(code: int) -> str:
        raise KeyError(code)

    @app.get("/stream/<name>")
    def stream(name: str) -> flask.Response:
        def lines() -> Iterator[str]:
            yield from (f"{name}{i}\n" for i in range(3))

        return flask.Response(lines())

    return wrap(app)


@pytest.mark.parametrize("wrap", [tracekit.flask.init_app, _wrap_plain])
def test_routes_survive_propagated_exceptions_404s_and_streams(
    serve_wsgi, wait_for_spans, caplog, wrap
):
    caplog.set_level(logging.CRITICAL)  # werkzeug logs the propagated exception
    url = serve_wsgi(_app(wrap))

    assert requests.get(url + "/boom/3", timeout=10).status_code == 500
    assert requests.get(url + "/stream/x", timeout=10).text == "x0\nx1\nx2\n"
    assert requests.get(url + "/nowhere/9", timeout=10).status_code == 404

    by_path = {span.attributes["url.path"]: span for span in wait_for_spans(3)}
    assert {path: span.name for path, span in by_path.items()} == {
        "/boom/3": "GET /boom/{code}",
        "/stream/x": "GET /stream/{name}",
        "/nowhere/9": "GET",
    }
    failed = by_path["/boom/3"]
    assert failed.attributes["http.route"] == "/boom/{code}"
    assert failed.attributes["error.type"] == "KeyError"
    assert failed.status.status_code is StatusCode.ERROR
    # recorded once, though both Flask's signal and the propagated exception report it
    assert [event.name for event in failed.events] == ["exception"]
    assert by_path["/stream/x"].attributes["http.response.status_code"] == 200
    assert "http.route" not in by_path["/nowhere/9"].attributes


def _proxied(app: flask.Flask) -> None:
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]


def _dispatched(app: flask.Flask) -> None:
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/static-site": _not_found})  # type: ignore[method-assign]


def _not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nothing here"]


@pytest.mark.parametrize("wrap_first", [_proxied, _dispatched])
def test_init_app_after_the_wsgi_app_was_wrapped(serve_wsgi, wait_for_spans, caplog, wrap_first):
    """The usual deployment: ProxyFix (or a DispatcherMiddleware) around ``app.wsgi_app`` first,
    then ``init_app``; route names, the metrics label and the view's exception are as without.
    The metrics' ``error_type`` is the exception's class, as on the span (and as for Django and
    ASGI apps), not the status code of the 500 page Flask made of it."""
    caplog.set_level(logging.CRITICAL)  # Flask logs the view's exception
    app = flask.Flask("wrapped_first")

    @app.get("/orders/<int:oid>")
    def order(oid: int) -> str:
        return f"order {oid}"

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("card declined")

    wrap_first(app)
    registry = CollectorRegistry()
    url = serve_wsgi(tracekit.flask.init_app(app, registry=registry, service_name="shop"))

    assert requests.get(url + "/orders/7", timeout=10).text == "order 7"
    assert requests.get(url + "/boom", timeout=10).status_code == 500

    by_path = {span.attributes["url.path"]: span for span in wait_for_spans(2)}
    assert {path: span.name for path, span in by_path.items()} == {
        "/orders/7": "GET /orders/{oid}",
        "/boom": "GET /boom",
    }
    assert by_path["/orders/7"].attributes["http.route"] == "/orders/{oid}"
    failed = by_path["/boom"]
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.status.description == "ValueError: card declined"
    (event,) = [e for e in failed.events if e.name == "exception"]
    assert event.attributes is not None and event.attributes["exception.type"] == "ValueError"
    labels = {"service_name": "shop", "service_version": "", "http_request_method": "GET"}
    count = "http_server_request_duration_seconds_count"
    for route, status in (("/orders/{oid}", "200"), ("/boom", "500")):
        sample = {**labels, "http_route": route, "http_response_status_code": status,
                  "error_type": "" if status == "200" else "ValueError"}  # fmt: skip
        assert registry.get_sample_value(count, sample) == 1.0, route


def test_a_flask_app_mounted_with_dispatcher_middleware_is_named_with_its_mount(
    serve_wsgi, wait_for_spans, caplog
):
    """Flask's documented way to combine apps, ``DispatcherMiddleware(main, {"/shop": shop})``:
    the shop's routes were named without their mount (``/shop/items/2`` was
    ``GET /items/{item_id}``, the main app's route, in one metrics series with it). The mount
    comes from the configuration; a prefix a client sends through ``ProxyFix`` never joins it."""
    caplog.set_level(logging.CRITICAL)  # Flask logs the view's exception
    main, shop = _main_and_shop()

    dispatcher = DispatcherMiddleware(main.wsgi_app, {"/shop": ProxyFix(shop.wsgi_app)})
    main.wsgi_app = ProxyFix(dispatcher, x_prefix=1)  # type: ignore[method-assign]
    url = serve_wsgi(tracekit.flask.init_app(main, registry=CollectorRegistry()))

    assert requests.get(url + "/items/1", timeout=10).text == "main"
    assert requests.get(url + "/shop/items/2", timeout=10).text == "shop"
    prefixed = {"X-Forwarded-Prefix": "/tenant-9"}
    assert requests.get(url + "/shop/items/3", headers=prefixed, timeout=10).text == "shop"
    assert requests.get(url + "/shop/pay", timeout=10).status_code == 500

    spans = {span.attributes["url.path"]: span for span in wait_for_spans(4)}
    assert {path: span.name for path, span in spans.items()} == {
        "/items/1": "GET /items/{item_id}",
        "/shop/items/2": "GET /shop/items/{item_id}",
        "/shop/items/3": "GET /shop/items/{item_id}",
        "/shop/pay": "GET /shop/pay",
    }
    # the mounted app's view exception is recorded too, not only the main app's
    assert spans["/shop/pay"].attributes["error.type"] == "LookupError"


def test_a_flask_app_mounted_twice_is_named_by_the_mount_the_request_came_through(
    serve_wsgi, wait_for_spans
):
    """One app under two mounts (``{"/v1": api, "/v2": api}``, an old prefix kept as an
    alias): every request was named after the first mount, ``/v2/items/2`` as
    ``GET /v1/items/{item_id}``, its metrics counted as v1's."""
    main, api = flask.Flask("main"), flask.Flask("api")

    @api.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return "api"

    main.wsgi_app = DispatcherMiddleware(main.wsgi_app, {"/v1": api, "/v2": api})  # type: ignore[method-assign]
    main.wsgi_app = ProxyFix(main.wsgi_app, x_prefix=1)  # type: ignore[method-assign]
    registry = CollectorRegistry()
    url = serve_wsgi(tracekit.flask.init_app(main, registry=registry))

    assert requests.get(url + "/v1/items/1", timeout=10).text == "api"
    assert requests.get(url + "/v2/items/2", timeout=10).text == "api"
    prefixed = {"X-Forwarded-Prefix": "/v1"}  # a proxy's prefix: the mount is still /v2
    assert requests.get(url + "/v2/items/3", headers=prefixed, timeout=10).text == "api"

    spans = {span.attributes["url.path"]: span.name for span in wait_for_spans(3)}
    assert spans == {
        "/v1/items/1": "GET /v1/items/{item_id}",
        "/v2/items/2": "GET /v2/items/{item_id}",
        "/v2/items/3": "GET /v2/items/{item_id}",
    }
    assert routes_labelled(registry) == {"/v1/items/{item_id}", "/v2/items/{item_id}"}


def test_flask_apps_wrapped_together_in_the_generic_middleware_are_named_by_their_routes(
    serve_wsgi, wait_for_spans, caplog
):
    """Flask's application dispatching (``DispatcherMiddleware(frontend, {"/shop": shop})``)
    or a ``ProxyFix`` around the app, wrapped whole in ``tracekit.wsgi.TracekitMiddleware`` as
    the module says any WSGI app is: every request was one series, ``http_route="_unmatched"``
    beside a 200, its span named ``GET``, and a view's exception was not recorded."""
    caplog.set_level(logging.CRITICAL)  # Flask logs the view's exception
    main, shop = _main_and_shop()

    registry = CollectorRegistry()
    combined = DispatcherMiddleware(ProxyFix(main), {"/shop": shop})
    url = serve_wsgi(wsgi.TracekitMiddleware(combined, registry=registry))

    assert requests.get(url + "/items/1", timeout=10).text == "main"
    assert requests.get(url + "/shop/items/2", timeout=10).text == "shop"
    assert requests.get(url + "/shop/pay", timeout=10).status_code == 500
    assert requests.get(url + "/shop/nowhere", timeout=10).status_code == 404

    spans = {span.attributes["url.path"]: span for span in wait_for_spans(4)}
    assert {path: span.name for path, span in spans.items()} == {
        "/items/1": "GET /items/{item_id}",
        "/shop/items/2": "GET /shop/items/{item_id}",
        "/shop/pay": "GET /shop/pay",
        "/shop/nowhere": "GET",
    }
    assert spans["/shop/pay"].attributes["error.type"] == "LookupError"
    assert routes_labelled(registry) == {
        "/items/{item_id}",
        "/shop/items/{item_id}",
        "/shop/pay",
        "_unmatched",
    }


def test_a_method_the_rule_does_not_allow_is_named_by_the_rule(serve_wsgi, wait_for_spans):
    """A 405 (the path matched a url rule, the method did not) was named as a 404 is, by its
    method alone, and counted under ``_unmatched``; OpenTelemetry's ``http.route`` is the rule
    that matched, and Starlette's and Django's 405s already carry theirs. A path no rule
    matches keeps no route."""
    app = flask.Flask("not_allowed")

    @app.get("/orders/<int:oid>")
    def order(oid: int) -> str:
        return f"order {oid}"

    @app.route("/items/<name>", methods=["POST", "PUT"])
    def item(name: str) -> str:
        return name

    registry = CollectorRegistry()
    url = serve_wsgi(tracekit.flask.init_app(app, registry=registry, service_name="flask-405"))

    assert requests.post(url + "/orders/7", timeout=10).status_code == 405
    assert requests.delete(url + "/items/a", timeout=10).status_code == 405
    assert requests.post(url + "/nowhere", timeout=10).status_code == 404

    spans = {span.attributes["url.path"]: span for span in wait_for_spans(3)}
    assert {path: span.name for path, span in spans.items()} == {
        "/orders/7": "POST /orders/{oid}",
        "/items/a": "DELETE /items/{name}",
        "/nowhere": "POST",
    }
    assert spans["/orders/7"].attributes["http.route"] == "/orders/{oid}"
    assert spans["/orders/7"].attributes["http.response.status_code"] == 405
    assert "http.route" not in spans["/nowhere"].attributes
    routes = {(sample.labels["http_route"], sample.labels["http_response_status_code"])
              for metric in registry.collect() for sample in metric.samples
              if sample.name == "http_server_request_duration_seconds_count"}  # fmt: skip
    assert routes == {("/orders/{oid}", "405"), ("/items/{name}", "405"), ("_unmatched", "404")}


class _OrderConverter(BaseConverter):
    """An app's converter that refuses what it cannot read, in words quoting the path."""

    def to_python(self, value: str) -> int:
        if not value.isdigit():
            raise ValueError(f"no such order {value}")
        return int(value)


def test_a_405_whose_converter_refuses_the_path_logs_nothing_of_tracekits(
    serve_wsgi: Any, wait_for_spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A converter that would refuse the client's path (in words quoting it, escape sequences
    and all) is not run to name a 405, as Flask's 405 runs none: nothing of it reaches
    tracekit's log, and the 405 is named by the rule whose shape the path has, the one Flask
    answered 405 for."""
    app = flask.Flask("converter_405")
    app.url_map.converters["order"] = _OrderConverter

    @app.get("/orders/<order:oid>")
    def order(oid: int) -> str:
        return f"order {oid}"

    url = serve_wsgi(tracekit.flask.init_app(app, registry=CollectorRegistry()))
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        assert requests.post(url + "/orders/x\x1b[2J", timeout=10).status_code == 405
        assert requests.post(url + "/orders/7", timeout=10).status_code == 405

    spans = {span.attributes["url.path"]: span.name for span in wait_for_spans(2)}
    assert spans == {"/orders/x\x1b[2J": "POST /orders/{oid}", "/orders/7": "POST /orders/{oid}"}
    assert [r for r in caplog.records if r.name.startswith("tracekit")] == []


def test_naming_a_405_runs_none_of_the_apps_converters(
    serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """Flask's 405 is decided by the path's shape (the converters' patterns) and runs no
    converter; tracekit matched the rule again with an allowed method to name the span, and
    ran the converter Flask had not (one that looks an order up, or counts, did it once more).
    A GET runs it once, as without tracekit."""
    converted: list[str] = []

    class Counting(BaseConverter):
        def to_python(self, value: str) -> str:
            converted.append(value)
            return value

    app = flask.Flask("converter_runs")
    app.url_map.converters["counted"] = Counting

    @app.get("/orders/<counted:oid>")
    def order(oid: str) -> str:
        return f"order {oid}"

    url = serve_wsgi(tracekit.flask.init_app(app, registry=CollectorRegistry()))
    assert requests.post(url + "/orders/7", timeout=10).status_code == 405
    assert converted == []
    assert requests.get(url + "/orders/8", timeout=10).status_code == 200
    assert converted == ["8"]

    spans = {span.attributes["url.path"]: span.name for span in wait_for_spans(2)}
    assert spans == {"/orders/7": "POST /orders/{oid}", "/orders/8": "GET /orders/{oid}"}


class _TaggedRule(Rule):
    """An app's rule class taking an argument of its own, as ``url_rule_class`` allows."""

    def __init__(self, string: str, *, team: str, **options: Any) -> None:
        super().__init__(string, **options)
        self.team = team


def test_a_405_is_named_when_the_apps_rule_class_takes_arguments_of_its_own(
    serve_wsgi: Any, wait_for_spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An app whose ``url_rule_class`` needs an argument werkzeug's copy of a rule does not
    pass: its 405 is named by the rule whose path it has, as before, and tracekit logs
    nothing about failing to read the route."""
    app = flask.Flask("rule_class_405")
    app.url_rule_class = lambda string, **options: _TaggedRule(string, team="orders", **options)  # type: ignore[assignment]

    @app.get("/orders/<int:oid>")
    def order(oid: int) -> str:
        return f"order {oid}"

    url = serve_wsgi(tracekit.flask.init_app(app, registry=CollectorRegistry()))
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        assert requests.post(url + "/orders/7", timeout=10).status_code == 405

    assert [span.name for span in wait_for_spans(1)] == ["POST /orders/{oid}"]
    assert [r for r in caplog.records if r.name.startswith("tracekit")] == []


class _AppReadingItsSettings:
    """A WSGI app that looks unknown attributes up in its settings, raising their own error."""

    def __init__(self) -> None:
        self.settings: dict[str, object] = {}

    def __getattr__(self, name: str) -> object:
        try:
            return self.settings[name]
        except KeyError:
            raise LookupError(f"no setting {name}") from None

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]


def test_an_app_whose_attributes_raise_is_served_as_without_tracekit(
    serve_wsgi: Any, wait_for_spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Looking for a Flask app in the app it wraps, the middleware read attributes of it that
    such an app answers with its own exception: every request failed with a 500, the app
    never called."""
    caplog.set_level(logging.CRITICAL)  # tracekit logs the lookup's failure once
    url = serve_wsgi(
        wsgi.TracekitMiddleware(_AppReadingItsSettings(), registry=CollectorRegistry())
    )

    response = requests.get(url + "/page", timeout=10)

    assert (response.status_code, response.text) == (200, "served")
    assert "X-Correlation-ID" in response.headers
    assert [span.name for span in wait_for_spans(1)] == ["GET"]


def _main_and_shop() -> tuple[flask.Flask, flask.Flask]:
    """Two apps with a route of the same template; the shop's ``/pay`` raises."""
    main, shop = flask.Flask("main"), flask.Flask("shop")

    @main.get("/items/<int:item_id>")
    def main_item(item_id: int) -> str:
        return "main"

    @shop.get("/items/<int:item_id>")
    def shop_item(item_id: int) -> str:
        return "shop"

    @shop.get("/pay")
    def pay() -> str:
        raise LookupError("card declined")

    return main, shop


@pytest.mark.parametrize(
    "around",
    [ProxyFix, lambda app: DispatcherMiddleware(_not_found, {"/shop": app})],
    ids=["proxyfix", "dispatcher"],
)
def test_a_flask_app_behind_a_wrapper_is_freed_once_no_longer_served(around: Any) -> None:
    """An app factory makes one app per test (or per tenant, per reload): each app tracekit
    named the mounts of was kept for good, with its config, extensions and their pools."""
    app = flask.Flask("made_by_a_factory")
    app.get("/orders/<int:number>")(lambda number: {"number": number})
    gone = weakref.ref(app)
    prefix = "" if around is ProxyFix else "/shop"
    with serving_werkzeug(wsgi.TracekitMiddleware(around(app))) as url:
        assert requests.get(url + prefix + "/orders/7", timeout=10).json() == {"number": 7}
    del app
    gc.collect()

    assert gone() is None


def test_a_request_whose_response_is_never_closed_is_not_kept_alive() -> None:
    """A caller that drops a response without closing it (a test calling the WSGI app by hand,
    a server that breaks WSGI's contract) leaves its span never ended: it was let go with the
    request. What names an interrupted request by its Flask route (kept for a stop with the
    span) held the request, and through it the span, in tracekit's set of open spans for the
    life of the process: one span, environ and request more with each such call."""
    from werkzeug.test import EnvironBuilder

    app = flask.Flask("dropped")
    seen: list[weakref.ref[Any]] = []

    @app.get("/orders/<int:number>")
    def order(number: int) -> str:
        seen.append(weakref.ref(trace.get_current_span()))
        return "ok"

    traced = wsgi.TracekitMiddleware(app)
    environ = EnvironBuilder(path="/orders/7").get_environ()
    # in a context of its own, as a server's thread: what the request made current goes with it
    body = contextvars.Context().run(traced, environ, lambda *_: None)  # never read nor closed
    assert seen and seen[0]() is not None and seen[0]().is_recording()
    del body, environ
    gc.collect()

    assert seen[0]() is None
