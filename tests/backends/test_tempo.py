"""TempoSource against a real HTTP server on loopback answering as Tempo does (``tempo_fake``).

No Tempo can run here; the fake answers with Tempo's own encodings, status codes and error
bodies: the 168h search refusal, ``PARTIAL`` traces, ``404 page not found`` for routes an older
Tempo lacks, ``401 no org id`` without a tenant.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import MemorySource, Topology, checkout, incident
from werkzeug.wrappers import Request, Response

from tracekit.backends.tempo import TempoSource, traceql_string
from tracekit.path import reconstruct
from tracekit.records import BackendError, SpanRecord

WEEK = 168 * 3600


def memory_path(spans: list[SpanRecord], query: str) -> dict[str, Any]:
    path = reconstruct(MemorySource(spans), query, with_logs=False)
    assert path is not None
    return path.to_json()


def searches(backend: Any) -> list[Request]:
    return [r for r in backend.requests if r.path.endswith("/api/search")]


def failed_requests(spans: int = 15, errors: int = 3) -> list[SpanRecord]:
    """One request of ``spans`` spans, ``errors`` of them failed (deepest first)."""
    t = Topology("req-failing-15")
    parent = t.span("edge", "GET /report", "SERVER", 0, 100)
    for i in range(1, spans):
        status = "ERROR" if i > spans - 1 - errors else "UNSET"
        parent = t.span(f"svc{i % 3}", f"step {i}", "INTERNAL", i, 100 - i, parent, status=status)
    return recent(t.spans)


def test_paths_are_found_on_a_default_tempo_within_its_168h_limit(serve: Any) -> None:
    spans = recent(checkout().spans + incident().spans)
    backend = serve(FakeTempo(spans))
    path = reconstruct(TempoSource(backend.url), "req-incident-9")
    assert path is not None and path.to_json() == memory_path(spans, "req-incident-9")
    assert len(path.trace_ids) == 2  # the consumer's trace, joined through link:traceID
    windows = [int(r.args["end"]) - int(r.args["start"]) for r in searches(backend)]
    assert windows and all(w <= WEEK for w in windows)
    queries = [r.args["q"] for r in searches(backend)]
    assert queries[0] == '{ span.correlation.id = "req-incident-9" }'
    assert any(q.startswith("{ link:traceID = ") for q in queries)


def test_a_seven_day_search_is_not_refused(serve: Any) -> None:
    backend = serve(FakeTempo(recent(checkout().spans)))
    notices: list[str] = []
    source = TempoSource(backend.url, notify=notices.append)
    found = source.recent_requests(since_unix_nano=int((time.time() - 7 * 86400) * 1e9))
    assert [r.correlation_id for r in found] == ["req-checkout-1"]
    assert notices == [] and [r.args["q"] for r in searches(backend)] != []
    assert all(int(r.args["end"]) - int(r.args["start"]) <= WEEK for r in searches(backend))


def test_a_search_since_before_1970_is_narrowed_not_refused(serve: Any) -> None:
    """Tempo reads start and end as unsigned: ``start=-86400`` was refused whole (exit 2), where
    ``--since 1970-01-02`` was narrowed to what Tempo searches, with a notice."""
    backend = serve(FakeTempo(recent(checkout().spans)))
    notices: list[str] = []
    source = TempoSource(backend.url, notify=notices.append)
    found = source.recent_requests(since_unix_nano=-86400 * 10**9)  # 1969-12-31
    assert [r.correlation_id for r in found] == ["req-checkout-1"]
    assert all(int(r.args["start"]) >= 0 for r in searches(backend))
    assert len(notices) == 1 and "searching only since" in notices[0]


def test_a_shorter_limit_is_read_from_the_refusal_and_said_once(serve: Any) -> None:
    today = recent(checkout().spans, seconds_ago=600)
    two_days_ago = recent(incident().spans, seconds_ago=48 * 3600)
    backend = serve(FakeTempo(today + two_days_ago, max_search="24h0m0s"))
    notices: list[str] = []
    source = TempoSource(backend.url, notify=notices.append)
    assert [r.correlation_id for r in source.recent_requests()] == ["req-checkout-1"]
    assert reconstruct(source, "req-checkout-1") is not None
    assert reconstruct(source, "req-incident-9") is None  # older than this Tempo lets us search
    refused = [r for r in searches(backend) if int(r.args["end"]) - int(r.args["start"]) > 86400]
    assert len(refused) == 1  # learnt once, then every search fits
    assert len(notices) == 1
    assert notices[0].startswith(
        f"Tempo at {backend.url} searches at most 24h0m0s at a time: searching only since "
    )


def test_span_count_and_error_flag_come_from_service_stats(serve: Any) -> None:
    spans = failed_requests(15, 3) + recent(checkout().spans)
    backend = serve(FakeTempo(spans))
    source = TempoSource(backend.url)
    errors = source.recent_requests(errors_only=True)
    assert [(r.correlation_id, r.span_count, r.error) for r in errors] == [
        ("req-failing-15", 15, True)  # Tempo matched 3 spans; the trace has 15
    ]
    every = {r.correlation_id: (r.span_count, r.error) for r in source.recent_requests()}
    assert every == {"req-failing-15": (15, True), "req-checkout-1": (8, False)}
    assert not [r for r in backend.requests if "/traces/" in r.path]  # no trace had to be read


def test_without_service_stats_the_traces_are_counted_and_that_is_said_once(serve: Any) -> None:
    backend = serve(FakeTempo(failed_requests(15, 3) + recent(checkout().spans), version=(2, 4)))
    notices: list[str] = []
    found = TempoSource(backend.url, notify=notices.append).recent_requests(errors_only=True)
    assert [(r.span_count, r.error) for r in found] == [(15, True)]
    assert len(notices) == 1 and "sent no serviceStats" in notices[0]


def test_search_query_asks_tempo_for_what_the_options_say(serve: Any) -> None:
    backend = serve(FakeTempo(recent(checkout().spans + incident().spans)))
    found = TempoSource(backend.url).recent_requests(
        service="web", min_duration_ms=0.05, errors_only=True, limit=5
    )
    assert [(r.root_service, r.root_name, r.correlation_id) for r in found] == [
        ("web", "POST /jobs", "req-incident-9")
    ]
    first, then, roots = (search.args["q"] for search in searches(backend))
    assert first == (
        '{ rootServiceName = "web" && traceDuration >= 50us && status = error } && { }'
        " | by(span.correlation.id) | select(span.correlation.id) with (most_recent=true)"
    )
    # the request's other traces, which the filter does not match (test_tempo_filtered_search)
    assert then == (
        '{ span.correlation.id = "req-incident-9" } | by(span.correlation.id)'
        " | select(span.correlation.id)"
    )
    # the Celery task and URL path its root names, which a hit does not carry
    trace_id = found[0].trace_id.lstrip("0")
    assert roots == (
        f'{{ (trace:id = "{trace_id}") && nestedSetParent < 0 }}'
        " | select(span.tracekit.celery.task_name, span.url.path, span.http.target)"
    )


def requests_a_minute_apart(count: int) -> list[SpanRecord]:
    """``count`` one-span requests, ``req-0`` the oldest, a minute apart."""
    spans: list[SpanRecord] = []
    for n in range(count):
        t = Topology(f"req-{n}")
        t.span("edge", "GET /report", "SERVER", 0, 10)
        spans += recent(t.spans, seconds_ago=3600 - 60 * n)
    return spans


def test_a_search_lists_the_newest_requests_of_a_busy_window(serve: Any) -> None:
    """Tempo answers the first traces its search finds, not the newest, unless asked with
    ``most_recent=true``: ``tracekit search`` listed requests of an hour ago and left out the
    last minutes'."""
    backend = serve(FakeTempo(requests_a_minute_apart(30)))
    source = TempoSource(backend.url)
    found = source.recent_requests(limit=5)
    assert [r.correlation_id for r in found] == ["req-29", "req-28", "req-27", "req-26", "req-25"]
    source.spans_since(int((time.time() - 3600) * 1e9))  # services and diff windows
    assert searches(backend)[-1].args["q"] == "{ } with (most_recent=true)"


