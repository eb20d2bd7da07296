"""What a command reads from Tempo or Jaeger stops at its budget of spans.

Tempo and Jaeger answer each trace whole (up to 64 MiB), and tracekit read every trace a search
found and kept them all before ``--max-spans`` (or ``services``' span cap) cut them: 20 traces of
63 MB under one correlation ID took 4.2 GB. These tests count what the fake served and read what
the command printed. No Tempo or Jaeger can run here: the fakes answer as they do, in their
encodings (``tempo_fake``, ``jaeger_fake``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import Topology

from tracekit.records import SpanRecord
from tracekit_cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"TRACEKIT_BACKEND_HEADERS": ""})
    return result.exit_code, result.stdout, result.stderr


def fanned_out(traces: int, spans_each: int) -> list[SpanRecord]:
    """One request over ``traces`` traces of ``spans_each`` spans, a second apart (a job fanned
    out to workers, each starting a trace of its own with the correlation ID)."""
    t = Topology("req-fanout")
    for n in range(traces):
        t.new_trace()
        job = t.span("worker", f"job {n}", "CONSUMER", n * 1000, n * 1000 + 500)
        for i in range(spans_each - 1):
            t.span("worker", f"step {i}", "INTERNAL", n * 1000 + i + 1, n * 1000 + i + 2, job)
    return recent(t.spans)


def trace_reads(backend: Any) -> list[str]:
    return [p for p in backend.paths() if p.startswith(("/api/v2/traces/", "/api/v3/traces/"))]


@pytest.mark.parametrize(("fake", "flag"), [(FakeTempo, "--tempo"), (FakeJaeger, "--jaeger")])
def test_trace_reads_only_the_traces_max_spans_needs(serve: Any, fake: Any, flag: str) -> None:
    backend = serve(fake(fanned_out(20, 30)))
    code, out, err = run("trace", "req-fanout", flag, backend.url, "--max-spans", "50",
                         "--format", "json")  # fmt: skip
    path = json.loads(out)
    assert (code, err) == (0, "")
    assert len(path["spans"]) == 50
    assert "more than 50 spans: showing the first 50 by start time" in path["warnings"]
    assert len(trace_reads(backend)) == 2  # 60 spans: the 18 later traces are never asked for


def test_services_on_tempo_reads_the_newest_traces_until_its_span_cap(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Topology("req-calls")
    for n in range(20):
        t.new_trace()
        root = t.span("gateway", "GET /", "SERVER", n * 1000, n * 1000 + 10)
        t.http(root, "api", "/x", n * 1000 + 1, n * 1000 + 9)
    backend = serve(FakeTempo(recent(t.spans)))
    monkeypatch.setattr("tracekit_cli.services.MAX_SPANS", 5)  # 3 spans a trace

    code, out, err = run("services", "--since", "1h", "--tempo", backend.url, "--format", "json")

    assert code == 0
    assert [(e["from"], e["to"], e["calls"]) for e in json.loads(out)["edges"]] == [
        ("gateway", "api", 2)  # the newest trace whole, and the call of the one before
    ]
    assert err == (
        "tracekit: warning: more than 5 spans since 1h: the map covers only the newest 5 "
        "(narrow --since)\n"
    )
    assert len(trace_reads(backend)) == 2


def test_search_on_jaeger_stops_at_its_span_budget_and_says_so(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jaeger's search answers whole traces, service by service: ``search`` without
    ``--service`` held every service's newest traces."""
    spans = []
    for n in range(10):
        t = Topology(f"req-{n}")
        root = t.span(f"svc-{n}", "GET /", "SERVER", 0, 100)
        for i in range(29):
            t.span(f"svc-{n}", f"step {i}", "INTERNAL", i + 1, i + 2, root)
        spans += recent(t.spans, 600 - n)
    backend = serve(FakeJaeger(spans))
    monkeypatch.setattr("tracekit.backends.jaeger.MAX_SEARCH_SPANS", 50)

    code, out, err = run("search", "--jaeger", backend.url, "--format", "json")

    assert code == 0
    assert [r["correlation_id"] for r in json.loads(out)["requests"]] == ["req-1", "req-0"]
    assert err == (
        f"tracekit: warning: Jaeger at {backend.url}: the newest traces of 2 of 10 services "
        "hold more than 50 spans: the other services are not searched (name one with "
        "--service)\n"
    )
    assert len([p for p in backend.paths() if p == "/api/v3/traces"]) == 2


