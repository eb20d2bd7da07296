"""`tracekit canary --prometheus` on answers a real Prometheus gives but a test run cannot make it
give: ``increase()`` extrapolated past the request count, and the counts of a busy week.

A small HTTP server on loopback answers ``/api/v1/query`` with instant vectors in Prometheus' own
JSON format (the shape tests/canary/test_prometheus.py gets from the real binary), chosen by the
query's version and whether it asks for buckets or failed requests.
"""

from __future__ import annotations

import http.server
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from loopback import serve_in_thread

from tracekit_cli.main import cli

BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")
Answer = Callable[[str, bool], list[tuple[dict[str, str], float]]]


def vector(series: list[tuple[dict[str, str], float]]) -> dict[str, Any]:
    result = [
        {"metric": labels, "value": [1_700_000_000.0, repr(value)]} for labels, value in series
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def answering() -> Iterator[Callable[..., str]]:
    """Serve ``/api/v1/query`` with the JSON body a function gives for each query; with a
    ``tenant``, as a multi-tenant API (Mimir, Cortex): 401 without ``X-Scope-OrgID: tenant``."""
    stops: list[Callable[[], None]] = []

    def serve(respond: Callable[[str], dict[str, Any]], tenant: str | None = None) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)["query"][0]
                if tenant is not None and self.headers.get("X-Scope-OrgID") != tenant:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(respond(query)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        stops.append(serve_in_thread(server))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for stop in stops:
        stop()


@pytest.fixture
def prometheus(
    answering: Callable[..., str],
) -> Callable[[Answer], str]:
    """Serve the series ``answer`` gives per version and query (buckets or failed requests)."""

    def serve(answer: Answer) -> str:
        def respond(query: str) -> dict[str, Any]:
            version = "2.0" if 'service_version="2.0"' in query else "1.0"
            # nothing for the "born in the window" queries: every series existed before it
            skip = "messaging" in query or " unless " in query
            return vector([] if skip else answer(version, "_bucket" in query))

        return answering(respond)

    return serve


def buckets(route: str, cumulative: list[float]) -> list[tuple[dict[str, str], float]]:
    return [({"http_route": route, "le": le}, n) for le, n in zip(BOUNDS, cumulative, strict=True)]


def canary(url: str) -> tuple[int, dict[str, Any], str]:
    args = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "2.0",
            "--prometheus", url, "--format", "json"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    document = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    return result.exit_code, document, result.stderr


def test_an_all_failing_route_is_every_request_failed_however_extrapolated(
    prometheus: Callable[[Answer], str],
) -> None:
    """An all-failing route has no series of succeeded requests: its failed count, extrapolated
    by ``increase()`` (411.4 for 400 served), is all of its requests, none of them timed. The
    baseline failing them all too, the canary is no worse: no baseline latency to compare with
    (as for a new endpoint), the error rates alone decide."""

    def answer(version: str, bucket_query: bool) -> list[tuple[dict[str, str], float]]:
        if bucket_query:
            return []
        return [({"http_route": "/pay"}, 400.0 if version == "1.0" else 411.4)]

    code, document, stderr = canary(prometheus(answer))

    assert (code, stderr) == (0, ""), stderr
    (errors,) = document["metrics"]
    assert (errors["name"], errors["class"]) == ("error_rate", "pass")
    summary = errors["summary"]
    assert (summary["baseline"]["requests"], summary["canary"]["requests"]) == (400, 411)
    assert (summary["baseline"]["error_rate"], summary["canary"]["error_rate"]) == (1.0, 1.0)
    assert document["warnings"] == [
        "route '/pay': none of version 1.0's 400 requests succeeded; only its errors are compared"
    ]


def test_a_busy_week_of_requests_is_judged_not_expanded_one_by_one(
    prometheus: Callable[[Answer], str],
) -> None:
    """10^11 requests (a busy route over 7 days, and more) must not need one float each."""

    def answer(version: str, bucket_query: bool) -> list[tuple[dict[str, str], float]]:
        # the canary's slowest tenth takes 0.5-1 s where the baseline's takes 0.1-0.5 s
        per = [5e10, 3e10, 9e9, 1e9, 1e10, 0] if version == "2.0" else [6e10, 3e10, 9e9, 1e9, 0, 0]
        cumulative = [sum(per[: i + 1]) for i in range(len(per))]
        if bucket_query:
            return buckets("/orders", cumulative)
        return [({"http_route": "/orders"}, 1e8)]

    code, document, stderr = canary(prometheus(answer))

    assert stderr == ""
    tail = next(m for m in document["metrics"] if m["name"] == "tail_latency")
    assert tail["class"] == "fail"
    assert code == 1 and document["verdict"] == "fail"
    errors = next(m for m in document["metrics"] if m["name"] == "error_rate")
    assert errors["summary"]["baseline"]["error_rate"] == pytest.approx(1e-3, rel=0.01)


def test_both_tails_above_the_last_bucket_do_not_pass(
    prometheus: Callable[[Answer], str],
) -> None:
    """A tenth of each version's requests took longer than the last finite bound (1 s here):
    both p95s are only known to be above it, so neither their ratio nor a slowdown is bounded."""

    def answer(version: str, bucket_query: bool) -> list[tuple[dict[str, str], float]]:
        if bucket_query:
            return buckets("/export", [0, 300, 600, 800, 900, 1000])
        return []

    code, document, stderr = canary(prometheus(answer))

    tail = next(m for m in document["metrics"] if m["name"] == "tail_latency")
    assert tail["effect"]["interval"][1] is None
    assert tail["class"] == "inconclusive"
    assert "buckets are too coarse" in tail["explanation"]
    assert tail["more_requests_needed"] is None
    assert (document["verdict"], code, stderr) == ("inconclusive", 4, "")


@pytest.mark.parametrize(
    "series",
    [
        [1, 2],  # not an object
        {"metric": [], "value": [1, "5"]},  # labels not an object
        {"metric": {"http_route": "/a", "le": "+Inf"}, "value": "5"},  # value not a pair
        {"metric": {"http_route": "/a", "le": "+Inf"}, "value": [1, "five"]},  # not a number
        {"metric": {"http_route": ["/a"], "le": "+Inf"}, "value": [1, "5"]},  # label not text
        {"metric": {"http_route": "/a"}, "value": [1, "5"]},  # a bucket without its bound
        {"metric": {"http_route": "/a", "le": "-1"}, "value": [1, "5"]},  # no duration is < 0
        {"metric": {"http_route": "/a", "le": "-Inf"}, "value": [1, "5"]},
        {"metric": {"http_route": "/a", "le": "1e308"}, "value": [1, "5"]},  # past any clock
        {"metric": {"http_route": "/a", "le": "+Inf"}, "value": [1, "NaN"]},  # no count
        {"metric": {"http_route": "/a", "le": "+Inf"}, "value": [1, "+Inf"]},
        {"metric": {"http_route": "/a", "le": "+Inf"}, "value": [1, "-5"]},
    ],
    ids=[
        "list",
        "metric-list",
        "value-string",
        "value-text",
        "label-list",
        "no-le",
        "negative-le",
        "minus-infinite-le",
        "huge-le",
        "nan-count",
        "infinite-count",
        "negative-count",
    ],
)
def test_a_malformed_answer_is_a_backend_error(answering: Callable[..., str], series: Any) -> None:
    """Not "no requests" (inconclusive), not a traceback: one line, exit 2."""

    def respond(query: str) -> dict[str, Any]:
        result = [series] if "_bucket" in query else []
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    code, document, stderr = canary(answering(respond))

    assert (code, document) == (2, {})
    assert stderr.startswith("tracekit: Prometheus answered ")
    assert stderr.count("\n") == 1


def test_a_count_of_failures_that_is_no_number_is_a_backend_error(
    answering: Callable[..., str],
) -> None:
    """``increase()`` of a counter is never NaN. As found in review: the canary's count of
    failed requests answered as NaN was read as 0, its failures unseen (0.00% errors, exit 4
    here on coarse buckets); a NaN bucket, read as 0, moved its requests into the next one (on a
    real Prometheus, a canary like its baseline read 1.41x slower, exit 1)."""

    def respond(query: str) -> dict[str, Any]:
        if " unless " in query or "messaging" in query:
            return vector([])  # every series existed before the window
        if "_bucket" in query:
            return vector(buckets("/pay", [100, 300, 360, 360, 360, 360]))
        failed = "NaN" if 'service_version="2.0"' in query else "0"
        sample = {"metric": {"http_route": "/pay"}, "value": [1_700_000_000.0, failed]}
        return {"status": "success", "data": {"resultType": "vector", "result": [sample]}}

    code, document, stderr = canary(answering(respond))

    assert (code, document) == (2, {})
    assert stderr == "tracekit: Prometheus answered 'NaN' where a count of requests belongs\n"


def test_series_without_a_route_are_the_unmatched_requests(
    prometheus: Callable[[Answer], str],
) -> None:
    """A series with no http_route label (an exporter that leaves it out when empty) is not a
    route named "": its requests matched no route, and are judged as such."""

    def answer(version: str, bucket_query: bool) -> list[tuple[dict[str, str], float]]:
        if not bucket_query:
            return [({}, 40.0)] if version == "2.0" else []
        return buckets("/orders", [100, 300, 400, 400, 400, 400]) + [
            ({"le": le}, n) for le, n in zip(BOUNDS, [100, 200, 200, 200, 200, 200], strict=True)
        ]

    code, document, stderr = canary(prometheus(answer))

    assert {m["route"] for m in document["metrics"]} == {"/orders", "_unmatched"}
    (unrouted,) = [m for m in document["metrics"] if m["route"] == "_unmatched"]
    assert unrouted["name"] == "error_rate"
    assert unrouted["summary"]["canary"]["errors"] == 40
    assert unrouted["class"] == "fail"
    assert (document["verdict"], code, stderr) == ("fail", 1, "")


@pytest.fixture
def tenant_prometheus(answering: Callable[..., str]) -> str:
    """A multi-tenant Prometheus API (Mimir, Cortex): 401 without ``X-Scope-OrgID: team-a``;
    tenant team-a's canary fails a tenth of its requests."""

    def respond(query: str) -> dict[str, Any]:
        canary_version = 'service_version="2.0"' in query
        if "messaging" in query or " unless " in query:
            series: list[tuple[dict[str, str], float]] = []
        elif "_bucket" in query:  # the succeeded requests: 40 of the canary's 400 failed
            series = buckets(
                "/pay",
                [0, 100, 400, 400, 400, 400] if not canary_version else [0, 90, 360, 360, 360, 360],
            )
        else:
            series = [({"http_route": "/pay"}, 40.0 if canary_version else 0.0)]
        return vector(series)

    return answering(respond, tenant="team-a")


@pytest.mark.parametrize(
    ("option", "env"),
    [(["--header", "X-Scope-OrgID=team-a"], {}),
     ([], {"TRACEKIT_BACKEND_HEADERS": "X-Scope-OrgID=team-a"})],
    ids=["--header", "TRACEKIT_BACKEND_HEADERS"],
)  # fmt: skip
def test_a_multi_tenant_prometheus_is_read_with_the_tenant_header(
    tenant_prometheus: str, option: list[str], env: dict[str, str]
) -> None:
    """Mimir, Cortex or Grafana Cloud answer only with a tenant or credential header."""
    args = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "2.0",
            "--prometheus", tenant_prometheus, "--format", "json", *option]  # fmt: skip
    result = CliRunner().invoke(cli, args, env={"TRACEKIT_BACKEND_HEADERS": None, **env})

    assert (result.exit_code, result.stderr) == (1, ""), result.output
    document = json.loads(result.stdout)
    assert document["verdict"] == "fail"
    assert (document["baseline"]["requests"], document["canary"]["requests"]) == (400, 400)


def test_the_tenant_header_is_refused_without_prometheus() -> None:
    args = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "2.0",
            "--header", "X-Scope-OrgID=team-a"]  # fmt: skip
    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 2
    assert result.stderr == "tracekit: --header is for a remote backend: use it with --prometheus\n"


def test_versions_a_prometheus_names_are_shown_on_one_bounded_line(
    answering: Callable[..., str],
) -> None:
    """Neither version had requests, so the verdict names the versions Prometheus found, from
    its labels: one of 100,000 characters was shown whole (a warning of 100 KB, a thousand
    lines in the text view), and one with escape sequences kept them for the terminal."""
    hostile = ["\x1b[2J\x1b]0;owned\x07", "v" * 100_000, "1.1"]

    def respond(query: str) -> dict[str, Any]:
        found = query.startswith("count by (service_version)") and "http_server" in query
        return vector([({"service_version": v}, 1.0) for v in hostile] if found else [])

    code, document, stderr = canary(answering(respond))

    assert (code, stderr) == (4, "")
    (said,) = [w for w in document["warnings"] if w.startswith("versions of orders")]
    assert len(said) < 400 and said.isprintable()
    assert "1.1" in said and "vvvv…" in said and "owned" in said
