"""``--timeout`` bounds the whole command, as curl's ``--max-time`` does: every request and retry
to Tempo or Jaeger. It bounded each request, so a command of many requests, or one retrying a
failing request, ran far past it. Served by the loopback fakes of ``tempo_fake`` and
``jaeger_fake`` (no Tempo or Jaeger can run on these machines), each request held a while first,
as a busy backend holds it.
"""

from __future__ import annotations

import time
from typing import Any

from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import Topology
from werkzeug.wrappers import Request, Response

from tracekit_cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "--format", "json"],
                                env={"TRACEKIT_BACKEND_HEADERS": ""})  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


def over_services(count: int) -> list[Any]:
    """One request through ``count`` services, each calling the next."""
    t = Topology("req-long")
    parent = t.span("svc-0", "GET /", "SERVER", 0, 100)
    for n in range(1, count):
        parent = t.http(parent, f"svc-{n}", "/next", n, 100 - n)[1]
    return recent(t.spans)


def held(app: Any, seconds: float) -> Any:
    def answer(request: Request) -> Response:
        time.sleep(seconds)
        return app(request)

    return answer


def test_a_command_of_many_requests_stops_at_its_timeout(serve: Any) -> None:
    """Jaeger's service map searches service by service: six requests of 0.3 s each, every
    one well within the 1 s, and the command took 2 s."""
    backend = serve(held(FakeJaeger(over_services(5)), 0.3))
    code, out, err = run("services", "--since", "1h", "--jaeger", backend.url, "--timeout", "1")
    assert (code, out) == (2, "")
    assert err == (
        f"tracekit: Jaeger at {backend.url}: its answers took longer than the 1 s given to the "
        "whole command (--timeout): a longer timeout may let it finish\n"
    )
    assert len(backend.requests) < 6


def test_no_retry_starts_past_the_timeout(serve: Any) -> None:
    """A gateway answering 503 after 0.9 s: the retries (0.2 s, then 0.4 s later) went on to
    3 s with --timeout 1."""
    backend = serve(held(lambda request: Response("upstream busy", 503), 0.9))
    code, out, err = run("services", "--jaeger", backend.url, "--timeout", "1")
    assert (code, out) == (2, "")
    assert err == f"tracekit: Jaeger at {backend.url}: HTTP 503: upstream busy\n"
    assert len(backend.requests) == 1


def test_the_help_says_what_the_timeout_bounds() -> None:
    result = CliRunner().invoke(cli, ["search", "--help"])
    assert (
        "Seconds a remote backend's answers may take, for the whole command (every request and "
        "retry); past them, exit 2. [default: 30.0; 0.1<=x<=600]"
    ) in " ".join(result.stdout.split())
