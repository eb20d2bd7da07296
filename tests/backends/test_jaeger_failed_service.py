"""Without ``--service``, Jaeger is searched service by service; one search that fails in
Jaeger's storage (HTTP 500) leaves out only what that service alone would have found, with one
warning. Before, it failed the whole command after every search before it: exit 2. Jaeger
answers whole traces, so a request is still shown whole when another of its services finds it.

A real server on loopback answers as jaeger-query does (``jaeger_fake``), one service's search
failing as a storage error surfaces through its HTTP gateway.
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from jaeger_fake import FakeJaeger, gateway_error
from otlp_fixtures import recent
from trace_topologies import checkout
from werkzeug.wrappers import Request, Response

from tracekit_cli.main import cli

STORAGE_ERROR = "elasticsearch: search_phase_execution_exception"


def failing_for(fake: FakeJaeger, services: set[str], status: int = 500) -> Any:
    """``fake``'s answers, but a search of one of ``services`` fails with ``status``."""

    def handler(request: Request) -> Response:
        if request.args.get("query.service_name") in services:
            return gateway_error(status, STORAGE_ERROR)
        return fake(request)

    return handler


def tracekit(*args: str) -> Any:
    return CliRunner().invoke(
        cli, list(args), env={"COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": ""}
    )


def test_the_request_is_shown_and_the_failed_search_said_once(serve: Any) -> None:
    url = serve(failing_for(FakeJaeger(recent(checkout().spans)), {"bank", "payments"})).url
    result = tracekit("trace", "req-checkout-1", "--jaeger", url, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["services"] == ["gateway", "orders", "payments", "bank"]
    assert result.stderr == (
        f"tracekit: warning: Jaeger at {url}: the search of service 'bank' failed (HTTP 500: "
        f"{STORAGE_ERROR}): traces found only there are missing (and so for any other service "
        "whose search fails)\n"
    )


def test_search_lists_what_the_other_services_found(serve: Any) -> None:
    url = serve(failing_for(FakeJaeger(recent(checkout().spans)), {"gateway"})).url
    result = tracekit("search", "--jaeger", url, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [r["correlation_id"] for r in json.loads(result.stdout)["requests"]] == [
        "req-checkout-1"
    ]
    assert result.stderr.count("\n") == 1 and "service 'gateway' failed" in result.stderr


def test_when_every_search_fails_it_is_the_error(serve: Any) -> None:
    spans = recent(checkout().spans)
    url = serve(failing_for(FakeJaeger(spans), {s.service for s in spans})).url
    result = tracekit("trace", "req-checkout-1", "--jaeger", url)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"tracekit: Jaeger at {url} answered HTTP 500: {STORAGE_ERROR}\n"


def test_a_refused_query_is_still_the_error(serve: Any) -> None:
    """A 400 is the query itself: every other service's search would be refused too."""
    url = serve(failing_for(FakeJaeger(recent(checkout().spans)), {"bank"}, status=400)).url
    result = tracekit("trace", "req-checkout-1", "--jaeger", url)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"tracekit: Jaeger at {url} answered HTTP 400: {STORAGE_ERROR}\n"
