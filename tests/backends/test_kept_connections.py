"""Reads of Tempo and Jaeger reuse their connections and run a few at once.

Served by ``serve_keep_alive`` (uvicorn on loopback, which keeps connections open between
requests as Go's server behind Tempo and Jaeger does) answering with the fakes of ``tempo_fake``
and ``jaeger_fake`` (no Tempo or Jaeger can run on these machines). Each trace read was a new TCP
connection (and TLS handshake), read after the one before: 100 traces 50 ms away took 5 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import Topology
from werkzeug.wrappers import Request, Response

from tracekit.backends._http import JsonClient
from tracekit.backends._read_ahead import PARALLEL_READS
from tracekit_cli.main import cli

TRACES = 24


def requests(count: int, correlation_id: str | None = None) -> list[Any]:
    """``count`` requests, gateway calling orders, each its own trace (``correlation_id``: one
    request that began them all)."""
    spans = []
    for n in range(count):
        t = Topology(correlation_id or f"req-{n}")
        for _ in range(n if correlation_id else 0):
            t.new_trace()  # ids of a topology start from 1: one trace each
        root = t.span("gateway", "GET /orders", "SERVER", 10 * n, 10 * n + 8)
        call = t.span("gateway", "GET", "CLIENT", 10 * n + 1, 10 * n + 7, root)
        t.span("orders", "GET /orders", "SERVER", 10 * n + 2, 10 * n + 6, call)
        spans += t.spans
    return recent(spans)


class HeldForCompany:
    """``fake``'s answers; each request ``held`` picks waits until another is in flight beside
    it (or 1 s has passed): sent one after another, none ever has company. ``most``: the most
    in flight at once."""

    def __init__(self, fake: Any, held: Callable[[Request], bool]) -> None:
        self.fake, self.held = fake, held
        self.in_flight = self.most = 0
        self._company = threading.Condition()

    def __call__(self, request: Request) -> Response:
        if not self.held(request):
            return self.fake(request)
        with self._company:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self._company.notify_all()
            self._company.wait_for(lambda: self.in_flight > 1, timeout=1)
        try:
            return self.fake(request)
        finally:
            with self._company:
                self.in_flight -= 1


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "--format", "json"],
                                env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


def test_services_reads_every_trace_over_a_few_connections(serve_keep_alive: Any) -> None:
    backend = serve_keep_alive(FakeTempo(requests(TRACES)))
    code, _, err = run("services", "--tempo", backend.url, "--since", "1h")
    assert (code, err) == (0, "")
    trace_reads = [r for r in backend.requests if r.path.startswith("/api/v2/traces/")]
    assert len(trace_reads) == TRACES
    # one connection a request before: 25 here
    assert len(backend.connections) <= PARALLEL_READS


@pytest.mark.parametrize(("option", "fake"), [("--tempo", FakeTempo), ("--jaeger", FakeJaeger)])
def test_the_traces_of_a_request_are_read_several_at_once(
    serve_keep_alive: Any, option: str, fake: Any
) -> None:
    """Each trace read is held until another is in flight beside it (``HeldForCompany``)."""
    spans = requests(4, correlation_id="req-shared")
    held = HeldForCompany(fake(spans), lambda request: "/traces/" in request.path)
    backend = serve_keep_alive(held)
    trace_ids = sorted({s.trace_id for s in spans})
    code, _, err = run("trace", trace_ids[0], option, backend.url)
    assert (code, err) == (0, "")
    assert 1 < held.most <= PARALLEL_READS


def test_a_kept_connection_the_server_closed_is_replaced(serve_raw: Any) -> None:
    """A server that lets an idle connection go (Go's IdleTimeout) after it answered, without
    saying so: the next request on it finds it closed and goes on a new one, unseen."""
    body = b'{"services": []}'
    backend = serve_raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    client = JsonClient(backend.url, name="Jaeger", retries=0)
    assert [client.get("/api/v3/services") for _ in range(3)] == [{"services": []}] * 3
    assert backend.connections == 3


def test_jaeger_searches_its_services_for_a_correlation_id_several_at_once(
    serve_keep_alive: Any,
) -> None:
    """Jaeger is searched service by service; once an answer shows it filters by the
    correlation ID (2.19 on), the other services' searches are sent together (each held until
    another is in flight beside it: ``HeldForCompany``)."""
    t = Topology("req-deep")
    parent = t.span("svc-0", "GET /", "SERVER", 0, 100)
    for n in range(1, 6):
        parent = t.http(parent, f"svc-{n}", "/next", n, 100 - n)[1]
    held = HeldForCompany(FakeJaeger(recent(t.spans)), lambda r: r.path == "/api/v3/traces")
    backend = serve_keep_alive(held)
    code, _, err = run("trace", "req-deep", "--jaeger", backend.url)
    assert (code, err) == (0, "")
    assert 1 < held.most <= PARALLEL_READS
