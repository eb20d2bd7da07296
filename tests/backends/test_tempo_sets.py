"""``tracekit diff --service S --a K=V --b K=V --tempo URL``: the sets are drawn from the newest
traces of service S (up to 2,000, as on Jaeger), not from the newest 200 traces of every service.

Before, a canary on 10% of the traffic had 20 requests in its set out of 400 in the window, and
none at all when other services were busier: "no requests of 'api' ..." (exit 3). No Tempo runs
here: ``FakeTempo`` answers TraceQL ``{ resource.service.name = "..." }`` as Tempo does, newest
first with ``most_recent=true``, on a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import time
from typing import Any

from click.testing import CliRunner
from tempo_fake import FakeTempo

from tracekit.backends.tempo import MAX_TRACES_OF_A_SERVICE, TempoSource
from tracekit.records import SpanRecord
from tracekit_cli.main import cli

NOW = time.time_ns() - 60 * 10**9


def entry(n: int, service: str, version: str, seconds_ago: float) -> SpanRecord:
    """Request ``n``: one SERVER span of ``service`` at ``version``."""
    start = NOW - int(seconds_ago * 10**9)
    return SpanRecord(
        trace_id=f"{n + 1:032x}", span_id=f"{n + 1:016x}", parent_span_id=None, service=service,
        name="GET /items", kind="SERVER", start_unix_nano=start, end_unix_nano=start + 20 * 10**6,
        attributes={"correlation.id": f"req-{n}"}, service_version=version,
    )  # fmt: skip


def canary_and_busier_services() -> list[SpanRecord]:
    """400 requests to ``api`` in the last hour, one in ten on version 2; 300 newer requests to
    ``web``, a busier service."""
    api = [entry(n, "api", "2" if n % 10 == 0 else "1", 300 + n * 8) for n in range(400)]
    web = [entry(1000 + n, "web", "1", n) for n in range(300)]
    return api + web


def test_the_set_form_reads_the_traces_of_the_service_named(serve: Any) -> None:
    backend = serve(FakeTempo(canary_and_busier_services()))
    result = CliRunner().invoke(
        cli, ["diff", "--service", "api", "--a", "service.version=1", "--b", "service.version=2",
              "--since", "2h", "--tempo", backend.url, "--format", "json"],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    doc = json.loads(result.stdout)
    assert (doc["a"]["requests"], doc["b"]["requests"]) == (360, 40)
    first = next(r for r in backend.requests if r.path == "/api/search")
    assert first.args["q"] == '{ resource.service.name = "api" } with (most_recent=true)'


def test_more_traces_of_the_service_than_are_read_is_said_once(serve: Any) -> None:
    many = [entry(n, "api", "1", n * 0.5) for n in range(MAX_TRACES_OF_A_SERVICE + 1)]
    told: list[str] = []
    source = TempoSource(serve(FakeTempo(many)).url, service="api", notify=told.append)
    spans = source.newest_spans_since(NOW - 3600 * 10**9, limit=1)
    assert [s.trace_id for s in spans] == [many[0].trace_id]  # the newest, read alone
    assert len(told) == 1
    assert f"more than {MAX_TRACES_OF_A_SERVICE} traces of 'api' since " in told[0]
    assert told[0].endswith(f"the newest {MAX_TRACES_OF_A_SERVICE} Tempo found are read "
                            "(narrow --since)")  # fmt: skip
