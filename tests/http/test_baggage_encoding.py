"""Percent-encoded baggage through a real service and on to the next: keys and values read as
OpenTelemetry's SDKs wrote them and go on unchanged, whatever the escapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests
from rawhttp import send

from tracekit import wsgi


def echo_baggage(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ.get("HTTP_BAGGAGE", "").encode()]


def relay(serve_wsgi: Callable[[Any], str], baggage_header: bytes) -> tuple[dict[str, str], str]:
    """Send ``baggage_header`` to a tracekit service that calls the next one: the baggage its
    application saw, and the header the next service received."""
    downstream = serve_wsgi(echo_baggage)

    def front(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        from opentelemetry import baggage

        sent = requests.get(downstream, timeout=10).text
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"seen": dict(baggage.get_all()), "sent": sent}).encode()]

    body = json.loads(send(serve_wsgi(wsgi.TracekitMiddleware(front)), [baggage_header]).body)
    return body["seen"], body["sent"]


def members(header: str) -> dict[str, str]:
    """The members of ``header`` as written, but the correlation ID tracekit adds."""
    pairs = (member.split("=", 1) for member in header.split(","))
    return {key: value for key, value in pairs if key != "correlation.id"}


def test_bad_escapes_are_read_as_the_replacement_character(
    serve_wsgi: Any, http_clients: None
) -> None:
    """A legacy client that encodes Latin-1 (``Am%E9lie``): W3C Baggage says escapes that are
    not UTF-8 MUST read as U+FFFD, as OpenTelemetry Python reads them; not dropped."""
    seen, sent = relay(serve_wsgi, b"baggage: user=Am%E9lie,cut=a%E2%82,ok=1")

    assert seen == {"user": "Am\ufffdlie", "cut": "a\ufffd", "ok": "1"}
    assert members(sent) == {"user": "Am%EF%BF%BDlie", "cut": "a%EF%BF%BD", "ok": "1"}


def test_an_encoded_key_reads_decoded_and_goes_on_as_it_came(
    serve_wsgi: Any, http_clients: None
) -> None:
    """OpenTelemetry Python and JS write a key that is not a token percent-encoded: the
    application reads it as they do, and the next hop gets it as sent, not "user%2520id"."""
    seen, sent = relay(serve_wsgi, b"baggage: user%20id=42,%C3%A9tape=2")

    assert seen == {"user id": "42", "\u00e9tape": "2"}
    assert members(sent) == {"user%20id": "42", "%C3%A9tape": "2"}
