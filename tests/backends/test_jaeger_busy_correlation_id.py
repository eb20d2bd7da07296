"""A correlation ID on more traces than Jaeger is searched for says so in the path.

``trace ID --jaeger`` searches each service for the newest 100 traces carrying the ID. A cron job
whose every tick shares one ID carries it on hundreds: the path showed 100 traces with no warning
(``trace --format json`` said nothing was left out), and stderr a notice worded for ``search``
(narrow ``--since``, which ``trace`` has not). The store and Tempo say it in the path's warnings.
The server is ``jaeger_fake`` on loopback (no Jaeger can run here).
"""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import Topology

from tracekit_cli.main import cli


def ticks(count: int) -> list[Any]:
    t = Topology("cron-every-minute")
    for n in range(count):
        t.new_trace()
        t.span("cron", "tick", "SERVER", n, n + 0.5)
    return recent(t.spans)


def trace_json(url: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(
        cli,
        ["trace", "cron-every-minute", "--jaeger", url, "--format", "json"],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_more_traces_than_searched_for_is_a_warning_of_the_path(serve: Any) -> None:
    url = serve(FakeJaeger(ticks(150))).url
    code, path, err = trace_json(url)
    assert (code, len(path["trace_ids"]), err) == (0, 100, "")
    assert path["warnings"] == [
        "more than 100 traces of 'cron' carry this correlation ID: showing the newest 100 "
        "Jaeger found"
    ]


def test_all_the_traces_found_is_no_warning(serve: Any) -> None:
    url = serve(FakeJaeger(ticks(99))).url
    code, path, err = trace_json(url)
    assert (code, len(path["trace_ids"]), path["warnings"], err) == (0, 99, [], "")
