"""An answer of up to 64 MiB of JSON is read whole, and as Python objects it takes several times
that: on a machine (or a container) with less memory to spare, one large trace ended the command
with "internal error (MemoryError)", and the request's other traces were not shown. Now that
trace is left out and said, as a trace Tempo refuses is. ``tracekit`` runs in a process of its
own whose address space is bounded; no Tempo can run here, so ``tempo_fake`` answers as it does.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import time
from typing import Any

from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import Topology
from tracekit_process import TRACEKIT
from werkzeug.wrappers import Request, Response

MEMORY_BYTES = 400 * 2**20  # room for the command and a small trace, not for 60 MiB of JSON
HUGE_SPANS = 250_000  # about 58 MiB of JSON, under the 64 MiB an answer may hold


def huge_trace_answer(trace_id: str) -> bytes:
    """``/api/v2/traces/<id>`` for a trace of ``HUGE_SPANS`` spans, as Tempo encodes it."""
    now, encoded_trace = time.time_ns() - 60 * 10**9, base64.b64encode(bytes.fromhex(trace_id))
    spans = ",".join(
        f'{{"traceId":"{encoded_trace.decode()}","spanId":"'
        f'{base64.b64encode(n.to_bytes(8, "big")).decode()}","name":"step",'
        f'"kind":"SPAN_KIND_INTERNAL","startTimeUnixNano":"{now + n}",'
        f'"endTimeUnixNano":"{now + n + 1}","attributes":[{{"key":"k","value":'
        '{"stringValue":"v"}}]}'
        for n in range(1, HUGE_SPANS + 1)
    )
    resource_spans = (
        '{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"big"}}]},'
        f'"scopeSpans":[{{"spans":[{spans}]}}]}}'
    )
    return f'{{"trace":{{"resourceSpans":[{resource_spans}]}}}}'.encode()


def within_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def test_a_trace_too_large_for_memory_is_left_out_not_the_request(serve: Any) -> None:
    t = Topology("req-huge")
    t.span("web", "POST /jobs", "SERVER", 0, 50)
    t.new_trace()
    t.span("worker", "job", "CONSUMER", 100, 200)
    spans = recent(t.spans)
    huge_id = spans[1].trace_id
    tempo, huge = FakeTempo(spans), huge_trace_answer(huge_id)

    def answer(request: Request) -> Response:
        if request.path == f"/api/v2/traces/{huge_id}":
            return Response(huge, content_type="application/json")
        return tempo(request)

    url = serve(answer).url
    done = subprocess.run(
        [TRACEKIT, "trace", "req-huge", "--tempo", url, "--format", "json", "--timeout", "60"],
        capture_output=True, text=True, timeout=120, preexec_fn=within_memory,
        env={**os.environ, "TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip

    said = (
        f"Tempo at {url} answered trace {huge_id} with {len(huge) // 2**20} MiB of JSON, more "
        "than there is memory to read: it is left out"
    )
    assert (done.returncode, done.stderr) == (0, "")
    path = json.loads(done.stdout)
    assert [s["name"] for s in path["spans"]] == ["POST /jobs"]
    assert said in path["warnings"]
