"""Each request a client sends again (a redirect it follows, a retry) is a CLIENT span of its own
with ``http.request.resend_count`` (1 for the first resend), in the call's trace, and the trace
headers that request carried name that span, as OpenTelemetry's HTTP client conventions ask.
Before, one span covered every hop and every hop carried the first one's ``traceparent``: a
server reached by a redirect showed up as a child of the request that was redirected.

Real clients against werkzeug servers on loopback; the servers record what each request carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any
from urllib.parse import unquote

import aiohttp
import httpx
import pytest
import requests
import requests.auth
import urllib3
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from requests.adapters import HTTPAdapter

from tracekit import correlation

CID = "resend-cid-1"
RESENDS = "http.request.resend_count"


class Server:
    """``/to/<code>/<n>`` answers ``code`` to ``/to/<code>/<n-1>``, and ``/to/<code>/0`` to
    ``/done``; ``/away`` sends the client to ``elsewhere``'s ``/done``; ``/loop`` to itself;
    ``/flaky`` answers 503 twice, then 200, and ``/to-flaky`` sends the client there;
    ``/digest`` asks for digest credentials (401) until a request brings some; ``/busy-moved``
    answers 503 once, then 302 to ``/done``; ``/far`` sends the client to a path of 20,000
    characters; ``/nowhere`` answers 302 without a Location. Every request's
    path, method, ``traceparent`` and correlation header are kept."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None, str | None]] = []
        self.elsewhere = ""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        carried = (environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_X_CORRELATION_ID"))
        self.seen.append((path, environ["REQUEST_METHOD"], *carried))
        if path.startswith("/to/"):
            _, _, code, left = path.split("/")
            target = f"/to/{code}/{int(left) - 1}" if int(left) else "/done"
            return _redirect(start_response, code, target)
        if path == "/away":
            return _redirect(start_response, "302", self.elsewhere + "/done")
        if path == "/to-flaky":
            return _redirect(start_response, "302", "/flaky")
        if path == "/digest" and "HTTP_AUTHORIZATION" not in environ:
            challenge = 'Digest realm="r", nonce="n0", qop="auth"'
            start_response("401 Unauthorized", [("WWW-Authenticate", challenge)])
            return []
        if path == "/busy-moved":
            if [p for p, *_ in self.seen].count(path) < 2:
                start_response("503 Service Unavailable", [("Content-Length", "0")])
                return []
            return _redirect(start_response, "302", "/done")
        if path == "/loop":
            return _redirect(start_response, "307", "/loop")
        if path == "/far":  # a Location far longer than any span attribute should be
            return _redirect(start_response, "302", "/" + "x" * 20_000)
        if path == "/nowhere":  # a redirect without a Location: the client returns it
            start_response("302 Found", [("Content-Length", "0")])
            return []
        if path == "/flaky" and [p for p, *_ in self.seen].count(path) < 3:
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return []
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]


def _redirect(start_response: Any, code: str, location: str) -> list[bytes]:
    start_response(f"{code} Moved", [("Location", location), ("Content-Length", "0")])
    return []


@pytest.fixture
def servers(serve_wsgi: Any) -> Iterator[tuple[Server, str, Server]]:
    """The called server, its base URL, and another origin it redirects to."""
    called, other = Server(), Server()
    called.elsewhere = serve_wsgi(other)
    yield called, serve_wsgi(called), other


@pytest.fixture
def in_request() -> Iterator[trace.Span]:
    """A request under way: a correlation ID and a current span, the calls' parent."""
    token = correlation.set_correlation_id(CID)
    with trace.get_tracer("test").start_as_current_span("handler") as span:
        yield span
    correlation.reset_correlation_id(token)


def with_requests(url: str, method: str = "GET") -> None:
    requests.request(method, url, data=b"x" if method == "POST" else None, timeout=10)


def with_httpx(url: str, method: str = "GET") -> None:
    with httpx.Client(follow_redirects=True) as client:
        client.request(method, url, content=b"x" if method == "POST" else None, timeout=10)