def test_a_tempo_without_query_hints_is_searched_without_and_that_is_said_once(
    serve: Any,
) -> None:
    backend = serve(FakeTempo(requests_a_minute_apart(3), version=(2, 3)))
    notices: list[str] = []
    source = TempoSource(backend.url, notify=notices.append)
    assert {r.correlation_id for r in source.recent_requests()} == {"req-0", "req-1", "req-2"}
    assert {r.correlation_id for r in source.recent_requests(limit=2)} < {"req-0", "req-1", "req-2"}
    hinted = [r for r in searches(backend) if "most_recent" in r.args["q"]]
    assert len(hinted) == 1  # refused once, then never asked again
    assert notices[0] == (
        f"Tempo at {backend.url} takes no TraceQL query hints (Tempo before 2.4): a search "
        "lists the first traces Tempo finds, which in a busy window may not be the newest"
    )
    assert len(notices) == 2 and "sent no serviceStats" in notices[1]  # as before 2.5


def test_a_partial_trace_is_a_warning_of_the_path(serve: Any) -> None:
    spans = recent(checkout().spans)
    backend = serve(FakeTempo(spans, max_bytes_per_trace=1500))  # 5 of 8 spans fit
    path = reconstruct(TempoSource(backend.url), "req-checkout-1")
    assert path is not None and len(path.spans) == 5
    assert (
        f"Tempo returned trace {spans[0].trace_id} only in part: Trace exceeds maximum size "
        "of 1500 bytes, a partial trace is returned"
    ) in path.warnings


