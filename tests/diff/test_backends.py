"""``tracekit diff --tempo|--jaeger`` with ``--header``: the same ground truth through a remote
backend. No Tempo or Jaeger can run here: the spans built through the SDK into a store are read
back and served by ``tests/backends``' fakes, which answer in those servers' own encodings (a
tenant header required), on a real HTTP server on loopback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from checkout import Shape, build
from click.testing import CliRunner
from loopback import start_werkzeug
from sdk_requests import Deployment, api_entry
from werkzeug.wrappers import Request

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

_TESTS = Path(__file__).resolve().parents[1]
for _directory in (_TESTS / "backends", _TESTS / "path"):
    if str(_directory) not in sys.path:
        sys.path.insert(0, str(_directory))

from jaeger_fake import FakeJaeger  # noqa: E402 (found through the path set above)
from tempo_fake import FakeTempo  # noqa: E402


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[SpanRecord], str, str]:
    """Spans of a checkout and of the same checkout whose consumer started 400 ms later."""
    with Store(tmp_path_factory.mktemp("remote") / "tracekit.db") as store:
        deployment = Deployment(store)
        fast, slow = deployment.request(), deployment.request()
        build(fast, Shape())
        build(slow, Shape(queue_delay=405))
        deployment.shutdown()
        return store.spans_since(0), fast.correlation_id, slow.correlation_id


def serve(handler: Any) -> Iterator[str]:
    url, stop = start_werkzeug(Request.application(handler))
    try:
        yield url
    finally:
        stop()


@pytest.mark.parametrize("backend", ["tempo", "jaeger"])
def test_diff_reads_a_remote_backend_with_its_tenant_header(
    backend: str, stored: tuple[list[SpanRecord], str, str]
) -> None:
    spans, fast, slow = stored
    fake = FakeTempo(spans, tenant="team-a") if backend == "tempo" else FakeJaeger(spans)
    header = "X-Scope-OrgID=team-a" if backend == "tempo" else "x-tenant=blue"
    for url in serve(fake):
        result = CliRunner().invoke(
            cli, ["diff", fast, slow, f"--{backend}", url, "--header", header, "--format", "json"],
            env={"TRACEKIT_BACKEND_HEADERS": ""},
        )  # fmt: skip
        assert result.exit_code == 1, result.stderr
        doc = json.loads(result.stdout)
        assert doc["headline"].startswith("+400.0 ms end to end (+392%): 100% queue wait on ")
        if backend == "tempo":
            refused = CliRunner().invoke(cli, ["diff", fast, slow, "--tempo", url],
                                         env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
            assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1


def test_a_header_without_a_remote_backend_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["diff", "a", "b", "--header", "X-Scope-OrgID=team-a"])
    assert result.exit_code == 2
    assert result.stderr == (
        "tracekit: --header is for a remote backend: use it with --tempo or --jaeger\n"
    )


def test_the_set_form_on_jaeger_reads_every_request_of_the_window_not_one_search() -> None:
    """A canary on 10% of the traffic: 40 of 400 requests in the hour. One api_v3 search answers
    the newest 100 traces: the canary's set held 10, "too few to tell", whatever the window."""
    now = time.time_ns() - 60 * 10**9

    def request(n: int) -> SpanRecord:
        version = "2" if n % 10 == 0 else "1"
        cid = {"correlation.id": f"req-{n}"}
        return api_entry(n, now - n * 5 * 10**9, attributes=cid, service_version=version)

    for url in serve(FakeJaeger([request(n) for n in range(400)])):
        result = CliRunner().invoke(
            cli, ["diff", "--service", "api", "--a", "service.version=1", "--b",
                  "service.version=2", "--jaeger", url, "--format", "json"],
            env={"TRACEKIT_BACKEND_HEADERS": ""},
        )  # fmt: skip
        assert (result.exit_code, result.stderr) == (0, "")
        doc = json.loads(result.stdout)
        assert (doc["a"]["requests"], doc["b"]["requests"]) == (360, 40)
        assert not doc["headline"].startswith("too few")


def test_a_request_not_found_on_jaeger_is_searched_for_once(
    stored: tuple[list[SpanRecord], str, str],
) -> None:
    """The question "does only a log line carry it?" only the store can answer. Asked of
    Jaeger, it searched every service for the missing ID a second time (up to 200 requests)."""
    spans, fast, _ = stored
    fake = FakeJaeger(spans)
    asked: list[str] = []

    def counting(request: Request) -> Any:
        if "req-nowhere" in request.full_path:
            asked.append(request.full_path)
        return fake(request)

    for url in serve(counting):
        traced = CliRunner().invoke(cli, ["trace", "req-nowhere", "--jaeger", url],
                                    env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
        searches, asked[:] = len(asked), []
        result = CliRunner().invoke(cli, ["diff", fast, "req-nowhere", "--jaeger", url],
                                    env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip

        assert traced.exit_code == 1 and searches > 0
        assert (result.exit_code, result.stderr) == (
            3, "tracekit: no request found for 'req-nowhere'; correlation IDs are searched "
               "for over the last 2 days; an older request is found by its trace ID\n"
        )  # fmt: skip
        assert len(asked) == searches