def test_jaeger_search_of_a_service_stops_reading_at_the_span_budget_and_says_so(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``search --service`` reads the service's traces page by page until ``--limit``
    requests rooted in it are found: past the span budget it stops, and says so."""
    spans = []
    for n in range(150):  # orders is called by gateway: none of these is its own request
        t = Topology(f"req-{n}")
        t.http(t.span("gateway", "GET /", "SERVER", 0, 10), "orders", "/o", 1, 9)
        spans += recent(t.spans, 900 - n)
    backend = serve(FakeJaeger(spans))
    monkeypatch.setattr("tracekit.backends.jaeger.MAX_SEARCH_SPANS", 50)

    code, _, err = run("search", "--jaeger", backend.url, "--service", "orders")

    assert (code, len([p for p in backend.paths() if p == "/api/v3/traces"])) == (1, 1)
    assert err == (
        f"tracekit: warning: Jaeger at {backend.url}: the newest traces of 'orders' read hold "
        "more than 50 spans: older ones in the window are not read (narrow --since)\n"
        "tracekit: no requests match\n"
    )


def test_a_correlation_id_on_more_traces_than_tempo_is_searched_for_says_so(serve: Any) -> None:
    """Tempo is asked for at most 100 traces of a correlation ID; a request over more showed
    100 of them as if that were all (the store says "more than 500 traces")."""
    backend = serve(FakeTempo(fanned_out(101, 1)))
    code, out, err = run("trace", "req-fanout", "--tempo", backend.url, "--format", "json")
    path = json.loads(out)
    assert (code, err) == (0, "")
    assert len(path["trace_ids"]) == len(path["spans"]) == 100
    assert path["warnings"] == [
        "more than 100 traces carry this correlation ID: showing the 100 Tempo found first"
    ]


def test_a_service_map_over_more_traces_than_tempo_is_searched_for_says_so(serve: Any) -> None:
    """``services`` maps the newest 200 traces Tempo finds; with more in the window it showed
    ``calls 200`` as if that were every call."""
    t = Topology("req-calls")
    for n in range(201):
        t.new_trace()
        root = t.span("gateway", "GET /", "SERVER", n * 10, n * 10 + 9)
        t.http(root, "api", "/x", n * 10 + 1, n * 10 + 8)
    backend = serve(FakeTempo(recent(t.spans)))
    code, out, err = run("services", "--since", "1h", "--tempo", backend.url, "--format", "json")
    assert code == 0
    assert [(e["from"], e["to"], e["calls"]) for e in json.loads(out)["edges"]] == [
        ("gateway", "api", 200)
    ]
    assert err.startswith(f"tracekit: warning: Tempo at {backend.url}: more than 200 traces since ")
    assert err.endswith(": the newest 200 Tempo found are read (narrow --since)\n")
    assert len(err.splitlines()) == 1


def test_traces_linking_to_one_beyond_what_tempo_is_searched_for_are_said_so(
    serve: Any,
) -> None:
    """A message broadcast to 101 consumers, each starting a trace that only links to it."""
    t = Topology("req-broadcast")
    publish = t.span("api", "publish news", "PRODUCER", 0, 1)
    for n in range(101):
        t.new_trace()
        t.span("reader", "process news", "CONSUMER", 2 + n, 3 + n, links=[publish],
               correlated=False)  # fmt: skip
    backend = serve(FakeTempo(recent(t.spans)))
    code, out, err = run("trace", "req-broadcast", "--tempo", backend.url, "--format", "json")
    path = json.loads(out)
    assert (code, err) == (0, "")
    assert len(path["trace_ids"]) == 101  # the producer's and 100 consumers'
    assert path["warnings"] == [
        f"more than 100 traces link to trace {publish.trace_id}: joining the 100 Tempo found first"
    ]
