"""A trace that several services' searches answer is read once.

Jaeger's api_v3 searches one service at a time and answers whole traces, so a request over ten
services comes back whole in each of the ten answers, and tracekit read every one of them into
span records before dropping the traces it held already. A 50,000-span request over ten services
took 16.4 s of CPU and 279 MB for ``trace <trace id> --jaeger`` (11.5 s and 280 MB for
``search``); read once, 9.4 s and 234 MB (4.9 s and 184 MB), the output unchanged (measured
with the ``jaeger_fake`` on loopback). These tests count the spans read into records; no Jaeger
can run here, so ``jaeger_fake`` answers as it does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import Topology

from tracekit.backends import _otlp_json
from tracekit.records import SpanRecord
from tracekit_cli.main import cli

SERVICES = [f"service-{n}" for n in range(8)]


def over_many_services(spans_each: int) -> list[SpanRecord]:
    """One request, one trace, ``spans_each`` spans in each of ``SERVICES``."""
    t = Topology("req-wide")
    root = t.span("gateway", "POST /orders", "SERVER", 0, 500)
    for n, service in enumerate(SERVICES):
        for i in range(spans_each):
            t.span(service, f"step {i}", "INTERNAL", n * 50 + i * 0.1, n * 50 + i * 0.1 + 1, root)
    return recent(t.spans)


@pytest.fixture
def spans_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The span id of each span a command reads from an answer into a record."""
    read: list[str] = []
    read_span = _otlp_json._span

    def counted(span: dict[str, Any], *args: Any) -> SpanRecord:
        record = read_span(span, *args)
        read.append(record.span_id)
        return record

    monkeypatch.setattr(_otlp_json, "_span", counted)
    return read


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"TRACEKIT_BACKEND_HEADERS": ""})
    return result.exit_code, result.stdout, result.stderr


def test_trace_reads_a_request_answered_by_every_service_once(
    serve: Any, spans_read: list[str]
) -> None:
    spans = over_many_services(spans_each=25)
    url = serve(FakeJaeger(spans)).url

    code, out, err = run("trace", spans[0].trace_id, "--jaeger", url, "--format", "json")

    assert (code, err) == (0, "")
    assert len(json.loads(out)["spans"]) == len(spans) == 201
    # the trace read by its id, then found again in the search of its correlation ID: nine
    # services' searches answer it, the first of them is read
    assert len(spans_read) == 2 * len(spans)


def test_search_reads_a_request_answered_by_every_service_once(
    serve: Any, spans_read: list[str]
) -> None:
    spans = over_many_services(spans_each=25)
    url = serve(FakeJaeger(spans)).url

    code, out, err = run("search", "--jaeger", url, "--format", "json")

    assert (code, err) == (0, "")
    (request,) = json.loads(out)["requests"]
    assert (request["correlation_id"], request["span_count"]) == ("req-wide", 201)
    assert sorted(spans_read) == sorted(s.span_id for s in spans)


def test_a_correlation_id_on_more_traces_than_searched_for_counts_those_read_before(
    serve: Any,
) -> None:
    """150 ticks of a cron job share one ID; the newest 60 also call 'api', searched first
    (by name). The search of 'cron' then answers 100 traces, 60 of them read already: it is
    still full, and the path says the ID is on more traces than were searched for."""
    t = Topology("cron-every-minute")
    for n in range(150):
        t.new_trace()
        tick = t.span("cron", "tick", "SERVER", n, n + 0.5)
        if n >= 90:
            t.span("api", "GET /due", "SERVER", n + 0.1, n + 0.2, tick)
    url = serve(FakeJaeger(recent(t.spans))).url

    code, out, err = run("trace", "cron-every-minute", "--jaeger", url, "--format", "json")

    path = json.loads(out)
    assert (code, len(path["trace_ids"]), err) == (0, 100, "")
    assert path["warnings"] == [
        "more than 100 traces of 'cron' carry this correlation ID: showing the newest 100 "
        "Jaeger found"
    ]
