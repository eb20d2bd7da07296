"""Tempo's reason for answering a trace only in part (``"status": "PARTIAL"``, ``"message"``) is
said in the path's warnings as one printable line, bounded. Before, it went in as sent: a
terminal escape, line breaks and all (``\\u001b[31m`` in ``--format json``), a non-string as
Python's ``str()`` of it. A real server on loopback answers as Tempo's v2 endpoint does.
"""

from __future__ import annotations

from typing import Any

import pytest
from go_answers import json_answer
from otlp_fixtures import recent, tempo_v2
from trace_topologies import checkout
from werkzeug.wrappers import Request, Response

from tracekit.backends.tempo import TempoSource
from tracekit.path import reconstruct

SPANS = recent(checkout().spans)


def partial(message: Any) -> Any:
    def tempo(request: Request) -> Response:
        if request.path.startswith("/api/v2/traces/"):
            return json_answer({**tempo_v2(SPANS), "status": "PARTIAL", "message": message})
        return json_answer({"traces": []})

    return tempo


@pytest.mark.parametrize(
    ("message", "said"),
    [("Trace exceeds\n\x1b[31mmaximum size\x07" + "!" * 500, "Trace exceeds maximum size"),
     ({"reason": "\x1b]0;title\x07"}, "no reason given"), ("", "no reason given")],
    ids=["escapes and newlines", "an object", "empty"],
)  # fmt: skip
def test_the_reason_is_one_printable_bounded_line(serve: Any, message: Any, said: str) -> None:
    path = reconstruct(TempoSource(serve(partial(message)).url), SPANS[0].trace_id)
    assert path is not None
    (warning,) = [w for w in path.warnings if "only in part" in w]
    prefix = f"Tempo returned trace {SPANS[0].trace_id} only in part: "
    assert warning.startswith(prefix + said)
    assert warning.isprintable() and len(warning) <= len(prefix) + 200
