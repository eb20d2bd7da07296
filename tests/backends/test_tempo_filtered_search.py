"""``tracekit search --tempo URL`` with a filter (``--errors``, ``--service``, ``--min-duration``)
measures each request it lists over every trace carrying its correlation ID, as the store and
``tracekit trace`` measure it.

TraceQL's filters match traces, not requests: a pull consumer's trace (a trace of its own,
carrying the request's correlation ID) has no error, no root in the service asked for, and is
shorter than the request, so it is no hit. Before, such a request was listed over its first trace
alone: 5 spans and 100 ms where the store listed 6 spans and 120 ms. No Tempo runs here:
``FakeTempo`` answers TraceQL as Tempo does, on a real HTTP server on loopback.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tempo_fake import FakeTempo
from trace_topologies import T0, Topology

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

NOW = time.time_ns() - 120 * 10**9


def _starting_at(spans: list[SpanRecord], start_unix_nano: int) -> list[SpanRecord]:
    """``spans`` moved so that the topology's time 0 is ``start_unix_nano``."""
    shift = start_unix_nano - T0
    return [
        dataclasses.replace(
            s, start_unix_nano=s.start_unix_nano + shift, end_unix_nano=s.end_unix_nano + shift
        )
        for s in spans
    ]


def request_with_pull_consumer(n: int) -> list[SpanRecord]:
    """gateway -> api (its database call fails) -> publish; a worker pulls the message 15 ms
    after, in a trace of its own linked to it, and ends the request 20 ms after the gateway."""
    t = Topology(f"req-{n}")
    root = t.span("gateway", "GET /items", "SERVER", 0, 100)
    _, api = t.http(root, "api", "/items/{id}", 5, 90)
    t.span("api", "SELECT items", "CLIENT", 10, 40, api, status="ERROR")
    sent = t.publish(api, "jobs", 50, 55)
    t.new_trace()
    t.consume("worker", "jobs", 70, 120, links=[sent])
    return _starting_at(t.spans, NOW - (10 - n) * 20 * 10**9)


def listed(*args: str) -> list[tuple[Any, ...]]:
    result = CliRunner().invoke(
        cli, ["search", "--format", "json", *args], env={"TRACEKIT_BACKEND_HEADERS": ""}
    )
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    rows = json.loads(result.stdout)["requests"]
    return [(r["correlation_id"], r["span_count"], r["duration_ms"], r["error"]) for r in rows]


