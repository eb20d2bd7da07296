"""Answers that are not HTTP or not JSON, from a real server on loopback: one backend error (exit 2
and one line from the CLI), never a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from tracekit_process import tracekit

from tracekit.backends.jaeger import JaegerSource
from tracekit.backends.tempo import TempoSource
from tracekit.records import BackendError

DEEP = b"[" * 100_000 + b"]" * 100_000  # valid JSON, nested past any recursion limit


def answer(head: bytes, body: bytes) -> bytes:
    return head + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


BROKEN = {
    "status line not HTTP": (b"garbage\r\n\r\n", "sent a broken HTTP answer (BadStatusLine)"),
    "chunked body cut short": (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{"traces": [',
        "sent a broken HTTP answer (IncompleteRead)",
    ),
    "error body cut short": (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n40\r\noops",
        "answered HTTP 500",
    ),
    "JSON nested too deep": (answer(b"HTTP/1.1 200 OK", DEEP), "answered something not JSON"),
    # a Content-Length body cut short, and an empty one, read as "nothing found" (exit 1)
    "body cut short": (
        b'HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n{"services": []}',
        "sent a broken HTTP answer (cut short)",
    ),
    "empty body": (answer(b"HTTP/1.1 200 OK", b""), "answered something not JSON"),
    # "²" (latin-1 0xB2) is a digit to str.isdigit, not to float: an "internal error" it was
    "Retry-After not a number": (
        answer(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: \xb2", b"{}"),
        ": HTTP 503",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("source", [TempoSource, JaegerSource])
def test_a_broken_answer_is_one_backend_error(serve_raw: Any, source: Any, case: str) -> None:
    raw, says = BROKEN[case]
    backend = serve_raw(raw)
    with pytest.raises(BackendError) as caught:
        source(backend.url, retries=0).spans_by_trace_ids(["a" * 32])
    assert says in str(caught.value) and backend.url in str(caught.value)


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("command", [["trace", "a" * 32], ["search"], ["services"]])
@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
def test_the_cli_says_one_line_and_exits_2(
    serve_raw: Any, backend: str, command: list[str], case: str
) -> None:
    raw, says = BROKEN[case]
    url = serve_raw(raw).url
    done = tracekit(*command, backend, url, "--timeout", "5")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr[-800:]
    assert done.stderr.startswith("tracekit: ") and done.stderr.count("\n") == 1
    assert says in done.stderr
