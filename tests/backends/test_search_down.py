"""``trace <trace id>`` shows the trace typed when the backend's search fails.

The trace typed is read by its id, then its request's correlation ID is searched for the
request's other traces. Searching is what fails first on a busy Tempo or Jaeger (a week of
traces searched past the timeout, a search tier behind an Envoy answering 503) while reading
by id still works, and the whole command failed (exit 2) with the trace typed already read.
Now the path shows that trace and what it links to, with a warning naming what could not be
searched; a correlation ID typed, which nothing was read for, is still the error. No Tempo or
Jaeger can run here: ``tempo_fake`` and ``jaeger_fake`` answer as they do, on loopback.
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
from werkzeug.wrappers import Request, Response

from tracekit.records import SpanRecord
from tracekit_cli.main import cli

ENVOY = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
SEARCHES = {"--tempo": ("/api/search",), "--jaeger": ("/api/v3/traces", "/api/v3/services")}


def order() -> list[SpanRecord]:
    t = Topology("req-order-42")
    root = t.span("web", "POST /orders", "SERVER", 0, 30)
    t.http(root, "stock", "/reserve", 5, 20)
    return recent(t.spans)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"TRACEKIT_BACKEND_HEADERS": ""})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(params=[(FakeTempo, "--tempo"), (FakeJaeger, "--jaeger")], ids=["tempo", "jaeger"])
def searches_failing(request: pytest.FixtureRequest, serve: Any) -> tuple[str, str, list[Any]]:
    """A backend (and its flag) whose searches answer 503 and whose traces are read by id."""
    fake, flag = request.param
    backend = fake(order())

    def answer(asked: Request) -> Response:
        if asked.path in SEARCHES[flag]:
            return Response(ENVOY, 503, content_type="text/plain")
        return backend(asked)

    return serve(answer).url, flag, order()


def test_the_trace_typed_is_shown_with_what_could_not_be_searched(
    searches_failing: tuple[str, str, list[Any]],
) -> None:
    url, flag, spans = searches_failing
    trace_id = spans[0].trace_id

    code, out, err = run("trace", trace_id, flag, url, "--timeout", "2", "--format", "json")

    path = json.loads(out)
    assert (code, err) == (0, "")
    assert [s["name"] for s in path["spans"]] == ["POST /orders", "GET /reserve", "GET /reserve"]
    name = {"--tempo": "Tempo", "--jaeger": "Jaeger"}[flag]
    assert (
        f"the other traces of request 'req-order-42' could not be searched ({name} at {url}: "
        f"HTTP 503: {ENVOY}): the path shows trace {trace_id} and the traces linked to it"
    ) in path["warnings"]


def test_a_correlation_id_typed_is_still_the_error(
    searches_failing: tuple[str, str, list[Any]],
) -> None:
    url, flag, _ = searches_failing

    code, out, err = run("trace", "req-order-42", flag, url, "--timeout", "2")

    name = {"--tempo": "Tempo", "--jaeger": "Jaeger"}[flag]
    assert (code, out, err) == (2, "", f"tracekit: {name} at {url}: HTTP 503: {ENVOY}\n")
