"""A Tempo before 2.7 refuses a trace over its ``max_bytes_per_trace`` with ``422 trace exceeds
max size``, where a later one returns it in part. One such trace failed the whole command: a
request spread over several traces showed none of them. Now that trace is left out, and said,
and the others are shown. No Tempo can run here: ``tempo_fake`` answers as Tempo does.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import Topology

from tracekit.records import SpanRecord
from tracekit_cli.main import cli

TEMPO_2_6 = (2, 6)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"TRACEKIT_BACKEND_HEADERS": ""})
    return result.exit_code, result.stdout, result.stderr


def jobs(calls: list[int]) -> list[SpanRecord]:
    """One request over a trace per job, job ``n`` making ``calls[n]`` calls to a store (a job
    fanned out to workers, each starting a trace of its own with the correlation ID)."""
    t = Topology("req-jobs")
    for n, count in enumerate(calls):
        t.new_trace()
        job = t.span("worker", f"job {n}", "CONSUMER", n * 1000, n * 1000 + 500)
        for i in range(count):
            t.http(job, "store", f"/rows/{i}", n * 1000 + 10 * i + 1, n * 1000 + 10 * i + 9)
    return recent(t.spans)


def test_a_trace_tempo_refuses_is_left_out_and_said_not_the_whole_request(serve: Any) -> None:
    spans = jobs([1, 5, 1])  # at 300 bytes a span, the second (11 spans) is over 1,500 bytes
    refused = spans[3].trace_id
    backend = serve(FakeTempo(spans, version=TEMPO_2_6, max_bytes_per_trace=1500))

    code, out, err = run("trace", "req-jobs", "--tempo", backend.url, "--format", "json")

    path = json.loads(out)
    said = (
        f"Tempo at {backend.url} refused trace {refused} (HTTP 422: trace exceeds max size "
        "(max bytes: 1500)): it is left out"
    )
    assert code == 0
    assert sorted(s["name"] for s in path["spans"]) == sorted(
        s.name for s in spans if s.trace_id != refused
    )
    assert said in path["warnings"]
    assert err == ""  # the path says it


def test_a_request_tempo_answers_none_of_is_its_refusal_not_not_found(serve: Any) -> None:
    spans = jobs([5])
    backend = serve(FakeTempo(spans, version=TEMPO_2_6, max_bytes_per_trace=1500))

    for typed in ("req-jobs", spans[0].trace_id):
        code, out, err = run("trace", typed, "--tempo", backend.url, "--format", "json")

        assert (code, out) == (2, "")
        assert err == (
            f"tracekit: Tempo at {backend.url} refused trace {spans[0].trace_id} (HTTP 422: "
            "trace exceeds max size (max bytes: 1500))\n"
        )


def test_services_on_tempo_map_the_traces_it_answers(serve: Any) -> None:
    spans = jobs([1, 5, 1])
    backend = serve(FakeTempo(spans, version=TEMPO_2_6, max_bytes_per_trace=1500))

    code, out, err = run("services", "--since", "1h", "--tempo", backend.url, "--format", "json")

    assert code == 0
    assert [(e["from"], e["to"], e["calls"]) for e in json.loads(out)["edges"]] == [
        ("worker", "store", 2)  # one call in each trace Tempo answered
    ]
    assert "refused trace" in err and len(err.splitlines()) == 1