@pytest.mark.parametrize("given", [["--errors"], ["--service", "gateway"]])
def test_a_filtered_search_lists_requests_as_the_store_does(
    serve: Any, tmp_path: Path, given: list[str]
) -> None:
    spans = [span for n in range(10) for span in request_with_pull_consumer(n)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = listed(*given, "--store", str(tmp_path / "store.db"))
    assert from_store[0] == ("req-9", 6, 120.0, True)
    assert listed(*given, "--tempo", serve(FakeTempo(spans)).url) == from_store


def test_a_correlation_id_utf8_cannot_hold_is_searched_as_the_store_keeps_it(
    serve: Any,
) -> None:
    """A hit whose correlation ID holds a lone surrogate (JSON's ``\\ud800``, which Tempo does
    not write but a server in front of it may): the search for the other traces of the
    requests listed was 'internal error (UnicodeEncodeError ...)', exit 2; that ID is searched
    with U+FFFD in its place, and every request is listed."""
    odd = [
        dataclasses.replace(s, attributes={**s.attributes, "correlation.id": "req-\ud800"})
        for s in request_with_pull_consumer(9)
    ]
    spans = [span for n in range(2) for span in request_with_pull_consumer(n)] + odd
    rows = listed("--errors", "--tempo", serve(FakeTempo(spans)).url)
    assert rows == [("req-\ud800", 5, 100.0, True), ("req-1", 6, 120.0, True),
                    ("req-0", 6, 120.0, True)]  # fmt: skip


def test_a_correlation_id_with_a_newline_leaves_the_others_measured_whole(serve: Any) -> None:
    """Tempo's lexer ends a string literal at a raw newline: the one search for the other traces
    of 20 requests, one of whose IDs held a newline, was refused ('invalid TraceQL query'),
    and every request was listed over the trace the filter matched, 5 spans and 100 ms, beside
    a warning. The newline is written as an escape, which Tempo reads back as the newline."""
    odd = [
        dataclasses.replace(s, attributes={**s.attributes, "correlation.id": "req\n9"})
        for s in request_with_pull_consumer(9)
    ]
    spans = [span for n in range(2) for span in request_with_pull_consumer(n)] + odd
    rows = listed("--errors", "--tempo", serve(FakeTempo(spans)).url)
    assert rows == [("req\n9", 6, 120.0, True), ("req-1", 6, 120.0, True),
                    ("req-0", 6, 120.0, True)]  # fmt: skip


def request_after_its_client(n: int) -> list[SpanRecord]:
    """A mobile app's trace of its own (its tap, in error), carrying the correlation ID it sends
    the gateway without a traceparent; then the gateway's trace of the request."""
    t = Topology(f"req-{n}")
    t.span("mobile", "tap", "SERVER", 0, 10, status="ERROR")
    t.new_trace()
    root = t.span("gateway", "GET /items", "SERVER", 20, 100)
    t.http(root, "api", "/items/{id}", 25, 90)
    return _starting_at(t.spans, NOW - (10 - n) * 20 * 10**9)


@pytest.mark.parametrize("given", [["--service", "gateway"], ["--min-duration", "50"]])
def test_a_filtered_search_names_a_request_by_a_trace_it_matched(
    serve: Any, tmp_path: Path, given: list[str]
) -> None:
    """Measured over its other traces too, a request was named by the earliest of them: 'search
    --service gateway' listed each request with its root in 'mobile' (the app's trace, found by
    the correlation ID), where the store listed 'gateway'. It is named by a trace the filter
    matched, as the store names it."""
    spans = [span for n in range(3) for span in request_after_its_client(n)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)

    def roots(*backend: str) -> list[tuple[Any, ...]]:
        result = CliRunner().invoke(
            cli, ["search", "--format", "json", *given, *backend],
            env={"TRACEKIT_BACKEND_HEADERS": ""},
        )  # fmt: skip
        assert (result.exit_code, result.stderr) == (0, ""), result.stderr
        rows = json.loads(result.stdout)["requests"]
        return [(r["correlation_id"], r["root_service"], r["span_count"]) for r in rows]

    from_store = roots("--store", str(tmp_path / "store.db"))
    assert from_store == [("req-2", "gateway", 4), ("req-1", "gateway", 4), ("req-0", "gateway", 4)]
    assert roots("--tempo", serve(FakeTempo(spans)).url) == from_store


def session_poll(n: int) -> list[SpanRecord]:
    """One of a session's many requests, all carrying the session's ID as their correlation ID
    (a client that sends it on every call), each failing; its trace first in a block's rows."""
    t = Topology("session-1")
    t.trace = f"{n + 1:032x}"
    t.span("gateway", "GET /poll", "SERVER", 0, 10, status="ERROR")
    return _starting_at(t.spans, NOW - 1800 * 10**9 + n * 10**9)


def test_an_id_on_many_traces_leaves_the_others_measured_whole(serve: Any, tmp_path: Path) -> None:
    """The search for the other traces of the requests listed asks for 100 traces: a session's
    ID on 120 filled the answer, and the other requests were listed without their consumers'
    traces, 5 spans and 100 ms where the store has 6 and 120, without a word. A full answer is
    searched again ID by ID."""
    spans = [span for n in range(3) for span in request_with_pull_consumer(n)]
    spans += [span for n in range(120) for span in session_poll(n)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = listed("--errors", "--limit", "4", "--store", str(tmp_path / "store.db"))
    assert from_store[:3] == [("req-2", 6, 120.0, True), ("req-1", 6, 120.0, True),
                              ("req-0", 6, 120.0, True)]  # fmt: skip
    from_tempo = listed("--errors", "--limit", "4", "--tempo", serve(FakeTempo(spans)).url)
    assert from_tempo[:3] == from_store[:3]


def request_fanned_out(n: int, workers: int) -> list[SpanRecord]:
    """gateway (failing) -> publish; ``workers`` workers each pull the message in a trace of
    their own, so the request's correlation ID is on ``workers + 1`` traces."""
    t = Topology(f"req-{n}")
    root = t.span("gateway", "POST /batch", "SERVER", 0, 100, status="ERROR")
    sent = t.publish(root, "jobs", 50, 55)
    for w in range(workers):
        t.new_trace()
        t.consume("worker", "jobs", 70 + w, 120 + w, links=[sent])
    return _starting_at(t.spans, NOW - (n + 1) * 10**9)


def test_requests_of_a_few_traces_each_are_searched_for_together(
    serve: Any, tmp_path: Path
) -> None:
    """20 requests of 6 traces each carry 120 traces: the search for the other traces of the
    requests listed asked for 100, was filled, and each ID was searched again alone: 22
    searches for 20 requests, 1,051 for 'search --limit 500' (37 s on loopback, nothing
    printed). A search for a few IDs asks for as many traces as each ID alone would."""
    spans = [span for n in range(20) for span in request_fanned_out(n, workers=5)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = listed("--errors", "--store", str(tmp_path / "store.db"))
    assert from_store[0] == ("req-0", 7, 124.0, True)
    tempo = serve(FakeTempo(spans))
    assert listed("--errors", "--tempo", tempo.url) == from_store
    assert tempo.paths() == ["/api/search"] * 3  # the filter, the other traces, the roots' tasks


@pytest.mark.parametrize("version", [(2, 3), (2, 10)])
def test_requests_of_a_few_traces_each_are_measured_whole_under_a_result_limit(
    serve: Any, tmp_path: Path, version: tuple[int, int]
) -> None:
    """Under a max_result_limit of 100 (which a Tempo before 2.4 applies without a word, and a
    later one refuses a larger limit for), a search for 20 IDs is cut at 100 traces: each ID
    is still searched alone, and no warning says traces were not read."""
    spans = [span for n in range(20) for span in request_fanned_out(n, workers=5)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = listed("--errors", "--store", str(tmp_path / "store.db"))
    tempo = serve(FakeTempo(spans, version=version, max_result_limit=100)).url
    result = CliRunner().invoke(
        cli, ["search", "--format", "json", "--errors", "--tempo", tempo],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    rows = json.loads(result.stdout)["requests"]
    assert [(r["correlation_id"], r["span_count"], r["duration_ms"], r["error"]) for r in rows] == (
        from_store
    )
    assert "max_result_limit" not in result.stderr


@pytest.mark.parametrize("since", [[], ["--since", "1h"]])
def test_a_correlation_id_too_long_for_a_url_leaves_the_others_measured_whole(
    serve: Any, since: list[str]
) -> None:
    """A service that is not tracekit's may set any correlation.id, up to the 16,384 characters
    a value is kept to: one such ID among 20 requests listed made the one search for their other
    traces a URL of 98 KB, which the server refused (414), and every request was listed over
    the trace the filter matched, 5 spans and 100 ms, beside a warning (with --since, the
    search for their traces begun before it failed likewise). An ID no URL can carry is not
    searched for; the other requests are measured whole."""
    long_id = "\x1b" * 16_000  # each written \\x1b in TraceQL, then %5Cx1b in the URL
    odd = [
        dataclasses.replace(s, attributes={**s.attributes, "correlation.id": long_id})
        for s in request_with_pull_consumer(9)
    ]
    spans = [span for n in range(2) for span in request_with_pull_consumer(n)] + odd
    rows = listed("--errors", *since, "--tempo", serve(FakeTempo(spans)).url)
    assert rows == [(long_id, 5, 100.0, True), ("req-1", 6, 120.0, True),
                    ("req-0", 6, 120.0, True)]  # fmt: skip


def request_with_failing_uncorrelated_consumer(n: int) -> list[SpanRecord]:
    """gateway publishes a job; a worker that does not carry the correlation ID pulls it 300 ms
    later in a trace of its own, linked to the publish, and fails there."""
    t = Topology(f"req-job-{n}")
    root = t.span("gateway", "POST /jobs", "SERVER", 0, 50)
    sent = t.publish(root, "jobs", 10, 12)
    t.new_trace()
    job = t.consume("worker", "jobs", 300, 400, links=[sent], correlated=False)
    t.span("worker", "UPDATE jobs", "CLIENT", 310, 390, job, status="ERROR", correlated=False)
    return _starting_at(t.spans, NOW - (10 - n) * 20 * 10**9)


def test_errors_lists_the_request_an_uncorrelated_failing_consumer_links_into(
    serve: Any, tmp_path: Path
) -> None:
    """The consumer's trace is the only hit of `--errors`, and it carries no correlation ID: it
    was listed on its own, (None, 2 spans, 100 ms, worker's), where the store lists the request
    its root links into, measured over both traces, as `trace` shows it."""
    spans = [span for n in range(3) for span in request_with_failing_uncorrelated_consumer(n)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = listed("--errors", "--store", str(tmp_path / "store.db"))
    assert from_store == [(f"req-job-{n}", 4, 400.0, True) for n in (2, 1, 0)]
    assert listed("--errors", "--tempo", serve(FakeTempo(spans)).url) == from_store


def test_a_tempo_that_cannot_search_by_trace_id_lists_the_consumer_alone_and_says_why(
    serve: Any,
) -> None:
    """Tempo 2.4 refuses TraceQL ``trace:id``: the consumer's trace is listed on its own, as
    before, and stderr says why once."""
    url = serve(FakeTempo(request_with_failing_uncorrelated_consumer(0), version=(2, 4))).url
    result = CliRunner().invoke(cli, ["search", "--errors", "--tempo", url, "--format", "json"],
                                env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
    assert result.exit_code == 0
    rows = json.loads(result.stdout)["requests"]
    assert [(r["correlation_id"], r["root_service"]) for r in rows] == [(None, "worker")]
    said = [line for line in result.stderr.splitlines() if "traces by id" in line]
    assert said == [
        f"tracekit: warning: Tempo at {url} failed to search traces by id (TraceQL trace:id "
        "needs Tempo 2.5 or later): a trace carrying no correlation ID that the filter matched "
        "is listed on its own, not in the request it links into"
    ]


def batch_consumer_failing_uncorrelated(n: int) -> list[SpanRecord]:
    """Five gateway requests of one correlation ID each publish a job; a worker without the ID
    takes the five in one batch, its root linked to each publish, and fails there."""
    t = Topology(f"req-batch-{n}")
    sent = []
    for k in range(5):
        if k:
            t.new_trace()
        root = t.span("gateway", "POST /jobs", "SERVER", k, k + 50)
        sent.append(t.publish(root, "jobs", k + 10, k + 12))
    t.new_trace()
    job = t.consume("worker", "jobs", 300, 400, links=sent, correlated=False)
    t.span("worker", "UPDATE jobs", "CLIENT", 310, 390, job, status="ERROR", correlated=False)
    return _starting_at(t.spans, NOW - (10 - n) * 20 * 10**9)


def test_the_traces_an_uncorrelated_consumer_links_into_are_not_each_read_whole(
    serve: Any, tmp_path: Path
) -> None:
    """The traces the failing batch consumers' roots link into were searched for by id without
    their spans grouped by correlation ID, so no hit named its request and each was then read
    whole to find it: 3 consumers of 5 messages, 18 reads for 3 rows (a consumer of 100
    messages, 100 reads). The hits name their requests now: only the consumers' own traces,
    which carry no ID, are read; the rows are the store's."""
    spans = [span for n in range(3) for span in batch_consumer_failing_uncorrelated(n)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = listed("--errors", "--store", str(tmp_path / "store.db"))
    assert from_store == [(f"req-batch-{n}", 12, 400.0, True) for n in (2, 1, 0)]
    tempo = serve(FakeTempo(spans))

    assert listed("--errors", "--tempo", tempo.url) == from_store
    reads = [path for path in tempo.paths() if "/traces/" in path]
    assert len(reads) == 3  # the three consumers' traces
