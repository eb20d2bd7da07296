"""How a WSGI app calls ``start_response``, and what the span and the metrics then say: the
status the client got. Real werkzeug server on loopback (gunicorn refuses and re-raises alike).

PEP 3333: a second call without ``exc_info`` is refused (the server raises), and a call with
``exc_info`` once the status has gone out raises that exception again; in both cases the
status already sent stands.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conditions import wait_for
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from tracekit import semconv, wsgi

DURATION_COUNT = "http_server_request_duration_seconds_count"


def _count(registry: CollectorRegistry, status: str, error_type: str) -> float | None:
    return registry.get_sample_value(DURATION_COUNT, {
        "service_name": "shop", "service_version": "", "http_request_method": "GET",
        "http_route": "_unmatched", "http_response_status_code": status, "error_type": error_type,
    })  # fmt: skip


def _second_status_caught(environ: Any, start_response: Any) -> list[bytes]:
    start_response("201 Created", [("Content-Type", "text/plain")])
    with contextlib.suppress(AssertionError):  # the server's refusal, which the app shrugs off
        start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"created"]


def _error_after_the_status_went_out(environ: Any, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first rows\n"
    try:
        raise KeyError("row 2")
    except KeyError:
        start_response("500 Internal Server Error", [], sys.exc_info())  # raises it again
    yield b"never sent"


def _answered_with_exc_info(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ConnectionRefusedError("the stock service")
    except ConnectionRefusedError:  # its own error page, as Bottle makes one
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"try again later"]


def _serve(serve_wsgi: Any, app: Any) -> tuple[str, CollectorRegistry]:
    registry = CollectorRegistry()
    traced = wsgi.TracekitMiddleware(app, registry=registry, service_name="shop")
    return serve_wsgi(traced), registry


def _server_span(wait_for_spans: Any) -> Any:
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    return span


def test_a_second_status_the_server_refused_is_not_the_requests(
    serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """The client got 201; the span said 404 (the status the server refused) and so did the
    metrics."""
    url, registry = _serve(serve_wsgi, _second_status_caught)

    answer = requests.get(url + "/orders", timeout=10)

    assert (answer.status_code, answer.text) == (201, "created")
    span = _server_span(wait_for_spans)
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 201
    assert span.status.status_code is StatusCode.UNSET
    wait_for(lambda: _count(registry, "201", "") == 1, 5.0, "the 201 counted")
    assert _count(registry, "404", "") is None


def test_exc_info_after_the_status_went_out_keeps_the_status_sent(
    serve_wsgi: Any, wait_for_spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The client got a 200 and a cut body, as when a body raises after its first chunk; the
    span and the metrics said 500, the status the app asked for too late."""
    caplog.set_level(logging.CRITICAL)  # werkzeug logs the exception
    url, registry = _serve(serve_wsgi, _error_after_the_status_went_out)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        answer = requests.get(url + "/orders", timeout=10, stream=True)
        assert answer.status_code == 200
        answer.content  # noqa: B018 (read the cut body)

    span = _server_span(wait_for_spans)
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert span.attributes[semconv.ERROR_TYPE] == "KeyError"
    assert span.status.status_code is StatusCode.ERROR
    wait_for(lambda: _count(registry, "200", "KeyError") == 1, 5.0, "the cut 200 counted")
    assert _count(registry, "500", "KeyError") is None


def test_an_error_page_started_with_exc_info_records_its_exception(
    serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """The app answers an exception with a 5xx page, giving ``start_response`` its
    ``exc_info`` (Bottle does so): the span and the metrics said ``503``, without the exception
    the app named, as for an exception a Flask error handler answers."""
    url, registry = _serve(serve_wsgi, _answered_with_exc_info)

    answer = requests.get(url + "/orders", timeout=10)

    assert (answer.status_code, answer.text) == (503, "try again later")
    span = _server_span(wait_for_spans)
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 503
    assert span.attributes[semconv.ERROR_TYPE] == "ConnectionRefusedError"
    assert [event.name for event in span.events] == ["exception"]
    wait_for(lambda: _count(registry, "503", "ConnectionRefusedError") == 1, 5.0, "counted")
    assert _count(registry, "503", "503") is None
