"""Flask span names without a ``request_started`` receiver, on a real werkzeug server.

The WSGI middleware reads Flask's url rule when the response starts; these cases check the paths
where that reading could miss: a view whose exception Flask propagates (no response starts inside
the request context), a 404 (no rule), and a streamed response, under both ways of wrapping an app.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import flask
import pytest
import requests
from opentelemetry.trace import StatusCode

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
    assert by_path["/stream/x"].attributes["http.response.status_code"] == 200
    assert "http.route" not in by_path["/nowhere/9"].attributes