@pytest.mark.parametrize("status", [500, 504])
def test_a_failed_link_search_is_a_warning_not_an_older_tempo(serve: Any, status: int) -> None:
    spans = recent(incident().spans)
    backend = serve(FakeTempo(spans, link_search_status=status))
    path = reconstruct(TempoSource(backend.url, retries=1), "req-incident-9")
    assert path is not None and len(path.trace_ids) == 1
    reason = {500: "internal error", 504: "context deadline exceeded"}[status]
    expected = (
        f"traces linking to {path.trace_ids[0]} could not be searched (Tempo at "
        f"{backend.url}{'' if status == 500 else ':'} "
    )
    assert any(w.startswith(expected) and reason in w for w in path.warnings), path.warnings


def test_an_older_tempo_without_link_search_says_so_in_the_path(serve: Any) -> None:
    backend = serve(FakeTempo(recent(incident().spans), version=(2, 5)))
    path = reconstruct(TempoSource(backend.url), "req-incident-9")
    assert path is not None and len(path.trace_ids) == 1  # the consumer trace stays unseen
    assert (
        f"Tempo at {backend.url} cannot search span links (TraceQL link:traceID needs Tempo "
        "2.6 or later): traces that only link into this request are not shown"
    ) in path.warnings


def test_before_2_6_traces_are_read_from_the_v1_endpoint(serve: Any) -> None:
    spans = recent(checkout().spans)
    backend = serve(FakeTempo(spans, version=(2, 5)))
    source = TempoSource(backend.url)
    path = reconstruct(source, spans[0].trace_id)
    assert (
        path is not None
        and path.to_json()["spans"] == memory_path(spans, spans[0].trace_id)["spans"]
    )
    paths = [r.path for r in backend.requests if "/traces/" in r.path]
    assert paths == [f"/api/v2/traces/{spans[0].trace_id}", f"/api/traces/{spans[0].trace_id}"]


def test_unknown_requests_are_not_found_without_a_second_request(serve: Any) -> None:
    backend = serve(FakeTempo(recent(checkout().spans)))
    assert reconstruct(TempoSource(backend.url), "req-nobody") is None
    assert reconstruct(TempoSource(backend.url), "f" * 32) is None
    assert [r.path for r in backend.requests if "/traces/" in r.path] == [
        "/api/v2/traces/" + "f" * 32
    ]


def test_a_url_that_is_not_tempo_is_an_error_not_nothing_found(serve: Any) -> None:
    backend = serve(FakeTempo(recent(checkout().spans), prefix="/tempo"))
    with pytest.raises(BackendError, match="has no /api/traces: is this Tempo's HTTP API"):
        TempoSource(backend.url).spans_by_trace_ids(["f" * 32])


