"""One Tempo search hit that no encoder writes (a trace id that is not hex, a duration that is no
number, service stats that are no map) is left out with one warning; the other hits are listed.
Before, the whole search failed: ``tracekit search --tempo`` exited 2 with "unreadable search
answer from Tempo (ValueError)", and ``trace`` found nothing by correlation ID. An answer whose
``traces`` is no list was read as no traces at all: "no requests match" (exit 1).

A real server on loopback answers as Tempo does, with one such hit among good ones.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from go_answers import json_answer
from otlp_fixtures import recent, tempo_search_hit
from trace_topologies import checkout
from tracekit_process import tracekit
from werkzeug.wrappers import Request, Response

from tracekit.backends._tempo_search import HIT_UNREADABLE, read_hits
from tracekit.records import BackendError
from tracekit_cli.main import cli

GOOD = recent(checkout().spans)
GOOD_HIT = tempo_search_hit(GOOD, GOOD[:1], selected=("correlation.id",))
UNREADABLE_HITS = {
    "trace id not hex": {**GOOD_HIT, "traceID": "\x1b[31mEVIL"},
    "trace id of 33 digits": {**GOOD_HIT, "traceID": "1" * 33},
    "duration not a number": {**GOOD_HIT, "durationMs": "slow"},
    "service stats a list": {**GOOD_HIT, "serviceStats": ["web"]},
    "span sets a string": {**GOOD_HIT, "spanSets": "\x1b[31mEVIL"},
    "start an object": {**GOOD_HIT, "startTimeUnixNano": {"at": 1}},
}


@pytest.mark.parametrize("case", sorted(UNREADABLE_HITS))
def test_an_unreadable_hit_is_left_out_and_said(case: str) -> None:
    told: list[str] = []
    hits = read_hits({"traces": [UNREADABLE_HITS[case], GOOD_HIT]}, told.append)
    assert [(h.trace_id, h.correlation_id) for h in hits] == [(GOOD[0].trace_id, "req-checkout-1")]
    assert told == [HIT_UNREADABLE]


@pytest.mark.parametrize(
    "answer",
    [{"traces": [UNREADABLE_HITS["trace id not hex"]]}, {"traces": {"0": GOOD_HIT}},
     {"traces": "\x1b[31mEVIL"}],
)  # fmt: skip
def test_an_answer_with_nothing_readable_is_a_backend_error(answer: Any) -> None:
    with pytest.raises(BackendError, match=r"^unreadable search answer from Tempo ") as caught:
        read_hits(answer)
    assert "\x1b" not in str(caught.value)


@pytest.mark.parametrize("command", [["search"], ["services"], ["trace", "req-checkout-1"]])
def test_a_search_answer_that_is_no_json_object_is_a_backend_error(
    serve: Any, command: list[str]
) -> None:
    """``--tempo`` pointed at Grafana (with a Grafana token in ``--header``): its own
    ``/api/search`` lists dashboards, a JSON array, and ``search`` said "no requests match"
    (exit 1), ``trace`` "no request found", as if Tempo held nothing."""

    def grafana(request: Request) -> Response:
        return json_answer([{"id": 1, "uid": "tk-overview", "title": "Service overview"}])

    url = serve(grafana).url
    done = tracekit(*command, "--tempo", url, "--timeout", "5")

    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (
        "tracekit: unreadable search answer from Tempo (not a JSON object: is the URL Tempo's "
        "API?)\n"
    )


def test_search_lists_the_other_hits_and_warns_once(serve: Any) -> None:
    def tempo(request: Request) -> Response:
        return json_answer({"traces": [UNREADABLE_HITS["trace id not hex"], GOOD_HIT]})

    url = serve(tempo).url
    result = CliRunner().invoke(
        cli, ["search", "--tempo", url, "--format", "json"],
        env={"COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["requests"]
    assert [(r["correlation_id"], r["trace_id"]) for r in rows] == [
        ("req-checkout-1", GOOD[0].trace_id)
    ]
    assert result.stderr == (
        f"tracekit: warning: Tempo at {url} answered {HIT_UNREADABLE}: it is left out\n"
    )


def test_a_search_answer_over_the_limit_asked_is_read_only_to_that_limit(serve: Any) -> None:
    """Tempo answers at most ``limit`` hits; a server answering more (one that ignores the
    parameter) had every one of them read: ``search --limit 1`` read the traces of all 50
    hits, one request each, where it asks for 2."""
    hits = [
        {**GOOD_HIT, "traceID": f"{n:x}", "startTimeUnixNano": str(GOOD[0].start_unix_nano + n),
         "spanSet": {}, "spanSets": []}
        for n in range(1, 51)
    ]  # fmt: skip
    read: list[str] = []

    def tempo(request: Request) -> Response:
        if request.path.startswith("/api/v2/traces/"):
            read.append(request.path)
            return json_answer({"trace": {}})
        return json_answer({"traces": hits})

    url = serve(tempo).url
    result = CliRunner().invoke(
        cli, ["search", "--tempo", url, "--limit", "1", "--format", "json"],
        env={"COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    assert [r["trace_id"] for r in json.loads(result.stdout)["requests"]] == [f"{2:032x}"]
    assert read == [f"/api/v2/traces/{n:032x}" for n in (1, 2)]
