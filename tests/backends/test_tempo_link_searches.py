"""The traces linking into a request's traces are searched for a few traces at a time.

``trace ID --tempo`` asks Tempo for the traces with a span linking into each trace of the
request (TraceQL ``link:traceID``, Tempo >= 2.6): a batch job whose correlation ID is on 60
traces (a worker's trace per message) sent 60 link searches, each over Tempo's whole search
window (168h by default), one after another: on a Tempo answering a week's search in 2 s, two
minutes before the path was shown; on one failing them (a 504 after the timeout, three tries
each), half an hour. Now 20 traces a search (3 searches); a search answering as many traces as
it asks for is asked again a trace at a time, so a trace with more than 100 traces linking into
it is still named in the path's warnings. No Tempo can run here: ``tempo_fake`` answers as it
does, on loopback.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import Topology
from werkzeug.wrappers import Request, Response

from tracekit.records import SpanRecord
from tracekit_cli.main import cli


def batch_job(workers: int) -> list[SpanRecord]:
    """A job publishing ``workers`` messages; each worker's trace carries the correlation ID and
    links to its message, and each is followed up by an audit trace that only links into it
    (no correlation ID: found only by a link search)."""
    t = Topology("req-batch")
    job = t.span("scheduler", "POST /jobs", "SERVER", 0, 50)
    for n in range(workers):
        publish = t.span("scheduler", "publish", "PRODUCER", 1 + n * 0.1, 1.05 + n * 0.1, job)
        t.new_trace()
        run = t.span("worker", "process", "CONSUMER", 60 + n, 61 + n, links=[publish])
        t.new_trace()
        t.span("audit", "record", "CONSUMER", 70 + n, 71 + n, links=[run], correlated=False)
    return recent(t.spans)


def link_searches(backend: Any) -> list[str]:
    queries = [r.args.get("q", "") for r in backend.requests if r.path.endswith("/api/search")]
    return [q for q in queries if "link:traceID" in q]


def trace_json(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(cli, ["trace", *args, "--format", "json"],
                                env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
    return result.exit_code, json.loads(result.stdout or "null"), result.stderr


def test_a_request_of_many_traces_is_searched_for_links_a_few_traces_at_a_time(
    serve: Any,
) -> None:
    spans = batch_job(workers=59)
    backend = serve(FakeTempo(spans))

    code, path, err = trace_json("req-batch", "--tempo", backend.url)

    assert (code, err) == (0, "")
    assert len(path["trace_ids"]) == 1 + 59 + 59  # the job, its workers, their audits
    assert {s["service"] for s in path["spans"]} == {"scheduler", "worker", "audit"}
    # the 60 traces carrying the ID in 3 searches, then the 59 audit traces in 3 more
    assert len(link_searches(backend)) == 6


def test_a_trace_with_more_links_into_it_than_searched_for_is_still_named(serve: Any) -> None:
    """A request of two traces, one of whose messages is read by 201 consumers that each start
    a trace of their own linking to it: the search for both traces answers as many as it asks
    for, so each is searched alone, and the path names the one with more."""
    t = Topology("req-broadcast")
    publish = t.span("api", "publish news", "PRODUCER", 0, 1)
    t.new_trace()
    t.span("api", "GET /news", "SERVER", 1, 2)
    for n in range(201):
        t.new_trace()
        t.span("reader", "process news", "CONSUMER", 3 + n, 4 + n, links=[publish],
               correlated=False)  # fmt: skip
    backend = serve(FakeTempo(recent(t.spans)))

    code, path, err = trace_json("req-broadcast", "--tempo", backend.url)

    assert (code, err) == (0, "")
    assert len(path["trace_ids"]) == 2 + 100  # the request's and 100 consumers'
    assert path["warnings"] == [
        f"more than 100 traces link to trace {publish.trace_id}: joining the 100 Tempo found first"
    ]


def test_a_tempo_refusing_link_terms_joined_by_or_is_searched_a_trace_at_a_time(
    serve: Any,
) -> None:
    """Should a Tempo refuse ``link:traceID`` terms joined by ``||``, it is not taken for one
    that cannot search links at all: each trace is searched alone, as before."""
    tempo = FakeTempo(batch_job(workers=3))

    def answer(request: Request) -> Response:
        query = request.args.get("q", "")
        if "link:traceID" in query and " || " in query:
            return Response("invalid TraceQL query: parse error", 400)
        return tempo(request)

    backend = serve(answer)
    code, path, err = trace_json("req-batch", "--tempo", backend.url)

    assert (code, err, path["warnings"]) == (0, "", [])
    assert len(path["trace_ids"]) == 1 + 3 + 3


def test_once_a_link_search_has_failed_the_others_are_not_sent(serve: Any) -> None:
    """A Tempo answering every link search 504 (after its timeout, on a busy week): each search
    is tried three times, so each one more cost three timeouts to learn the same. The first
    failure is said for every trace of the path, and no other link search is sent."""
    spans = batch_job(workers=59)
    backend = serve(FakeTempo(spans, link_search_status=504))

    code, path, err = trace_json("req-batch", "--tempo", backend.url)

    assert (code, err) == (0, "")
    assert len(path["trace_ids"]) == 1 + 59  # the audits, found only by links, are not shown
    unsearched = [w for w in path["warnings"] if w.startswith("traces linking to ")]
    assert len(unsearched) == 60
    assert all("context deadline exceeded" in w for w in unsearched)
    assert len(link_searches(backend)) == 3  # one search, tried three times