def test_tenant_header_and_path_prefix(serve: Any) -> None:
    spans = recent(checkout().spans)
    backend = serve(FakeTempo(spans, tenant="team-a", prefix="/tempo"))
    with pytest.raises(BackendError) as refused:
        TempoSource(backend.url + "/tempo", retries=0).spans_by_correlation_id("req-checkout-1")
    assert str(refused.value) == (
        f"Tempo at {backend.url}/tempo answered HTTP 401: no org id "
        "(check the tenant and credential headers)"
    )
    source = TempoSource(backend.url + "/tempo/", headers={"X-Scope-OrgID": "team-a"})
    path = reconstruct(source, "req-checkout-1")
    assert path is not None and len(path.spans) == len(spans)
    assert {r.headers["X-Scope-OrgID"] for r in backend.requests[1:]} == {"team-a"}
    assert all(r.path.startswith("/tempo/api/") for r in backend.requests)


def test_url_credentials_are_sent_as_basic_auth_and_never_shown(serve: Any) -> None:
    def echo(request: Request) -> Response:  # a proxy that repeats what it got
        return Response(f"denied {request.headers.get('Authorization')}", 403)

    backend = serve(echo)
    url = backend.url.replace("http://", "http://grafana:s3cr%40t@")
    with pytest.raises(BackendError) as refused:
        TempoSource(url, retries=0).spans_by_trace_ids(["a" * 32])
    token = base64.b64encode(b"grafana:s3cr@t").decode()
    assert backend.requests[0].headers["Authorization"] == f"Basic {token}"
    assert str(refused.value) == (
        f"Tempo at {backend.url} answered HTTP 403: denied "
        "[redacted] (check the tenant and credential headers)"
    )


def test_a_redirect_to_another_host_is_not_followed_with_the_headers(serve: Any) -> None:
    elsewhere = serve(lambda request: Response("{}", 200))
    moved = serve(lambda r: Response("", 302, headers={"Location": elsewhere.url + "/api/x"}))
    source = TempoSource(moved.url, retries=0, headers={"Authorization": "Bearer tok3n"})
    with pytest.raises(BackendError, match="answered HTTP 302"):
        source.spans_by_trace_ids(["a" * 32])
    assert elsewhere.requests == []


def test_server_error_is_one_clear_backend_error(serve: Any) -> None:
    backend = serve(lambda request: Response("internal error\nat line 3", 500))
    with pytest.raises(BackendError) as caught:
        TempoSource(backend.url, retries=0).spans_by_correlation_id("x")
    assert (
        str(caught.value) == f"Tempo at {backend.url} answered HTTP 500: internal error at line 3"
    )


def test_unavailable_is_retried_a_bounded_number_of_times(serve: Any) -> None:
    answers = iter([Response("busy", 503), Response(json.dumps({"traces": []}), 200)])
    backend = serve(lambda request: next(answers))
    assert TempoSource(backend.url, retries=1).spans_by_correlation_id("x") == []
    always = serve(lambda request: Response("busy", 503))
    with pytest.raises(BackendError, match="HTTP 503"):
        TempoSource(always.url, retries=2).spans_by_correlation_id("x")
    assert len(always.requests) == 3


