"""A Jaeger search answers whole traces, up to 100 of them: traces of thousands of spans make an
answer over the 64 MiB any answer may hold. Before, that failed the command ("Jaeger answered
more than 67108864 bytes", exit 2); now the search asks for a quarter as many traces at a time,
and says so once. A real server on loopback answers as jaeger-query does; the bound is scaled
down to what a few small traces exceed, so the test moves kilobytes, not 64 MiB.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

import tracekit.backends._http as http_client
from tracekit.backends.jaeger import JaegerSource
from tracekit.records import SpanRecord
from tracekit_cli.main import cli

NOW = time.time_ns() - 60 * 10**9


def requests(count: int) -> list[SpanRecord]:
    """``count`` requests to ``api``, one SERVER span each, a second apart, newest first."""
    return [
        SpanRecord(
            trace_id=f"{n + 1:032x}",
            span_id=f"{n + 1:016x}",
            parent_span_id=None,
            service="api",
            name="GET /items",
            kind="SERVER",
            start_unix_nano=NOW - n * 10**9,
            end_unix_nano=NOW - n * 10**9 + 10**7,
            attributes={"correlation.id": f"req-{n}"},
        )
        for n in range(count)
    ]


@pytest.fixture
def bound_of_ten_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any answer may hold what ten of these traces take, and no more."""
    ten = FakeJaeger(requests(10))
    size = len(ten(_search_request()).get_data())
    monkeypatch.setattr(http_client, "MAX_RESPONSE_BYTES", size + 100)


def _search_request() -> Request:
    """The search ``search --jaeger`` sends for service ``api``, around the requests' hour."""
    low = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW / 1e9 - 3600))
    high = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW / 1e9 + 3600))
    query = {"query.service_name": "api", "query.start_time_min": low,
             "query.start_time_max": high, "query.num_traces": "100"}  # fmt: skip
    return Request(EnvironBuilder(path="/api/v3/traces", query_string=query).get_environ())


@pytest.mark.usefixtures("bound_of_ten_traces")
def test_search_asks_for_fewer_traces_and_says_so(serve: Any) -> None:
    backend = serve(FakeJaeger(requests(40)))
    result = CliRunner().invoke(
        cli, ["search", "--jaeger", backend.url, "--limit", "40", "--format", "json"],
        env={"COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    found = [r["correlation_id"] for r in json.loads(result.stdout)["requests"]]
    assert found == [f"req-{n}" for n in range(10)]  # the newest ten: 40 asked, then 10
    asked = [r.args["query.num_traces"] for r in backend.requests if r.args]
    assert asked == ["40", "10"]
    assert result.stderr == (
        f"tracekit: warning: Jaeger at {backend.url}: a search's whole traces are more than an "
        "answer may hold (64 MiB of JSON): asking for a quarter as many at a time, so older "
        "traces in the window may not be read (narrow --since)\n"
    )


@pytest.mark.usefixtures("bound_of_ten_traces")
def test_the_pages_of_one_service_go_on_in_smaller_pages(serve: Any) -> None:
    """``diff``'s set form: every request of the window is still read, 25 at a time."""
    told: list[str] = []
    source = JaegerSource(serve(FakeJaeger(requests(40))).url, service="api", notify=told.append)
    spans = source.newest_spans_since(NOW - 3600 * 10**9, limit=1000)
    assert len({s.trace_id for s in spans}) == 40
    assert len(told) == 1 and "asking for a quarter as many at a time" in told[0]


def test_one_trace_over_the_bound_is_still_the_error(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_client, "MAX_RESPONSE_BYTES", 100)
    url = serve(FakeJaeger(requests(3))).url
    result = CliRunner().invoke(cli, ["search", "--jaeger", url],
                                env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.endswith("tracekit: Jaeger answered more than 100 bytes\n")
