"""HTTP clients against a real echo server: one CLIENT span each and the injected headers seen by
the server; ``tracekit.uninstrument()`` puts the original functions back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

import tracekit
from tracekit import correlation
from tracekit._runtime import guard

# A trace id of this file's own, not the W3C example's: tracekit remembers, per process, the
# flags of the parents it read from headers by trace id, and other tests read the example's with
# its random flag unset; run before these in the same process, they changed what these send.
PARENT_TRACE = 0x6C1E7D2A90B34F58A1C4E3D2B7F60915


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def call_requests(url: str) -> dict[str, str]:
    return requests.get(url, timeout=10).json()


def call_httpx(url: str) -> dict[str, str]:
    with httpx.Client() as client:
        return client.get(url, timeout=10).json()


def call_httpx_async(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, timeout=10)).json()

    return _run(go())


def call_urllib3(url: str) -> dict[str, str]:
    with urllib3.PoolManager() as pool:
        return json.loads(pool.request("GET", url, headers={"Accept": "x/y"}).data)


def call_aiohttp(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return json.loads(await response.read())

    return _run(go())


def _run(coroutine: Any) -> Any:
    """Run in a copy of this context, as an application's event loop would see it."""
    return asyncio.run(coroutine)


CLIENTS: dict[str, Callable[[str], dict[str, str]]] = {
    "requests": call_requests,
    "httpx": call_httpx,
    "httpx-async": call_httpx_async,
    "urllib3": call_urllib3,
    "aiohttp": call_aiohttp,
}


@pytest.fixture
def echo_url(serve_wsgi: Any) -> str:
    return serve_wsgi(echo_app) + "/echo/path?token=secret"


