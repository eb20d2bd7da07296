"""api_v3's query parameters by the names Jaeger reads first from 2.19 on.

Jaeger 2.19 (jaegertracing/jaeger#8625) made the camelCase names canonical (``query.serviceName``,
``query.searchDepth``, ``rawTraces``...) and the snake_case names tracekit sent deprecated
aliases: each request using one is answered with ``Deprecation: true`` and logged on the Jaeger
server as a warning ("deprecated API v3 query parameter used"), and the code says they go in
v2.20 (``Sunset: Mon, 01 Nov 2026``). tracekit now sends both names: an earlier Jaeger reads the
snake_case one and ignores the other. Real servers on loopback answer as Jaeger does
(``jaeger_fake``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from trace_topologies import checkout

from tracekit_cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "100"})
    return result.exit_code, result.stdout, result.stderr


def commands(url: str, trace_id: str) -> list[list[str]]:
    jaeger = ["--jaeger", url, "--format", "json"]
    return [
        ["trace", "req-checkout-1", *jaeger],
        ["trace", trace_id, *jaeger],
        ["search", "--since", "1h", "--min-duration", "10", *jaeger],
        ["search", "--service", "gateway", *jaeger],
        ["services", "--since", "1h", *jaeger],
    ]


def test_no_request_to_a_current_jaeger_uses_a_deprecated_parameter(serve: Any) -> None:
    spans = recent(checkout().spans)
    jaeger = FakeJaeger(spans, version=(2, 20))
    url = serve(jaeger).url

    for args in commands(url, spans[0].trace_id):
        code, out, err = run(*args)
        assert (code, err) == (0, ""), args
        assert json.loads(out)

    assert jaeger.deprecated_params == []  # no warning in Jaeger's log, no Deprecation header


@pytest.mark.parametrize("version", [(2, 10), (2, 20)])
def test_every_command_reads_a_jaeger_that_knows_one_of_the_names(
    serve: Any, version: tuple[int, int]
) -> None:
    """(2, 10): the snake_case names alone; (2, 20) without them: the camelCase names alone."""
    spans = recent(checkout().spans)
    url = serve(FakeJaeger(spans, version=version, snake_case=version < (2, 19))).url

    for args in commands(url, spans[0].trace_id):
        code, out, err = run(*args)
        assert (code, err) == (0, ""), args
        if args[0] == "trace":
            assert json.loads(out)["services"] == ["gateway", "orders", "payments", "bank"]
