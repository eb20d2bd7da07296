"""One way to mark a span failed, whoever saw the exception: a server request, Flask's exception
hook, an HTTP client call or a queue consumer. The status reads ``Type: message`` with the
exception's own words on one printable line, the exception event carries the same words, and
``error.type`` names the exception, so ``tracekit trace`` shows one kind of error line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import flask
import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import tracekit.flask
from tracekit import messaging, wsgi

HOSTILE = "card\x1b[31m declined\r\nforged: line"
SHOWN = "card [31m declined  forged: line"


def assert_failed_by(span: ReadableSpan, kind: str, words: str) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == f"{kind}: {words}"
    assert span.attributes is not None and span.attributes["error.type"] == kind
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None and event.attributes["exception.message"] == words


def failing_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise LookupError(HOSTILE)


def flask_app() -> flask.Flask:
    app = flask.Flask("failure_marking")

    @app.get("/charge")
    def charge() -> str:
        raise LookupError(HOSTILE)

    return tracekit.flask.init_app(app)


SERVERS: dict[str, Callable[[], Any]] = {
    "wsgi": lambda: wsgi.TracekitMiddleware(failing_wsgi),
    "flask": flask_app,
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_server_request(server: str, serve_wsgi, wait_for_spans, caplog) -> None:
    caplog.set_level(logging.CRITICAL)  # the servers log the exception
    url = serve_wsgi(SERVERS[server]())
    assert requests.get(url + "/charge", timeout=10).status_code == 500
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert_failed_by(span, "LookupError", SHOWN)


def test_http_client_call(http_clients: None, wait_for_spans) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:9/closed", timeout=10)  # port 9 (discard): nothing listens
    (span,) = wait_for_spans(1)
    kind, _, words = (span.status.description or "").partition(": ")
    assert kind == "ConnectionError" and "127.0.0.1" in words  # its words, not only its type
    assert_failed_by(span, "ConnectionError", words)


def test_queue_consumer(spans) -> None:
    with pytest.raises(LookupError), messaging.consume({}, system="test", destination="q"):
        raise LookupError(HOSTILE)
    (span,) = spans.get_finished_spans()
    assert_failed_by(span, "LookupError", SHOWN)