def test_a_rate_limit_is_retried_after_the_wait_the_server_names(serve: Any) -> None:
    """``429`` with ``Retry-After: 1`` (multi-tenant gateways, Grafana Cloud): the retries came
    0.2 and 0.4 s later, inside the named wait, and the command gave up. A wait longer than the
    command's timeout is not slept through: the error names it."""
    answers = iter([Response("rate limited", 429, {"Retry-After": "1"}),
                    Response(json.dumps({"traces": []}), 200)])  # fmt: skip
    backend = serve(lambda request: next(answers))
    started = time.monotonic()
    assert TempoSource(backend.url, retries=1).spans_by_correlation_id("x") == []
    assert time.monotonic() - started >= 1.0

    later = serve(lambda request: Response("rate limited", 429, {"Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        TempoSource(later.url, retries=2, timeout=5).spans_by_correlation_id("x")
    assert time.monotonic() - started < 5
    assert len(later.requests) == 1
    assert str(caught.value) == (
        f"Tempo at {later.url}: HTTP 429: rate limited (it asks to retry after 120 s)"
    )


def test_slow_server_times_out(serve: Any) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("{}", 200)

    backend = serve(slow)
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"no whole answer within 0\.3 s"):
        TempoSource(backend.url, timeout=0.3, retries=1).spans_by_trace_ids(["a" * 32])
    assert time.monotonic() - started < 1.5


def test_garbage_answers_are_backend_errors(serve: Any) -> None:
    backend = serve(lambda request: Response("<html>proxy login</html>", 200))
    with pytest.raises(BackendError, match="not JSON"):
        TempoSource(backend.url).spans_by_trace_ids(["a" * 32])
    broken = serve(
        lambda r: Response(
            json.dumps(
                {
                    "trace": {
                        "resourceSpans": [
                            {
                                "scopeSpans": [
                                    {
                                        "spans": [
                                            {
                                                "traceId": "!!",
                                                "spanId": "zz",
                                                "startTimeUnixNano": "soon",
                                            }
                                        ]
                                    }
                                ]
                            }
                        ]
                    }
                }
            ),
            200,
        )
    )
    with pytest.raises(BackendError, match="unreadable id"):
        TempoSource(broken.url).spans_by_trace_ids(["a" * 32])


@pytest.mark.parametrize(
    "url",
    [
        "localhost:3200",
        "file:///etc/passwd",
        "http://",
        "http://h:x/",
        "http://h/?tenant=a",
        "tempo.internal/tempo",
    ],
)
def test_unusable_urls_are_refused_up_front(url: str) -> None:
    with pytest.raises(BackendError, match="Tempo URL "):
        TempoSource(url)


@pytest.mark.parametrize(
    "url", ["admin:hunter2@tempo:3200?x=1", "http://tempo:3200/?token=hunter2"]
)
def test_a_refused_url_never_shows_its_credentials_or_query(url: str) -> None:
    with pytest.raises(BackendError) as refused:
        TempoSource(url)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:1234/hunter2@tempo.example",  # was sent to host "admin", port 1234
        "https://viewer:hun/ter2@tempo.example",  # was "invalid port: 'viewer:hun'"
        "https://viewer:hunter#2@tempo.example",
        "https://viewer:hunter?2@tempo.example",
    ],
)
def test_a_password_with_a_slash_hash_or_question_mark_is_refused_unshown(url: str) -> None:
    """Unescaped, '/', '#' or '?' ends the host part of a URL: the rest of the password was
    its path, printed in every error ('Tempo at https://admin:1234/hunter2@tempo.example:
    unreachable'), and the request went to a host named after the user."""
    with pytest.raises(BackendError) as refused:
        TempoSource(url)
    said = str(refused.value)
    assert "percent-encoded (%2F, %23, %3F)" in said
    assert not any(secret in said for secret in ("admin", "viewer", "1234", "hun", "ter2"))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # U+FF03 and U+FF0F become '#' and '/' under NFKC: Python refuses the URL, quoting it
        ("https://admin:hunter2\uff03x@tempo.example", "under NFKC normalization"),
        ("https://admin:hunter2\uff0fx@tempo.example", "under NFKC normalization"),
        ("https://admin:hu[nter2]x@tempo.example", "in brackets is no IP address"),
    ],
)
def test_a_url_python_cannot_split_is_refused_without_its_password(url: str, says: str) -> None:
    """Python's own refusal was the error: 'Tempo URL is not valid: netloc
    'admin:hunter2\uff03x@tempo.example' contains invalid characters under NFKC normalization',
    the whole password printed, or "'nter2' does not appear to be an IPv4 or IPv6 address"."""
    with pytest.raises(BackendError) as refused:
        TempoSource(url)
    said = str(refused.value)
    assert said.startswith("Tempo URL is not valid: ") and says in said, said
    assert not any(secret in said for secret in ("admin", "hunter2", "nter2", "x@"))


def test_traceql_strings_are_escaped() -> None:
    assert traceql_string('a"b\\c') == '"a\\"b\\\\c"'
    assert traceql_string("a\nb\x00") == r'"a\x0ab\x00"'  # Tempo refuses them raw
