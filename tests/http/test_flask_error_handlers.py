"""A view's exception that the application's own Flask error handler answers.

Flask sends ``got_request_exception`` only for an exception no handler takes; an API's
``@app.errorhandler(Exception)`` that answers with a JSON 500 left the span failed with
``error.type`` ``500`` and no exception: ``tracekit trace`` showed a 500 without its cause. An
exception the handler answers with a 5xx is the server's error, recorded as where Flask makes
the 500 page itself; one it answers with a 4xx is the client's, as Django's ``Http404`` is.
Real werkzeug server on loopback.
"""

from __future__ import annotations

from typing import Any

import flask
import pytest
import requests
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

import tracekit.flask

DURATION_COUNT = "http_server_request_duration_seconds_count"


class Refused(ValueError):
    """A validation error the API answers as the client's: a 400."""


def api(registry: CollectorRegistry) -> flask.Flask:
    app = flask.Flask("error_handlers")
    orders = flask.Blueprint("orders", "error_handlers", url_prefix="/api/v1")

    @orders.get("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        if order_id == 1:
            raise LookupError("no such order")
        if order_id == 2:
            raise Refused("order 2 is not yours")
        raise TimeoutError("the warehouse did not answer")

    @orders.errorhandler(TimeoutError)  # a blueprint's own handler
    def unavailable(error: TimeoutError) -> tuple[dict[str, str], int]:
        return {"error": "try again"}, 503

    @app.errorhandler(Exception)
    def as_json(error: Exception) -> tuple[dict[str, str], int]:
        return {"error": type(error).__name__}, 400 if isinstance(error, Refused) else 500

    app.register_blueprint(orders)
    return tracekit.flask.init_app(app, registry=registry)


def _count(registry: CollectorRegistry, status: str, error_type: str) -> float | None:
    labels = {"http_request_method": "GET", "http_route": "/api/v1/orders/{order_id}",
              "http_response_status_code": status, "error_type": error_type,
              "service_name": "unknown_service:python", "service_version": ""}  # fmt: skip
    return registry.get_sample_value(DURATION_COUNT, labels)


@pytest.mark.parametrize(
    ("order_id", "status", "error_type", "message"),
    [(1, 500, "LookupError", "no such order"),
     (3, 503, "TimeoutError", "the warehouse did not answer")],
)  # fmt: skip
def test_an_exception_the_apps_handler_answers_with_a_5xx_is_recorded(
    order_id: int,
    status: int,
    error_type: str,
    message: str,
    serve_wsgi: Any,
    wait_for_spans: Any,
) -> None:
    registry = CollectorRegistry()
    url = serve_wsgi(api(registry))
    assert requests.get(f"{url}/api/v1/orders/{order_id}", timeout=10).status_code == status
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.name == "GET /api/v1/orders/{order_id}"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == f"{error_type}: {message}"
    assert span.attributes is not None and span.attributes["error.type"] == error_type
    assert span.attributes["http.response.status_code"] == status
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None and event.attributes["exception.message"] == message
    assert _count(registry, str(status), error_type) == 1.0


def test_an_exception_the_apps_handler_answers_with_a_4xx_is_the_clients(
    serve_wsgi: Any, wait_for_spans: Any
) -> None:
    registry = CollectorRegistry()
    url = serve_wsgi(api(registry))
    assert requests.get(f"{url}/api/v1/orders/2", timeout=10).status_code == 400
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None and "error.type" not in span.attributes
    assert span.attributes["http.response.status_code"] == 400
    assert not [e for e in span.events if e.name == "exception"]
    assert _count(registry, "400", "") == 1.0
