"""A baggage value whose percent-escapes are not UTF-8 (a legacy client that encodes Latin-1,
``Am%E9lie``): W3C Baggage says such sequences MUST be read as U+FFFD, so the member arrives,
and goes on downstream, with the replacement character where the bad bytes were, as
OpenTelemetry Python reads it; it is not dropped."""

from __future__ import annotations

import json
from typing import Any

import requests
from rawhttp import send

from tracekit import wsgi


def echo_baggage(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ.get("HTTP_BAGGAGE", "").encode()]


def test_bad_escapes_are_read_as_the_replacement_character(
    serve_wsgi: Any, http_clients: None
) -> None:
    downstream = serve_wsgi(echo_baggage)

    def front(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        from opentelemetry import baggage

        sent = requests.get(downstream, timeout=10).text
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"seen": dict(baggage.get_all()), "sent": sent}).encode()]

    url = serve_wsgi(wsgi.TracekitMiddleware(front))
    response = send(url, [b"baggage: user=Am%E9lie,cut=a%E2%82,ok=1"])

    body = json.loads(response.body)
    assert body["seen"] == {"user": "Am\ufffdlie", "cut": "a\ufffd", "ok": "1"}
    sent = dict(member.split("=", 1) for member in body["sent"].split(","))
    assert sent["user"] == "Am%EF%BF%BDlie" and sent["cut"] == "a%EF%BF%BD" and sent["ok"] == "1"
