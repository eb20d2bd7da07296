"""The Accept a backend client needs wins over a caller's own, and the caller's other headers
still go. Tempo answers ``/api/traces/<id>`` and ``/api/v2/traces/<id>`` in protobuf when asked
``Accept: application/protobuf`` (its ``pkg/api`` marshals by that header alone): served here by
the loopback fake of ``tempo_fake`` (no Tempo can run on these machines), which then answers the
protobuf content type with bytes that are no JSON, as Tempo's would be."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout
from werkzeug.wrappers import Request, Response

from tracekit.backends.tempo import TempoSource
from tracekit_cli.main import cli

PROTOBUF = "application/protobuf"


class ProtobufWhenAsked(FakeTempo):
    """A tenant's Tempo that answers protobuf to ``Accept: application/protobuf``."""

    def __call__(self, request: Request) -> Response:
        if request.headers.get("Accept") == PROTOBUF:
            return Response(b"\x0a\x8b\x01\x0a\x24", content_type=PROTOBUF)
        return super().__call__(request)


@pytest.mark.parametrize("name", ["Accept", "accept", "ACCEPT"])
def test_a_callers_accept_does_not_make_the_trace_unreadable(serve: Any, name: str) -> None:
    spans = recent(checkout().spans)
    backend = serve(ProtobufWhenAsked(spans, tenant="team-a"))
    headers = {name: PROTOBUF, "X-Scope-OrgID": "team-a", "accept-encoding": "br"}
    read = TempoSource(backend.url, headers=headers, retries=0).spans_by_trace_ids(
        [spans[0].trace_id]
    )
    assert {s.span_id for s in read} == {s.span_id for s in spans if s.trace_id == read[0].trace_id}
    sent = backend.requests[-1].headers
    assert (sent["Accept"], sent["Accept-Encoding"], sent["X-Scope-OrgID"]) == (
        "application/json", "gzip", "team-a",
    )  # fmt: skip


@pytest.mark.parametrize("typed", ["X-Scope-OrgID: team-a", "X-Scope-OrgID:team-a"])
def test_a_header_typed_as_curl_takes_it_is_sent(serve: Any, typed: str) -> None:
    spans = recent(checkout().spans)
    backend = serve(FakeTempo(spans, tenant="team-a"))
    result = CliRunner().invoke(
        cli, ["trace", spans[0].trace_id, "--tempo", backend.url, "--header", typed,
              "--format", "json"], env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    assert backend.requests[-1].headers["X-Scope-OrgID"] == "team-a"


def test_accept_typed_as_curl_takes_it_is_one_clear_line() -> None:
    result = CliRunner().invoke(
        cli, ["search", "--tempo", "http://127.0.0.1:9", "--header", f"Accept: {PROTOBUF}"],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "tracekit: --header: Accept is set by tracekit itself\n"
