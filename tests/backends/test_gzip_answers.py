"""Answers travel gzipped: tracekit asks for gzip (a search answer of whole traces is tens of MB
of JSON, a tenth of that gzipped) and reads it, bounded as any answer once unzipped. Before, it
sent no ``Accept-Encoding``, and a proxy that gzipped anyway got "answered something not JSON".
Real servers on loopback answer as Tempo and Jaeger do, gzipped as Go's gzip handlers do.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout
from werkzeug.wrappers import Request, Response

from tracekit.backends._http import MAX_RESPONSE_BYTES
from tracekit.backends.jaeger import JaegerSource
from tracekit.backends.tempo import TempoSource
from tracekit.records import BackendError
from tracekit_cli.main import cli


def gzipped(fake: Any) -> Any:
    """``fake``'s answers, gzipped when the request asks for gzip."""

    def handler(request: Request) -> Response:
        answer = fake(request)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            answer.set_data(gzip.compress(answer.get_data()))
            answer.headers["Content-Encoding"] = "gzip"
        return answer

    return handler


def answer(body: bytes, status: int = 200, encoding: str = "gzip") -> Any:
    return lambda request: Response(body, status, {"Content-Encoding": encoding})


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_every_request_asks_for_gzip_and_the_answers_are_read(serve: Any, fake: Any) -> None:
    backend = serve(gzipped(fake(recent(checkout().spans))))
    option = "--tempo" if fake is FakeTempo else "--jaeger"
    result = CliRunner().invoke(
        cli, ["trace", "req-checkout-1", option, backend.url, "--format", "json"],
        env={"COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout)["services"] == ["gateway", "orders", "payments", "bank"]
    assert {r.headers.get("Accept-Encoding") for r in backend.requests} == {"gzip"}


@pytest.mark.parametrize("source", [TempoSource, JaegerSource])
def test_a_gzip_bomb_is_refused_at_the_bound_of_any_answer(serve: Any, source: Any) -> None:
    """64 MiB and one byte of spaces: 64 KB gzipped."""
    bomb = gzip.compress(b" " * (MAX_RESPONSE_BYTES + 1), compresslevel=9)
    assert len(bomb) < 100_000
    url = serve(answer(bomb)).url
    with pytest.raises(BackendError, match=f"answered more than {MAX_RESPONSE_BYTES} bytes"):
        source(url, retries=0).recent_requests()


def test_a_trace_over_the_bound_is_refused_naming_it(serve: Any) -> None:
    """Tempo's answer for one trace: the error names the trace (another one of the request
    would still be shown: ``test_tempo_refused_traces``)."""
    bomb = gzip.compress(b" " * (MAX_RESPONSE_BYTES + 1), compresslevel=9)
    url = serve(answer(bomb)).url
    refusal = f"answered trace {'a' * 32} with more than {MAX_RESPONSE_BYTES} bytes"
    with pytest.raises(BackendError, match=refusal):
        TempoSource(url, retries=0).spans_by_trace_ids(["a" * 32])


@pytest.mark.parametrize(
    ("body", "encoding", "says"),
    [(gzip.compress(b'{"batches": []}')[:-12], "gzip", "sent a broken HTTP answer (gzip)"),
     (b"not gzip at all", "gzip", "sent a broken HTTP answer (gzip)"),
     (b"\x1b[31m", "br", "answered in an encoding tracekit did not ask for (br)")],
    ids=["gzip cut short", "not gzip", "brotli"],
)  # fmt: skip
def test_an_answer_it_cannot_unzip_is_one_backend_error(
    serve: Any, body: bytes, encoding: str, says: str
) -> None:
    url = serve(answer(body, encoding=encoding)).url
    with pytest.raises(BackendError) as caught:
        TempoSource(url, retries=0).spans_by_trace_ids(["a" * 32])
    assert str(caught.value) == f"Tempo at {url} {says}"


def test_a_gzipped_error_answer_is_shown_unzipped(serve: Any) -> None:
    url = serve(answer(gzip.compress(b"too many outstanding requests"), 400)).url
    with pytest.raises(BackendError) as caught:
        TempoSource(url, retries=0).spans_by_trace_ids(["a" * 32])
    assert str(caught.value) == (f"Tempo at {url} answered HTTP 400: too many outstanding requests")


def test_accept_encoding_is_not_a_header_to_set() -> None:
    """tracekit reads gzip and nothing else: another encoding asked for would be unreadable."""
    result = CliRunner().invoke(
        cli, ["search", "--tempo", "http://127.0.0.1:9", "--header", "Accept-Encoding=br"],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "tracekit: --header: Accept-Encoding is set by tracekit itself\n"
