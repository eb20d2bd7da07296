"""``tracekit diff`` of a call that began the trace (a script) and was retried, where the wall
clock stepped back (NTP) between two of its requests, as an SDK exports them: the retry starts
before the request it retried ended. The spans go into a real store; the real CLI reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

T0 = 1_796_000_000_000_000_000
MS = 1_000_000


def script_call(trace_id: str, requests: list[tuple[float, float, int]]) -> list[SpanRecord]:
    """A script's call: its first request, the resends under it; each request's server."""
    spans: list[SpanRecord] = []
    for resend, (start, end, status) in enumerate(requests):
        attributes = {"http.request.method": "GET", "url.full": "http://back/flaky",
                      "server.address": "back", "http.response.status_code": status,
                      "correlation.id": f"script-{trace_id[:4]}"}  # fmt: skip
        if resend:
            attributes["http.request.resend_count"] = resend
        client = SpanRecord(trace_id, f"{2 * resend + 1:016x}", spans[0].span_id if spans else None,
                            "script", "GET", "CLIENT", T0 + int(start * MS), T0 + int(end * MS),
                            attributes=attributes)  # fmt: skip
        server = SpanRecord(trace_id, f"{2 * resend + 2:016x}", client.span_id, "back",
                            "GET /flaky", "SERVER", client.start_unix_nano + MS // 4,
                            client.end_unix_nano - MS // 4,
                            attributes={"http.route": "/flaky", "url.path": "/flaky"})  # fmt: skip
        spans += [client, server]
    return spans


def test_a_clock_step_between_two_retries_is_no_queue_wait(tmp_path: Path) -> None:
    with Store(tmp_path / "tracekit.db") as store:
        store.write_spans(script_call("a1" * 16, [(0, 2, 200)]))
        # 503, 503 after a 48 ms backoff, then (the clock 1 ms back) 200 after 48 ms more
        store.write_spans(script_call("b2" * 16, [(0, 2, 503), (50, 52, 503), (99, 101, 200)]))
        store.write_spans(script_call("c3" * 16, [(0, 2, 503), (50, 52, 503), (51.5, 53.5, 200)]))

    def diff(b: str) -> dict[str, object]:
        result = CliRunner().invoke(
            cli, ["diff", "a1" * 16, b, "--store", str(tmp_path / "tracekit.db"), "--format",
                  "json"],
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    for stepped in (diff("b2" * 16), diff("c3" * 16)):
        parts = {part["component"] for part in stepped["attribution"]}  # type: ignore[attr-defined]
        assert parts <= {"critical", "gap"}, stepped["attribution"]  # no queue_wait
