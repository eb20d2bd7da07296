"""The one bounded, silent baggage reader (``tracekit._propagation.baggage``) and every path that
uses it."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from werkzeug.test import Client

import tracekit
from tracekit import messaging, propagation
from tracekit._propagation import baggage as _baggage

HOSTILE = "k=\x1b]0;pwned\x07"


def members(*values: str) -> dict[str, str]:
    return dict(_baggage.parse(values)[0])


def test_valid_members_survive_their_invalid_neighbours() -> None:
    assert members(f"a=1,{HOSTILE},b=two%20words;prop=x, ,c=3") == {
        "a": "1",
        "b": "two words",
        "c": "3",
    }


def test_at_most_64_members_are_kept_in_order() -> None:
    kept = members(",".join(f"k{i}=v{i}" for i in range(10_000)))
    assert list(kept) == [f"k{i}" for i in range(64)]


def test_only_the_first_8192_bytes_are_read_and_a_cut_member_is_dropped() -> None:
    first = "a=" + "x" * 8000
    second = "b=" + "y" * 500  # crosses the 8192-byte mark
    assert members(f"{first},{second}") == {"a": "x" * 8000}
    exact = "a=" + "x" * 8190  # exactly 8192 bytes, then more after a comma
    assert members(f"{exact},b=1") == {"a": "x" * 8190}


def test_at_most_180_list_members_are_looked_at_whatever_they_are() -> None:
    """A header of tiny invalid (or empty) members costs what 180 members cost."""
    assert members("x," * 179 + "ok=1") == {"ok": "1"}
    assert members("x," * 180 + "late=1") == {}
    assert members("," * 4000 + "late=1") == {}
    assert _baggage.parse(["x," * 4000])[1] == "180 invalid, beyond 64 members or 8192 bytes"


def test_a_property_padded_with_thousands_of_spaces_costs_linear_time() -> None:
    """Spaces around a property's "=" were matched with backtracking: 0.13 s for one 8 KB
    header, which any client can send with every request."""
    hostile = "k=v;p" + " " * 8100 + "\x01"
    started = time.perf_counter()
    for _ in range(20):
        assert _baggage.parse_with_properties([hostile]) == ([("k", "v")], {}, "")
    assert time.perf_counter() - started < 0.5
    padded = "k=v; p = 1 ;\tflag\t; q ="
    assert _baggage.parse_with_properties([padded])[1] == {"k": ("v", "p=1;flag;q=")}


def test_several_headers_are_one_list_under_the_same_limits() -> None:
    assert members("a=1", "b=2", "c=%E2%82%AC") == {"a": "1", "b": "2", "c": "€"}


@pytest.mark.parametrize(
    "member",
    ["noequals", "=v", "k y=1", "k=a b", 'k="q"', "k=a\\b", "k=é", "k=\x00"],
)
def test_invalid_members_are_dropped(member: str) -> None:
    assert members(f"{member},ok=1") == {"ok": "1"}


def test_escapes_that_are_not_utf8_read_as_the_replacement_character() -> None:
    """W3C Baggage: such sequences MUST be replaced with U+FFFD (the member is valid)."""
    assert members("k=%FF%FE,ok=1") == {"k": "\ufffd\ufffd", "ok": "1"}
    assert _baggage.parse(["k=%FF%FE"])[1] == ""  # nothing dropped, nothing to warn about


def test_dropping_warns_at_most_once_a_minute_naming_the_header_never_a_value() -> None:
    script = (
        "import logging\n"
        "from tracekit import propagation\n"
        "logging.basicConfig(level=logging.DEBUG, format='%(message)s')\n"
        "for _ in range(500):\n"
        f"    propagation.TracekitPropagator().extract({{'baggage': {HOSTILE + ',ok=1'!r}}})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    lines = [line for line in result.stderr.splitlines() if line]
    assert lines == ["tracekit: dropped members of the baggage header (1 invalid)"]


@pytest.fixture
def otel_extract_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry's baggage extraction logs untrusted values: tracekit must never call it."""

    def refuse(*_: Any, **__: Any) -> Context:
        raise AssertionError("W3CBaggagePropagator.extract called on untrusted input")

    monkeypatch.setattr(W3CBaggagePropagator, "extract", refuse)


@pytest.fixture
def seen() -> Iterator[dict[str, Any]]:
    yield {}


def _wsgi_app(seen: dict[str, Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["baggage"] = dict(baggage.get_all())
        seen["correlation_id"] = tracekit.correlation_id()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


HEADER = f"correlation.id=from-baggage,{HOSTILE},tenant=acme"


@pytest.mark.usefixtures("otel_extract_forbidden")
@pytest.mark.parametrize("public_endpoint", [False, True])
def test_wsgi_and_public_endpoint_paths_use_tracekit_s_reader(
    seen: dict[str, Any], public_endpoint: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from tracekit.wsgi import TracekitMiddleware

    caplog.set_level(logging.DEBUG)
    app = TracekitMiddleware(_wsgi_app(seen), public_endpoint=public_endpoint, exporter="none")
    Client(app).get("/", headers={"baggage": HEADER}, buffered=True)  # closed: context restored

    if public_endpoint:  # the trust boundary: incoming baggage is not used at all
        assert seen["baggage"] == {}
        assert seen["correlation_id"] != "from-baggage"
    else:
        assert seen["baggage"] == {"correlation.id": "from-baggage", "tenant": "acme"}
        assert seen["correlation_id"] == "from-baggage"
    assert "pwned" not in caplog.text


@pytest.mark.usefixtures("otel_extract_forbidden")
def test_flask_path_uses_tracekit_s_reader(seen: dict[str, Any]) -> None:
    import flask

    import tracekit.flask

    app = flask.Flask("hostile")

    @app.get("/")
    def index() -> str:
        seen["baggage"] = dict(baggage.get_all())
        return "ok"

    tracekit.flask.init_app(app)
    app.test_client().get("/", headers={"baggage": HEADER}).close()  # context restored

    assert seen["baggage"] == {"correlation.id": "from-baggage", "tenant": "acme"}


@pytest.mark.usefixtures("otel_extract_forbidden")
def test_asgi_path_uses_tracekit_s_reader(seen: dict[str, Any]) -> None:
    import httpx
    from loopback import start_uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tracekit.asgi import TracekitMiddleware

    async def index(request: Any) -> PlainTextResponse:
        seen["baggage"] = dict(baggage.get_all())
        return PlainTextResponse("ok")

    url, stop = start_uvicorn(TracekitMiddleware(Starlette(routes=[Route("/", index)])))
    try:
        httpx.get(url + "/", headers={"baggage": HEADER})
    finally:
        stop()

    assert seen["baggage"] == {"correlation.id": "from-baggage", "tenant": "acme"}


@pytest.mark.usefixtures("otel_extract_forbidden")
def test_queue_consumer_and_global_propagator_use_tracekit_s_reader() -> None:
    with messaging.consume({"baggage": HEADER}, system="test", destination="q") as message:
        assert dict(baggage.get_all()) == {"correlation.id": "from-baggage", "tenant": "acme"}
    assert message.correlation_id == "from-baggage"

    context = propagation.TracekitPropagator().extract({"baggage": HEADER})
    assert dict(baggage.get_all(context)) == {"correlation.id": "from-baggage", "tenant": "acme"}