def with_httpx_async(url: str, method: str = "GET") -> None:
    async def go() -> None:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            await client.request(method, url, content=b"x" if method == "POST" else None)

    asyncio.run(go())


def with_urllib3(url: str, method: str = "GET") -> None:
    with urllib3.PoolManager() as pool:
        pool.request(method, url, body=b"x" if method == "POST" else None)


def with_aiohttp(url: str, method: str = "GET") -> None:
    async def go() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, data=b"x" if method == "POST" else None) as answer,
        ):
            await answer.read()

    asyncio.run(go())


# urllib3 retries a 503 at once, up to three times (requests' adapters pass it down to urllib3)
RETRY_503 = urllib3.Retry(total=3, status_forcelist=[503], backoff_factor=0)


def get_retrying(name: str, url: str, retry: urllib3.Retry) -> int:
    """GET ``url`` with ``retry`` through requests' adapter or a urllib3 ``PoolManager``: the
    status the call returned."""
    if name == "requests":
        session = requests.Session()
        session.mount("http://", HTTPAdapter(max_retries=retry))
        return session.get(url, timeout=10).status_code
    with urllib3.PoolManager(retries=retry) as pool:
        return pool.request("GET", url).status


CLIENTS: dict[str, Callable[..., None]] = {
    "requests": with_requests,
    "httpx": with_httpx,
    "httpx-async": with_httpx_async,
    "urllib3": with_urllib3,
    "aiohttp": with_aiohttp,
}


def in_order(wait_for_spans: Any, count: int) -> list[Any]:
    """The CLIENT spans (at least ``count`` awaited), first sent first."""
    found = [s for s in wait_for_spans(count) if s.kind is SpanKind.CLIENT]
    return sorted(found, key=lambda s: s.attributes.get(RESENDS, 0))


def traceparent_of(span: Any) -> str:
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-03"