@pytest.fixture
def in_request() -> Iterator[None]:
    """A request context: correlation ID, a remote parent with tracestate, and baggage."""
    parent = SpanContext(
        PARENT_TRACE, 0xB7AD6B7169203331, True, TraceFlags(1), TraceState([("congo", "t61r")])
    )
    ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    ctx = baggage.set_baggage("tenant", "acme", ctx)
    cid_token = correlation.set_correlation_id("client-test-1")
    token = context.attach(ctx)
    yield
    context.detach(token)
    correlation.reset_correlation_id(cid_token)


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_one_client_span_and_headers_on_the_wire(
    name: str, echo_url: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    seen = CLIENTS[name](echo_url)

    (span,) = wait_for_spans(1)
    assert span.kind is SpanKind.CLIENT
    assert span.name == "GET"
    assert span.context.trace_id == PARENT_TRACE
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["correlation.id"] == "client-test-1"
    assert span.attributes["url.full"].endswith("/echo/path")  # query (tokens) dropped
    assert seen["traceparent"] == f"00-{PARENT_TRACE:032x}-{span.context.span_id:016x}-03"
    assert seen["tracestate"] == "congo=t61r"
    assert seen["x-correlation-id"] == "client-test-1"
    assert "tenant=acme" in seen["baggage"]
    assert "correlation.id=client-test-1" in seen["baggage"]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_the_baggage_sent_names_the_requests_own_correlation_id(
    name: str, echo_url: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    """The caller's baggage said ``correlation.id=old-b`` but its X-Correlation-ID won: every
    hop onwards carries that one ID, in the header and in baggage alike."""
    token = context.attach(baggage.set_baggage("correlation.id", "old-b"))
    try:
        seen = CLIENTS[name](echo_url)
    finally:
        context.detach(token)
    assert seen["x-correlation-id"] == "client-test-1"
    assert "correlation.id=client-test-1" in seen["baggage"] and "old-b" not in seen["baggage"]
    assert "tenant=acme" in seen["baggage"]


def test_urllib3_replaces_a_callers_trace_headers_in_any_case(
    echo_url: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    """A header the caller spelled ``Traceparent`` is replaced, never sent beside tracekit's:
    two ``traceparent`` headers read as no parent at all, and the next service starts a trace."""
    stale = {"Traceparent": f"00-{1:032x}-{1:016x}-01", "X-Correlation-ID": "from-the-caller"}
    with urllib3.PoolManager() as pool:
        seen = json.loads(pool.request("GET", echo_url, headers=stale).data)

    (span,) = wait_for_spans(1)
    assert seen["traceparent"] == f"00-{PARENT_TRACE:032x}-{span.context.span_id:016x}-03"
    assert seen["x-correlation-id"] == "client-test-1"


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_the_configured_correlation_header_is_the_one_sent(
    name: str,
    echo_url: str,
    http_clients: None,
    in_request: None,
    monkeypatch: pytest.MonkeyPatch,
    wait_for_spans: Any,
) -> None:
    monkeypatch.setenv("TRACEKIT_RESPONSE_HEADER", "X-Request-ID")
    seen = CLIENTS[name](echo_url)
    assert seen["x-request-id"] == "client-test-1"
    assert "x-correlation-id" not in seen


def _sending_header(name: str, url: str, header: dict[str, str]) -> dict[str, str]:
    """``CLIENTS[name]``'s call, with ``header`` set by the caller."""
    if name == "requests":
        return requests.get(url, headers=header, timeout=10).json()
    if name == "httpx":
        return httpx.get(url, headers=header, timeout=10).json()
    if name == "urllib3":
        with urllib3.PoolManager() as pool:
            return json.loads(pool.request("GET", url, headers=header).data)

    async def go() -> dict[str, str]:
        if name == "httpx-async":
            async with httpx.AsyncClient() as client:
                return (await client.get(url, headers=header, timeout=10)).json()
        async with aiohttp.ClientSession() as session, session.get(url, headers=header) as got:
            return json.loads(await got.read())

    return _run(go())


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_outside_a_request_the_span_carries_the_id_the_caller_sends(
    name: str, echo_url: str, http_clients: None, wait_for_spans: Any
) -> None:
    """A job naming its calls with its own X-Correlation-ID (no request current): the called
    service records that ID, and so does the call's span, which ``tracekit trace job-7`` then
    finds where the service called records nothing. A value that is no valid ID names nothing."""
    seen = _sending_header(name, echo_url, {"X-Correlation-ID": "job-7"})
    _sending_header(name, echo_url, {"X-Correlation-ID": "job 7 <script>"})

    named, unnamed = sorted(wait_for_spans(2), key=lambda span: span.start_time)
    assert seen["x-correlation-id"] == "job-7"
    assert named.attributes["correlation.id"] == "job-7"
    assert "correlation.id" not in unnamed.attributes


def test_inside_a_request_the_span_keeps_the_requests_id(
    echo_url: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    _sending_header("requests", echo_url, {"X-Correlation-ID": "job-7"})

    (span,) = wait_for_spans(1)
    assert span.attributes["correlation.id"] == "client-test-1"


def test_a_request_sent_again_carries_no_header_of_an_earlier_call(
    echo_url: str, http_clients: None, wait_for_spans: Any
) -> None:
    """requests' ``Session.send`` and httpx's ``Client.send`` of one request object, first
    inside request A, then outside any request: the second must not speak for A."""
    prepared = requests.Request("GET", echo_url).prepare()
    built = httpx.Request("GET", echo_url, headers={"X-Correlation-ID": "set-by-the-app"})
    with requests.Session() as session, httpx.Client() as client:
        token = correlation.set_correlation_id("request-a")
        try:
            first = (session.send(prepared).json(), client.send(built).json())
        finally:
            correlation.reset_correlation_id(token)
        again = (session.send(prepared).json(), client.send(built).json())

    assert [seen["x-correlation-id"] for seen in first] == ["request-a", "request-a"]
    assert "x-correlation-id" not in again[0] and "baggage" not in again[0]
    assert again[1]["x-correlation-id"] == "set-by-the-app"  # the app's own value stays
    assert "baggage" not in again[1]
    assert "traceparent" not in prepared.headers and "baggage" not in built.headers


class _AppRequest(httpx.Request):
    """An application's own kind of request (a method or two of its own)."""


def test_an_httpx_request_of_a_subclass_sent_again_starts_a_trace_of_its_own(
    echo_url: str, http_clients: None, wait_for_spans: Any
) -> None:
    """A request of an ``httpx.Request`` subclass, sent twice outside any request: the
    second call's trace must not be the first call's (it is its own call, as without
    tracekit), and the application's object keeps only the headers it was given."""
    built = _AppRequest("GET", echo_url)
    with httpx.Client() as client:
        first, again = client.send(built).json(), client.send(built).json()

    spans = wait_for_spans(2)
    assert [span.parent for span in spans] == [None, None]  # the second is no child of the first
    trace_ids = {seen["traceparent"].split("-")[1] for seen in (first, again)}
    assert len(trace_ids) == 2, (first, again)
    assert "traceparent" not in built.headers and "x-correlation-id" not in built.headers


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_url_full_shows_credentials_were_given_without_them(
    name: str, echo_url: str, http_clients: None, wait_for_spans: Any
) -> None:
    """As OpenTelemetry asks: user and password each ``REDACTED``, so a 401 reads as a call
    that did send credentials; the query (tokens) left out as before."""
    CLIENTS[name](echo_url.replace("http://", "http://user:hunter2@"))

    (span,) = wait_for_spans(1)
    origin = echo_url.split("/echo/")[0].replace("http://", "http://REDACTED:REDACTED@")
    assert span.attributes["url.full"] == f"{origin}/echo/path"


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_url_secrets_stay_out_of_error_status_and_events(
    name: str, http_clients: None, wait_for_spans: Any
) -> None:
    refused = (requests.ConnectionError, httpx.ConnectError, urllib3.exceptions.HTTPError,
               aiohttp.ClientError)  # fmt: skip
    with pytest.raises(refused):
        CLIENTS[name]("http://user:hunter2@127.0.0.1:9/closed?token=SECRET123")

    for span in sent_again(wait_for_spans, ATTEMPTS.get(name, 1)):
        event = next(e for e in span.events if e.name == "exception")
        recorded = [span.status.description, *event.attributes.values(), *span.attributes.values()]
        assert span.status.status_code.name == "ERROR"
        assert not [t for t in recorded if "SECRET123" in str(t) or "hunter2" in str(t)]


@pytest.mark.parametrize("name", ["requests", "urllib3"])  # their errors quote the URL
@pytest.mark.parametrize("query", ["ids=1,2&token=SECRET123", "f=(a)&token=SECRET123"])
def test_a_query_with_commas_or_parentheses_is_cut_whole_from_errors(
    name: str, query: str, http_clients: None, wait_for_spans: Any
) -> None:
    """A query is cut up to its end, not to its first comma or parenthesis (both legal in a
    query, and sent unencoded): the token after one stays out of the status and the event."""
    with pytest.raises((requests.ConnectionError, urllib3.exceptions.HTTPError)):
        CLIENTS[name](f"http://127.0.0.1:9/closed?{query}")

    attempts = sent_again(wait_for_spans, ATTEMPTS.get(name, 1))
    assert "/closed?…" in attempts[-1].status.description  # the error that quotes the URL
    for span in attempts:
        event = next(e for e in span.events if e.name == "exception")
        recorded = [span.status.description, *event.attributes.values()]
        assert not [text for text in recorded if "SECRET123" in str(text)]


def test_aiohttp_raise_for_status_keeps_the_status(
    serve_wsgi: Any, http_clients: None, wait_for_spans: Any
) -> None:
    def unavailable(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]

    url = serve_wsgi(unavailable) + "/down"

    async def go() -> None:
        async with aiohttp.ClientSession(raise_for_status=True) as session:
            await session.get(url)

    with pytest.raises(aiohttp.ClientResponseError):
        _run(go())

    (span,) = wait_for_spans(1)
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["error.type"] == "503"
    assert span.status.status_code.name == "ERROR"


@pytest.fixture
def answering_malformed() -> Iterator[str]:
    """A server on loopback that answers 200 with a header line no HTTP parser takes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with contextlib.suppress(OSError), listener.accept()[0] as connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nNo Colon\r\n\r\nok")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/malformed"
    listener.close()
    thread.join(10)


def test_aiohttp_a_response_it_cannot_parse_is_no_400_from_the_server(
    answering_malformed: str, http_clients: None, wait_for_spans: Any
) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            await session.get(answering_malformed)

    with pytest.raises(aiohttp.ClientResponseError):  # aiohttp's own 400, "Invalid header token"
        _run(go())

    (span,) = wait_for_spans(1)
    assert "http.response.status_code" not in span.attributes
    assert span.attributes["error.type"] == "ClientResponseError"
    assert "Invalid header token" in span.status.description


@pytest.mark.parametrize(("scheme", "port"), [("ws", 80), ("wss", 443)])
def test_an_aiohttp_websocket_to_a_default_port_names_that_port(
    scheme: str, port: int, http_clients: None, wait_for_spans: Any
) -> None:
    # an address of loopback where nothing listens: aiohttp really connects, and is refused
    url = f"{scheme}://127.83.41.7/socket"

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            await session.ws_connect(url)

    with pytest.raises(aiohttp.ClientConnectorError, match=f":{port} "):
        _run(go())

    (span,) = wait_for_spans(1)
    assert span.attributes["server.port"] == port
    assert span.attributes["url.full"] == url


def _raise_for_status_in_a_hook(name: str, url: str) -> None:
    if name == "requests":
        requests.get(url, timeout=10, hooks={"response": lambda r, *_, **__: r.raise_for_status()})
    elif name == "httpx":
        with httpx.Client(event_hooks={"response": [lambda r: r.raise_for_status()]}) as client:
            client.get(url, timeout=10)
    else:

        async def check(response: httpx.Response) -> None:
            response.raise_for_status()

        async def go() -> None:
            async with httpx.AsyncClient(event_hooks={"response": [check]}) as client:
                await client.get(url, timeout=10)

        _run(go())


@pytest.mark.parametrize("name", ["httpx", "httpx-async", "requests"])
def test_raise_for_status_in_a_response_hook_keeps_the_status(
    name: str, serve_wsgi: Any, http_clients: None, wait_for_spans: Any
) -> None:
    """httpx's documented way to raise on 4xx/5xx (an event hook) and requests' response hook:
    the server answered 503, and the span and its metrics say 503, as without the hook."""

    def unavailable(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]

    with pytest.raises((requests.HTTPError, httpx.HTTPStatusError)):
        _raise_for_status_in_a_hook(name, serve_wsgi(unavailable) + "/down")

    (span,) = wait_for_spans(1)
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["error.type"] == "503"
    assert span.status.status_code.name == "ERROR"


def test_an_ipv6_host_keeps_its_brackets_in_url_full(
    http_clients: None, wait_for_spans: Any
) -> None:
    with pytest.raises(httpx.HTTPError), httpx.Client() as client:
        client.get("http://[::1]:9/x?q=1", timeout=5)

    (span,) = wait_for_spans(1)
    assert span.attributes["url.full"] == "http://[::1]:9/x"


def test_a_urllib3_pool_to_a_default_port_names_the_url_as_a_pool_manager_does(
    http_clients: None, wait_for_spans: Any
) -> None:
    """botocore sends through pools from ``connection_from_url``, which hold port 443: the
    span's URL is the one the same call through a PoolManager gets, without ``:443``."""
    with urllib3.PoolManager(retries=False) as manager:
        pool = manager.connection_from_url("https://127.0.0.1/")  # nothing listens on 443
        with pytest.raises(urllib3.exceptions.HTTPError):
            pool.urlopen("GET", "/x?q=1")
        with pytest.raises(urllib3.exceptions.HTTPError):
            manager.urlopen("GET", "https://127.0.0.1/x?q=1")

    spans = wait_for_spans(2)
    assert [span.attributes["url.full"] for span in spans] == ["https://127.0.0.1/x"] * 2
    assert [span.attributes["server.port"] for span in spans] == [443, 443]


PURGES: dict[str, Callable[[str], Any]] = {
    "requests": lambda url: requests.request("PURGE", url, timeout=10),
    "httpx": lambda url: httpx.request("PURGE", url, timeout=10),
    "urllib3": lambda url: urllib3.request("PURGE", url),
}


def test_urllib3_names_a_non_ascii_path_as_it_sends_it_as_requests_does(
    echo_url: str, http_clients: None, wait_for_spans: Any
) -> None:
    url = echo_url.replace("/echo/path", "/straße")
    with urllib3.PoolManager() as pool:
        assert pool.request("GET", url).status == 200
    requests.get(url, timeout=10)

    by_urllib3, by_requests = wait_for_spans(2)
    assert by_urllib3.attributes["url.full"].endswith("/stra%C3%9Fe")
    assert by_urllib3.attributes["url.full"] == by_requests.attributes["url.full"]


def test_urllib3_names_a_non_ascii_host_as_it_connects_to_it(
    http_clients: None, wait_for_spans: Any
) -> None:
    with urllib3.PoolManager() as pool, pytest.raises(urllib3.exceptions.NameResolutionError):
        pool.request("GET", "http://bücher.invalid/x", retries=False)  # nothing resolves .invalid

    (span,) = wait_for_spans(1)
    assert span.attributes["server.address"] == "xn--bcher-kva.invalid"
    assert span.attributes["url.full"] == "http://xn--bcher-kva.invalid/x"


@pytest.mark.parametrize("name", sorted(PURGES))
def test_a_method_outside_the_known_ones_is_kept_as_method_original(
    name: str, echo_url: str, http_clients: None, wait_for_spans: Any
) -> None:
    """As OpenTelemetry's instrumentations do: ``_OTHER`` and a span named ``HTTP``, with the
    method sent in ``http.request.method_original`` (a cache's PURGE, WebDAV's PROPFIND)."""
    PURGES[name](echo_url)

    (span,) = wait_for_spans(1)
    assert span.name == "HTTP"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "PURGE"


def test_a_method_sent_in_other_capitals_is_kept_as_method_original(
    echo_url: str, http_clients: None, wait_for_spans: Any
) -> None:
    """urllib3's ``urlopen`` sends ``get`` as given (a server may refuse it: methods are
    case-sensitive); the span says GET, as OpenTelemetry allows, and then must keep what was
    sent beside it."""
    with urllib3.PoolManager() as pool:
        pool.urlopen("get", echo_url)

    (span,) = wait_for_spans(1)
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.request.method_original"] == "get"


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_a_urllib3_pool_to_an_ipv6_host_gets_its_span(
    host: str, http_clients: None, wait_for_spans: Any
) -> None:
    """A pool used directly (as botocore does) to an IPv6 literal: urllib3 keeps the host
    without brackets, and the span's URL must put them back."""
    with pytest.raises(urllib3.exceptions.HTTPError), urllib3.HTTPConnectionPool(host, 9) as pool:
        pool.urlopen("GET", "/x?q=1", retries=False)

    (span,) = wait_for_spans(1)
    assert span.attributes["url.full"] == "http://[::1]:9/x"
    assert span.attributes["server.address"] == "::1"
    assert span.status.status_code.name == "ERROR"


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_errors_are_recorded_and_raised(name: str, http_clients: None, wait_for_spans):
    with pytest.raises(Exception) as raised:
        CLIENTS[name]("http://127.0.0.1:9/closed")  # port 9 (discard): nothing listens

    *retried, span = sent_again(wait_for_spans, ATTEMPTS.get(name, 1))
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code.name == "ERROR"
    assert any(event.name == "exception" for event in span.events)
    assert span.attributes["error.type"] in {type(e).__qualname__ for e in _chain(raised.value)}
    for attempt in retried:  # what urllib3 retried after: the refused connection
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.status.status_code.name == "ERROR"
        assert attempt.attributes["error.type"] == "NewConnectionError"


@pytest.mark.parametrize("name", ["httpx", "httpx-async", "urllib3"])  # requests and aiohttp
def test_a_url_whose_port_is_no_port_fails_in_the_clients_words_with_a_span(  # refuse it first
    name: str, http_clients: None, wait_for_spans, caplog: pytest.LogCaptureFixture
) -> None:
    """``:99999`` made tracekit's own attribute code raise: the call went on untraced and
    the application's log got tracekit's warning with a traceback (an application calling
    URLs its users give, a webhook sender, would see it from the first such URL)."""
    with pytest.raises(Exception) as raised:
        CLIENTS[name]("http://127.0.0.1:99999/hook?token=t")

    assert "tracekit" not in caplog.text
    (span,) = wait_for_spans(1)
    assert span.attributes["url.full"] == "http://127.0.0.1/hook"
    assert "server.port" not in span.attributes
    assert span.attributes["error.type"] in {type(e).__qualname__ for e in _chain(raised.value)}


@pytest.mark.parametrize("url", ["http://[::1/hook?token=t", "http://[zz]/hook?token=t"])
def test_a_url_python_cannot_split_fails_in_urllib3s_words_with_a_span(
    url: str, http_clients: None, wait_for_spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An unclosed or invalid IPv6 literal made ``urlsplit`` raise in tracekit's attribute
    code: the call went untraced and the application's log got tracekit's warning and a
    traceback (a webhook sender calling the URLs its users give saw it from the first one)."""
    with pytest.raises(urllib3.exceptions.LocationParseError), urllib3.PoolManager() as pool:
        pool.urlopen("GET", url)

    assert "tracekit" not in caplog.text
    (span,) = wait_for_spans(1)
    assert span.name == "GET"
    assert span.attributes["error.type"] == "LocationParseError"
    assert "url.full" not in span.attributes


def sent_again(wait_for_spans: Any, count: int) -> list[Any]:
    """The spans of one call sent ``count`` times (redirects followed, retries), in the order
    sent: the first without ``http.request.resend_count``, then 1, 2, ...; in one trace."""
    found = sorted(wait_for_spans(count), key=lambda s: s.attributes.get(RESENDS, 0))
    assert [s.attributes.get(RESENDS) for s in found] == [None, *range(1, count)]
    assert len({s.context.trace_id for s in found}) == 1
    return found


RESENDS = "http.request.resend_count"
# urllib3 retries a refused connection three times by default: four attempts, four spans
ATTEMPTS = {"urllib3": 4}


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


ORIGINALS = {
    "requests": (requests.sessions.Session, "send"),
    "httpx": (httpx.Client, "send"),
    "httpx-async": (httpx.AsyncClient, "send"),
    "urllib3": (urllib3.connectionpool.HTTPConnectionPool, "urlopen"),
    "aiohttp": (aiohttp.ClientSession, "__init__"),
}


def test_uninstrument_restores_the_original_functions(echo_url: str, spans: Any) -> None:
    before = {name: owner.__dict__[attr] for name, (owner, attr) in ORIGINALS.items()}
    tracekit.instrumentation.instrument(["aiohttp", "httpx", "requests", "urllib3"])
    patched = {name: owner.__dict__[attr] for name, (owner, attr) in ORIGINALS.items()}

    tracekit.uninstrument()

    after = {name: owner.__dict__[attr] for name, (owner, attr) in ORIGINALS.items()}
    assert all(patched[name] is not before[name] for name in ORIGINALS)
    assert after == before
    for call in CLIENTS.values():
        assert "traceparent" not in call(echo_url)
    assert spans.get_finished_spans() == ()


def test_an_aiohttp_session_made_before_a_reinstrument_is_traced_again(
    echo_url: str, wait_for_spans: Any
) -> None:
    """``tracekit.shutdown()`` and ``init()`` again (a reload of configuration): a session made
    at startup stayed silent for good, while requests' and httpx's clients made then were
    traced again. Silent only while uninstrumented now."""

    async def call(session: aiohttp.ClientSession) -> dict[str, str]:
        async with session.get(echo_url) as response:
            return json.loads(await response.read())

    async def go() -> list[dict[str, str]]:
        tracekit.instrumentation.instrument(["aiohttp"])
        async with aiohttp.ClientSession() as session:
            tracekit.uninstrument()
            while_off = await call(session)
            tracekit.instrumentation.instrument(["aiohttp"])
            try:
                return [while_off, await call(session)]
            finally:
                tracekit.uninstrument()

    while_off, again = _run(go())

    (span,) = wait_for_spans(1)
    assert "traceparent" not in while_off
    assert again["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_an_aiohttp_session_made_before_tracekit_is_traced(
    echo_url: str, wait_for_spans: Any
) -> None:
    """A session made before ``tracekit.init()`` (at import, by a library's client) sent no
    trace headers and no correlation ID, and had no span, while requests' and httpx's clients
    made then were traced: the next service's logs lost the request."""

    async def go() -> dict[str, str]:
        async with aiohttp.ClientSession() as session:
            tracekit.instrumentation.instrument(["aiohttp"])
            try:
                async with session.get(echo_url) as response:
                    return json.loads(await response.read())
            finally:
                tracekit.uninstrument()

    seen = _run(go())

    (span,) = wait_for_spans(1)
    assert span.kind is SpanKind.CLIENT
    assert seen["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_instrument_twice_wraps_once(http_clients: None) -> None:
    first = httpx.Client.__dict__["send"]
    tracekit.instrumentation.instrument(["httpx"])
    assert httpx.Client.__dict__["send"] is first


def test_requests_refuses_an_unprepared_request_in_its_own_words(http_clients: None) -> None:
    with pytest.raises(ValueError, match="You can only send PreparedRequests"):
        requests.Session().send(requests.Request("GET", "http://127.0.0.1:9/"))


def test_a_request_prepared_without_headers_is_traced_by_requests_without_a_warning(
    echo_url: str,
    http_clients: None,
    wait_for_spans: Any,
    log_lines: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``PreparedRequest`` given only a method and a URL (its headers None), which requests
    sends as it is: tracekit's span and headers, and no warning of tracekit's in the app's
    log (which, warned once per process, would also hide a later real failure there)."""
    monkeypatch.setattr(guard, "_reported", set())  # warned once per process: this test's
    prepared = requests.PreparedRequest()
    prepared.prepare_method("GET")
    prepared.prepare_url(echo_url, None)
    token = correlation.set_correlation_id("bare-1")
    try:
        seen = requests.Session().send(prepared, timeout=10).json()
    finally:
        correlation.reset_correlation_id(token)

    (span,) = wait_for_spans(1)
    assert seen["x-correlation-id"] == "bare-1"
    assert seen["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert not [line for line in log_lines if "tracekit" in line], log_lines
    assert prepared.headers is None  # the caller's object as it was


class _PriorityRequest(requests.PreparedRequest):
    """An application's own prepared request, with what its transport adapter reads."""

    priority = "normal"


class _PriorityAdapter(requests.adapters.HTTPAdapter):
    """An application's adapter that reads what its requests carry."""

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().send(request, *args, **kwargs)
        response.headers["X-Sent-As"] = f"{type(request).__name__} {request.priority}"
        return response


class _SlottedPriorityRequest(requests.PreparedRequest):
    """An application's own prepared request keeping what its adapter reads in a slot."""

    __slots__ = ("priority",)


@pytest.mark.parametrize("request_class", [_PriorityRequest, _SlottedPriorityRequest])
def test_a_requests_adapter_gets_the_request_of_the_applications_class_and_attributes(
    request_class: type[requests.PreparedRequest],
    echo_url: str,
    http_clients: None,
    wait_for_spans: Any,
) -> None:
    """tracekit sends a copy: it was requests' own ``copy()``, a plain ``PreparedRequest``
    without the attribute the application's adapter reads (``AttributeError`` in the app),
    then one made from ``vars()``, without an attribute kept in ``__slots__``."""
    session = requests.Session()
    session.mount("http://", _PriorityAdapter())
    prepared = request_class()
    prepared.__dict__.update(vars(session.prepare_request(requests.Request("GET", echo_url))))
    prepared.priority = "high"  # type: ignore[attr-defined]

    response = session.send(prepared, timeout=10)

    (span,) = wait_for_spans(1)
    assert response.headers["X-Sent-As"] == f"{request_class.__name__} high"
    assert response.json()["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert "traceparent" not in prepared.headers  # the caller's object as it was


# A redirect the server sends a client to another origin. The application called one origin; a
# redirect to another (a CDN, a signed storage URL, an identity provider) is the server's choice.
# HTTP clients drop ``Authorization`` there, as browsers do; tracekit's ``baggage`` (application
# data) and its correlation header followed every hop. The trace headers still go: that hop is
# the call's CLIENT span, and they name nothing but it.


def _redirecting(elsewhere: str) -> Any:
    """The called origin: ``/away`` redirects to ``elsewhere``, ``/stay`` to its own echo."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path in ("/away", "/stay"):
            target = elsewhere + "/echo" if path == "/away" else "/echo"
            start_response("302 Found", [("Location", target), ("Content-Length", "0")])
            return [b""]
        return echo_app(environ, start_response)

    return app


def follow_with_httpx(url: str) -> dict[str, str]:
    with httpx.Client(follow_redirects=True) as client:
        return client.get(url, timeout=10).json()


def follow_with_httpx_async(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            return (await client.get(url, timeout=10)).json()

    return _run(go())


# Each client as it follows redirects (httpx only when asked to).
FOLLOWING = {**CLIENTS, "httpx": follow_with_httpx, "httpx-async": follow_with_httpx_async}


@pytest.fixture
def origins(serve_wsgi: Any) -> str:
    """The called origin's base URL; ``/away`` sends the client to another port: another
    origin, though the same host, for every client and for browsers."""
    return serve_wsgi(_redirecting(serve_wsgi(echo_app)))


@pytest.mark.parametrize("name", sorted(FOLLOWING))
def test_a_redirect_to_another_origin_carries_no_baggage_or_correlation_id(
    name: str, origins: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    seen = FOLLOWING[name](origins + "/away")

    first, span = sent_again(wait_for_spans, 2)
    assert "baggage" not in seen and "x-correlation-id" not in seen, seen
    assert seen["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert span.attributes["correlation.id"] == "client-test-1"  # tracekit still knows it
    assert first.attributes["correlation.id"] == "client-test-1"


@pytest.mark.parametrize("name", sorted(FOLLOWING))
def test_a_redirect_within_the_origin_carries_them_as_before(
    name: str, origins: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    seen = FOLLOWING[name](origins + "/stay")

    assert seen["x-correlation-id"] == "client-test-1"
    assert "tenant=acme" in seen["baggage"]
    hop = sent_again(wait_for_spans, 2)[1]
    assert seen["traceparent"].split("-")[2] == f"{hop.context.span_id:016x}"


def test_a_redirect_to_another_origin_carries_the_callers_own_headers_as_they_were(
    origins: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    """What the caller set itself goes on as without tracekit: its own ``baggage`` and
    correlation header, not tracekit's values written over them for the origin it called."""
    own = {"baggage": "order=7", "X-Correlation-ID": "callers-own"}
    seen = requests.get(origins + "/away", headers=own, timeout=10).json()

    assert (seen["baggage"], seen["x-correlation-id"]) == ("order=7", "callers-own")
    assert len(sent_again(wait_for_spans, 2)) == 2


@pytest.fixture
def away_and_back(serve_wsgi: Any) -> str:
    """The called origin: ``/away`` sends the client to another origin, whose ``/back`` sends it
    back to the called origin's echo (a login or a storage hop that returns)."""
    called: list[str] = []

    def elsewhere(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("302 Found", [("Location", called[0] + "/echo"), ("Content-Length", "0")])
        return [b""]

    called.append(serve_wsgi(_redirecting(serve_wsgi(elsewhere))))
    return called[0]


@pytest.mark.parametrize("name", sorted(FOLLOWING))
def test_a_redirect_back_to_the_called_origin_carries_them_again(
    name: str, away_and_back: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    """Only the hop elsewhere goes without them: the origin the application called gets its
    correlation ID and baggage on every hop to it, as before."""
    seen = FOLLOWING[name](away_and_back + "/away")

    assert seen.get("x-correlation-id") == "client-test-1", seen
    assert "tenant=acme" in seen.get("baggage", ""), seen
    back = sent_again(wait_for_spans, 3)[2]
    assert seen["traceparent"].split("-")[2] == f"{back.context.span_id:016x}"


@pytest.fixture
def correlation_only(monkeypatch: pytest.MonkeyPatch, spans: Any) -> Iterator[None]:
    """Correlation-only mode: the request's context goes out, and no CLIENT span is made."""
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")
    yield
    assert spans.get_finished_spans() == ()


# The caller's remote parent: passed on as it came, there being no span of tracekit's
CALLERS_PARENT = f"00-{PARENT_TRACE:032x}-{0xB7AD6B7169203331:016x}-03"


@pytest.mark.parametrize("name", sorted(FOLLOWING))
def test_correlation_only_a_redirect_to_another_origin_carries_no_baggage_or_correlation_id(
    name: str, origins: str, http_clients: None, in_request: None, correlation_only: None
) -> None:
    """Correlation-only mode keeps no record of a call, and its baggage and correlation ID
    followed a redirect to any origin: now the origin called is the only one they go to, as in
    full mode."""
    seen = FOLLOWING[name](origins + "/away")

    assert "baggage" not in seen and "x-correlation-id" not in seen, seen
    assert seen["traceparent"] == CALLERS_PARENT


@pytest.mark.parametrize("name", sorted(FOLLOWING))
def test_correlation_only_a_redirect_within_the_origin_carries_them_as_before(
    name: str, origins: str, http_clients: None, in_request: None, correlation_only: None
) -> None:
    seen = FOLLOWING[name](origins + "/stay")

    assert seen["x-correlation-id"] == "client-test-1"
    assert "tenant=acme" in seen["baggage"]
    assert seen["traceparent"] == CALLERS_PARENT


@pytest.mark.parametrize("name", sorted(FOLLOWING))
def test_correlation_only_a_redirect_back_to_the_called_origin_carries_them_again(
    name: str, away_and_back: str, http_clients: None, in_request: None, correlation_only: None
) -> None:
    seen = FOLLOWING[name](away_and_back + "/away")

    assert seen.get("x-correlation-id") == "client-test-1", seen
    assert "tenant=acme" in seen.get("baggage", ""), seen


@pytest.fixture
def away_then_within_elsewhere(serve_wsgi: Any) -> str:
    """The called origin: ``/away`` sends the client to another origin's ``/stay``, which sends
    it on within that other origin (a login page that redirects to its own form)."""
    elsewhere = serve_wsgi(_redirecting("http://unused.invalid"))

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("302 Found", [("Location", elsewhere + "/stay"), ("Content-Length", "0")])
        return [b""]

    return serve_wsgi(app)


@pytest.mark.parametrize("name", sorted(FOLLOWING))
def test_correlation_only_a_redirect_within_another_origin_carries_no_baggage_or_correlation_id(
    name: str,
    away_then_within_elsewhere: str,
    http_clients: None,
    in_request: None,
    correlation_only: None,
) -> None:
    """requests before 2.34 leaves the first response out of a redirect's history: the second
    hop took the other origin for the one called, and sent it the baggage and correlation ID."""
    seen = FOLLOWING[name](away_then_within_elsewhere + "/away")

    assert "baggage" not in seen and "x-correlation-id" not in seen, seen
    assert seen["traceparent"] == CALLERS_PARENT


def test_correlation_only_a_call_from_a_hook_during_a_redirect_is_a_call_of_its_own(
    origins: str,
    serve_wsgi: Any,
    http_clients: None,
    in_request: None,
    correlation_only: None,
) -> None:
    """A response hook of the hop elsewhere calls a third origin: that call is the
    application's own, with the request's correlation ID, not a hop of the redirect."""
    third = serve_wsgi(echo_app) + "/echo"
    from_hook: list[dict[str, str]] = []

    def hook(response: requests.Response, **kwargs: Any) -> None:
        if not response.is_redirect:
            from_hook.append(requests.get(third, timeout=10).json())

    seen = requests.get(origins + "/away", hooks={"response": hook}, timeout=10).json()

    assert "x-correlation-id" not in seen, seen
    assert from_hook[0]["x-correlation-id"] == "client-test-1", from_hook
    assert "tenant=acme" in from_hook[0]["baggage"]


# aiohttp follows a redirect named by a ``URI`` header where the response has no ``Location``
# (RFC 2616's predecessor's header, still read by aiohttp): a server choosing that header must
# not get the call's baggage and correlation ID to another origin past tracekit's rule.


@pytest.fixture
def uri_redirect(serve_wsgi: Any) -> str:
    """The called origin: ``/away`` answers 302 with ``URI`` (no ``Location``) to another one."""
    elsewhere = serve_wsgi(echo_app)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] != "/away":
            return echo_app(environ, start_response)
        start_response("302 Found", [("URI", elsewhere + "/echo"), ("Content-Length", "0")])
        return [b""]

    return serve_wsgi(app)


def test_aiohttp_a_uri_header_redirect_to_another_origin_carries_no_baggage_or_correlation_id(
    uri_redirect: str, http_clients: None, in_request: None, wait_for_spans: Any
) -> None:
    seen = call_aiohttp(uri_redirect + "/away")

    assert "baggage" not in seen and "x-correlation-id" not in seen, seen
    hop = sent_again(wait_for_spans, 2)[1]
    assert seen["traceparent"].split("-")[2] == f"{hop.context.span_id:016x}"


def test_correlation_only_aiohttp_a_uri_header_redirect_to_another_origin_carries_neither(
    uri_redirect: str, http_clients: None, in_request: None, correlation_only: None
) -> None:
    seen = call_aiohttp(uri_redirect + "/away")

    assert "baggage" not in seen and "x-correlation-id" not in seen, seen
    assert seen["traceparent"] == CALLERS_PARENT