@pytest.mark.parametrize("code", ["301", "302", "307", "308"])
@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_each_redirect_followed_is_a_span_of_its_own(
    name: str,
    code: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    called, base, _ = servers

    CLIENTS[name](f"{base}/to/{code}/1")

    spans = in_order(wait_for_spans, 3)
    assert [s.attributes.get(RESENDS) for s in spans] == [None, 1, 2]
    assert [s.attributes["url.full"] for s in spans] == [
        f"{base}/to/{code}/1",
        f"{base}/to/{code}/0",
        f"{base}/done",
    ]
    assert [s.attributes["http.response.status_code"] for s in spans] == [int(code)] * 2 + [200]
    # siblings under the caller's span, each request naming its own span, correlated
    assert {s.parent.span_id for s in spans} == {in_request.get_span_context().span_id}
    assert [(tp, cid) for *_, tp, cid in called.seen] == [(traceparent_of(s), CID) for s in spans]
    assert {s.attributes["correlation.id"] for s in spans} == {CID}


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_redirect_without_a_location_is_one_span_and_no_warning(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 302 without a Location is the answer the client returns: aiohttp tells of it as a
    redirect, and tracekit logged "aiohttp resend failed (KeyError)" with a traceback."""
    _, base, _ = servers

    CLIENTS[name](f"{base}/nowhere")

    (span,) = in_order(wait_for_spans, 1)
    assert span.attributes["http.response.status_code"] == 302
    assert [r.getMessage() for r in caplog.records if r.name == "tracekit"] == []


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_redirect_to_another_origin_is_its_own_span_without_the_correlation_id(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """The hop elsewhere carries its own span's traceparent; the correlation header stays
    within the origin called (docs/design-notes.md), and tracekit's spans still know the ID."""
    called, base, other = servers

    CLIENTS[name](f"{base}/away")

    first, hop = in_order(wait_for_spans, 2)
    assert hop.attributes[RESENDS] == 1
    assert called.seen == [("/away", "GET", traceparent_of(first), CID)]
    assert other.seen == [("/done", "GET", traceparent_of(hop), None)]
    assert hop.attributes["correlation.id"] == CID


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_post_redirected_by_a_303_is_a_get_span(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    called, base, _ = servers

    CLIENTS[name](f"{base}/to/303/0", "POST")

    spans = in_order(wait_for_spans, 2)
    assert [m for _, m, *_ in called.seen] == ["POST", "GET"]
    assert [s.attributes["http.request.method"] for s in spans] == ["POST", "GET"]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_call_outside_a_request_keeps_its_resends_in_its_trace(
    name: str, servers: tuple[Server, str, Server], http_clients: None, wait_for_spans: Any
) -> None:
    """With no span current the first request begins a trace: its resends stay in it."""
    called, base, _ = servers

    CLIENTS[name](f"{base}/to/302/0")

    first, hop = in_order(wait_for_spans, 2)
    assert first.parent is None
    assert hop.parent.span_id == first.context.span_id
    assert hop.context.trace_id == first.context.trace_id
    assert [tp for *_, tp, _ in called.seen] == [traceparent_of(first), traceparent_of(hop)]


LIMIT_HIT = {
    "requests": "TooManyRedirects",
    "httpx": "TooManyRedirects",
    "httpx-async": "TooManyRedirects",
    "urllib3": "MaxRetryError",
    "aiohttp": "TooManyRedirects",
}


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_redirect_loop_ends_every_span_the_last_with_the_clients_error(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    called, base, _ = servers

    too_many = (requests.TooManyRedirects, httpx.TooManyRedirects,
                urllib3.exceptions.MaxRetryError, aiohttp.TooManyRedirects)  # fmt: skip
    with pytest.raises(too_many):
        CLIENTS[name](f"{base}/loop")

    spans = in_order(wait_for_spans, len(called.seen))
    # one span per request sent: aiohttp tells of a redirect before it checks its limit, and
    # the resend it then refused had a span of its own (11 spans for 10 requests)
    assert len(spans) == len(called.seen)
    assert [s.attributes.get(RESENDS) for s in spans] == [None, *range(1, len(spans))]
    assert {s.attributes.get("http.response.status_code") for s in spans[:-1]} == {307}
    assert spans[-1].attributes["error.type"] == LIMIT_HIT[name]
    assert [(tp, cid) for *_, tp, cid in called.seen] == [(traceparent_of(s), CID) for s in spans]
    assert all(a.end_time <= b.start_time for a, b in pairwise(spans))


def test_a_requests_adapter_retry_is_a_span_of_its_own(
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    called, base, _ = servers

    assert get_retrying("requests", f"{base}/flaky", RETRY_503) == 200

    spans = in_order(wait_for_spans, 3)
    assert [s.attributes.get(RESENDS) for s in spans] == [None, 1, 2]
    assert [s.attributes["http.response.status_code"] for s in spans] == [503, 503, 200]
    assert [s.attributes.get("error.type") for s in spans] == ["503", "503", None]
    assert [(tp, cid) for *_, tp, cid in called.seen] == [(traceparent_of(s), CID) for s in spans]


def test_a_redirect_then_a_retry_counts_both(
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """requests follows the redirect, urllib3 below it retries the hop: one count for both."""
    called, base, _ = servers

    assert get_retrying("requests", f"{base}/to-flaky", RETRY_503) == 200

    spans = in_order(wait_for_spans, 4)
    assert [s.attributes.get(RESENDS) for s in spans] == [None, 1, 2, 3]
    assert [s.attributes["http.response.status_code"] for s in spans] == [302, 503, 503, 200]
    assert [(tp, cid) for *_, tp, cid in called.seen] == [(traceparent_of(s), CID) for s in spans]


@pytest.mark.parametrize("name", ["requests", "httpx"])
def test_a_redirect_not_followed_is_one_span(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """requests and httpx prepare the next request (``response.next``) without sending it."""
    called, base, _ = servers

    if name == "requests":
        answer: Any = requests.get(f"{base}/to/302/0", allow_redirects=False, timeout=10)
        assert answer.next is not None
    else:
        answer = httpx.get(f"{base}/to/302/0", timeout=10)
        assert answer.next_request is not None

    (span,) = in_order(wait_for_spans, 1)
    assert span.attributes["http.response.status_code"] == 302
    assert RESENDS not in span.attributes
    assert [tp for *_, tp, _ in called.seen] == [traceparent_of(span)]


@pytest.mark.parametrize("name", ["requests", "httpx"])
def test_a_digest_auth_resend_is_a_span_of_its_own(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """The request sent again with credentials after a 401: requests sends it from a response
    hook straight through its adapter (one span covered both, ending with the 200), httpx from
    its auth flow."""
    called, base, _ = servers

    if name == "requests":
        auth: Any = requests.auth.HTTPDigestAuth("user", "secret")
        assert requests.get(f"{base}/digest", auth=auth, timeout=10).status_code == 200
    else:
        auth = httpx.DigestAuth("user", "secret")
        assert httpx.get(f"{base}/digest", auth=auth, timeout=10).status_code == 200

    spans = in_order(wait_for_spans, 2)
    assert [s.attributes.get(RESENDS) for s in spans] == [None, 1]
    assert [s.attributes["http.response.status_code"] for s in spans] == [401, 200]
    assert [(tp, cid) for *_, tp, cid in called.seen] == [(traceparent_of(s), CID) for s in spans]


@pytest.mark.parametrize("name", ["requests", "urllib3"])
def test_a_retry_then_a_redirect_counts_both(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """urllib3 retries the 503, then the redirect is followed: requests builds it from the
    request it was given and a ``PoolManager`` from the headers it was called with, both
    carrying the first span's traceparent. The redirect went out naming that span, with no span
    of its own, and the retry's span ended with the final 200."""
    called, base, _ = servers

    assert get_retrying(name, f"{base}/busy-moved", RETRY_503) == 200

    spans = in_order(wait_for_spans, 3)
    assert [s.attributes.get(RESENDS) for s in spans] == [None, 1, 2]
    assert [s.attributes["http.response.status_code"] for s in spans] == [503, 302, 200]
    assert [(p, tp) for p, _, tp, _ in called.seen] == [
        ("/busy-moved", traceparent_of(spans[0])),
        ("/busy-moved", traceparent_of(spans[1])),
        ("/done", traceparent_of(spans[2])),
    ]


# aiohttp refuses a header line over 8,190 bytes itself (LineTooLong)
@pytest.mark.parametrize("name", sorted(set(CLIENTS) - {"aiohttp"}))
def test_a_redirect_to_a_huge_url_is_cut_in_the_span(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """The server called chooses the redirect's URL: one of 20,000 characters went whole into
    the span's ``url.full`` (60,000 made 60 KB a span, a few such calls an export batch a
    collector refuses whole); it is cut at 8,192 characters."""
    called, base, _ = servers

    CLIENTS[name](f"{base}/far")

    _, hop = in_order(wait_for_spans, 2)
    assert called.seen[-1][0] == "/" + "x" * 20_000  # the client went there
    assert len(hop.attributes["url.full"]) == 8192
    assert hop.attributes["url.full"].startswith(f"{base}/xxx")


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_huge_non_ascii_url_is_cut_between_characters(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """A client sends a non-ASCII path percent-encoded (``é`` is ``%C3%A9``): ``url.full`` cut
    at 8,192 characters ended inside a character (``…%C3``), which no reader decodes; it now
    ends after the last whole one."""
    called, base, _ = servers
    lead = "/" + "x" * ((8192 - len(base) - 1 - 3) % 6)  # the cut falls after a "%C3"

    CLIENTS[name](f"{base}{lead}" + "%C3%A9" * 3000)

    (span,) = in_order(wait_for_spans, 1)
    sent = called.seen[-1][0].encode("latin-1").decode()  # (WSGI's PATH_INFO)
    assert sent == lead + "é" * 3000  # the server got it whole
    full = span.attributes["url.full"]
    assert full == f"{base}{lead}" + "%C3%A9" * ((8192 - len(base) - len(lead)) // 6)
    assert unquote(full, errors="strict").endswith("é")


@pytest.mark.parametrize("name", ["requests", "urllib3"])
def test_a_retrys_backoff_is_in_no_requests_span(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """urllib3 pauses before a retry (its backoff, a ``Retry-After``): the span of the request
    answered ended only when the retry started, so a 503 answered at once lasted the 0.5 s
    backoff too; it now ends before the pause."""
    _, base, _ = servers
    retry = urllib3.Retry(total=3, status_forcelist=[503], backoff_factor=0.25)  # 0 s, 0.5 s

    assert get_retrying(name, f"{base}/flaky", retry) == 200

    spans = in_order(wait_for_spans, 3)
    assert [s.attributes["http.response.status_code"] for s in spans] == [503, 503, 200]
    paused = (spans[2].start_time - spans[1].end_time) / 1e9
    assert paused >= 0.5  # the backoff: after the second span, before the third


def test_a_retry_slept_outside_urllib3_is_not_the_calls_pause(
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """A response hook that backs off with a ``Retry`` of its own (a rate-limit helper) is
    not urllib3 pausing before a retry of the call: the call answered 200 ended with that
    answer, not with the error the hook's ``Retry`` recorded, before the hook's pause."""
    _, base, _ = servers

    def back_off(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        retry = urllib3.Retry(total=3, backoff_factor=0.1)
        for _ in range(2):  # 0.2 s after a second error
            retry = retry.increment(
                "GET", "/quota", error=urllib3.exceptions.ProtocolError("quota")
            )
        retry.sleep()

    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=urllib3.Retry(total=3)))
        answer = session.get(f"{base}/done", hooks={"response": back_off}, timeout=10)
    assert answer.status_code == 200

    (span,) = in_order(wait_for_spans, 1)
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code is trace.StatusCode.UNSET, span.status.description
    assert (span.end_time - span.start_time) / 1e9 >= 0.2  # the hook ran inside the call


@pytest.mark.parametrize("name", ["requests", "urllib3"])
def test_retries_used_up_on_503s_leave_each_answer_on_its_span(
    name: str,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """urllib3 gives up after its last retry is answered 503 (``MaxRetryError``; requests says
    ``RetryError``): that request's span ended with the error alone, without the 503 it was
    answered, as if the server had never answered it."""
    called, base, _ = servers
    retry = urllib3.Retry(total=1, status_forcelist=[503], backoff_factor=0)

    with pytest.raises((urllib3.exceptions.MaxRetryError, requests.exceptions.RetryError)):
        get_retrying(name, f"{base}/flaky", retry)

    spans = in_order(wait_for_spans, 2)
    assert [s.attributes.get(RESENDS) for s in spans] == [None, 1]
    assert [s.attributes.get("http.response.status_code") for s in spans] == [503, 503]
    assert [s.status.status_code for s in spans] == [trace.StatusCode.ERROR] * 2
    assert [(tp, cid) for *_, tp, cid in called.seen] == [(traceparent_of(s), CID) for s in spans]


@pytest.mark.parametrize(("path", "retry"), [("/to/302/1", None), ("/flaky", RETRY_503)])
def test_a_requests_response_hook_runs_in_the_span_of_the_request_it_answers(
    path: str,
    retry: urllib3.Retry | None,
    servers: tuple[Server, str, Server],
    http_clients: None,
    in_request: trace.Span,
    wait_for_spans: Any,
) -> None:
    """A response hook of a redirect's request, or of the answer after urllib3's retries, ran
    with the call's first span current (ended by then, answered 302 or 503): a hook's log lines
    and calls went under a request that was not the one it was handed."""
    _, base, _ = servers
    seen: list[tuple[int, int]] = []

    def note(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        current = trace.get_current_span().get_span_context().span_id
        seen.append((response.status_code, current))

    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry or 0))
        assert session.get(base + path, hooks={"response": note}, timeout=10).status_code == 200

    spans = in_order(wait_for_spans, 3)
    hooked = spans if retry is None else spans[-1:]  # urllib3's retries run no hook
    answers = [(s.attributes["http.response.status_code"], s.context.span_id) for s in hooked]
    assert seen == answers
