"""``tracekit diff --service S --a K=V --b K=V``: two versions over 200 requests each.

Ground truth, built through real SDK providers into a real store (``sdk_requests``): version 2 of
fulfilment adds a cache call before inventory and its pricing backend (also version 2) is 1.3
times slower; every span's duration is jittered (log-normal, sigma 0.15, seeded). One request in
20 also calls a fraud check, in both versions: too rare to compare its timings. Version 1 runs on
two hosts, alternately: the halves are two samples of one version.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from checkout import Shape, build
from click.testing import CliRunner
from sdk_requests import Deployment, api_entry

from tracekit.diff import load_schema
from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

PER_VERSION = 200
CACHE = "fulfilment -> cache: GET /cache/{key}"
PRICING = "fulfilment -> pricing: GET /price/{sku}"
FRAUD = "fulfilment -> fraud: POST /check"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("sets") / "tracekit.db"
    rng = random.Random(16)
    with Store(path) as store:
        deployment = Deployment(store)
        for i in range(PER_VERSION * 2):
            v2 = i % 2 == 1  # interleaved, as a canary's traffic is
            version = "2" if v2 else "1"
            versions = {"fulfilment": version, "pricing": version}
            hosts = {"fulfilment": "fulfilment-v2" if v2 else f"fulfilment-{i // 2 % 2 + 1}"}
            req = deployment.request(versions=versions, hosts=hosts)
            shape = Shape(jitter=rng, cache_ms=4.0 if v2 else None,
                          pricing_ms=65.0 if v2 else 50.0)  # fmt: skip
            build(req, shape)
            if i % 80 < 4:  # one request in 20 of each version, on both of v1's hosts
                fulfilment = next(s for s in req.spans if s.name == "process orders.created")
                start = (fulfilment.start_time or 0) - req.origin_ns
                # (lag 0.1: the server span ends after it starts, inside a 0.6 ms call)
                req.call(fulfilment, "fraud", "/check", start / 1e6 + 0.2, start / 1e6 + 0.8,
                         method="POST", lag=0.1)  # fmt: skip
        deployment.shutdown()
    yield path


def diff(
    store_path: Path, *args: str, service: str = "fulfilment"
) -> tuple[int, dict[str, Any] | str, str]:
    result = CliRunner().invoke(
        cli, ["diff", "--service", service, *args, "--store", str(store_path)],
        env={"COLUMNS": "120", "FORCE_COLOR": "1"},  # the rich view is checked in colour
    )  # fmt: skip
    out: dict[str, Any] | str = result.stdout
    if "--format" in args and args[args.index("--format") + 1] == "json" and result.stdout:
        out = json.loads(result.stdout)
        jsonschema.validate(out, load_schema())
    return result.exit_code, out, result.stderr


def diff_of(
    tmp_path: Path, spans: list[SpanRecord], *args: str
) -> tuple[int, dict[str, Any] | str, str]:
    """``diff`` of service api over a store of ``spans`` alone."""
    path = tmp_path / "spans.db"
    with Store(path) as store:
        store.write_spans(spans)
    return diff(path, *args, service="api")


def versions(a: str, b: str, *more: str) -> tuple[str, ...]:
    return ("--a", f"service.version={a}", "--b", f"service.version={b}", *more)


def node(doc: dict[str, Any], label: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["label"] == label)


def test_a_new_cache_call_and_a_slower_pricing_are_both_reported(store_path: Path) -> None:
    code, doc, err = diff(store_path, *versions("1", "2", "--format", "json"))
    assert isinstance(doc, dict) and err == ""

    assert code == 1 and doc["reasons"] == ["structure", "timing"]
    assert (doc["a"]["requests"], doc["b"]["requests"]) == (PER_VERSION, PER_VERSION)
    changed = {(c["kind"], c["node"]) for c in doc["changes"]}
    cache, pricing = node(doc, CACHE), node(doc, PRICING)
    assert changed == {
        ("duration", None),
        ("added", cache["id"]),
        ("timing", pricing["id"]),  # self time and critical-path time
    }
    assert cache["status"] == "added" and cache["a"] is None and cache["b"]["frequency"] == 1.0
    ratio = pricing["b"]["self_ms"] / pricing["a"]["self_ms"]
    assert 1.2 < ratio < 1.4
    assert {n["status"] for n in doc["nodes"]} - {"same"} == {"added", "changed", "too_few"}


def test_nodes_are_ranked_by_contribution_and_contributions_add_up(store_path: Path) -> None:
    _, doc, _ = diff(store_path, *versions("1", "2", "--format", "json"))
    assert isinstance(doc, dict)

    ranked = [n["label"] for n in doc["nodes"][:2]]
    assert ranked == [PRICING, CACHE]
    contributions = [abs(n["contribution_ms"]) for n in doc["nodes"]]
    assert contributions == sorted(contributions, reverse=True)
    total = sum(p["delta_ms"] for p in doc["attribution"])
    assert total == pytest.approx(doc["duration_delta_ms"], abs=0.01)
    assert doc["headline"].startswith(f"+{doc['duration_delta_ms']:.1f} ms mean (+")
    assert f"in {PRICING}" in doc["headline"] and f"in {CACHE}" in doc["headline"]


def test_a_node_too_rare_to_compare_is_too_few_to_tell(store_path: Path) -> None:
    _, doc, _ = diff(store_path, *versions("1", "2", "--format", "json"))
    assert isinstance(doc, dict)

    fraud = node(doc, FRAUD)
    assert fraud["status"] == "too_few"
    assert (fraud["a"]["requests"], fraud["b"]["requests"]) == (10, 10)
    verdicts = {t["metric"]: t["verdict"] for t in fraud["tests"]}
    too_few = ("calls", "retries", "error_rate", "self", "critical")
    assert verdicts == {"frequency": "same", **dict.fromkeys(too_few, "too_few")}
    _, text, _ = diff(store_path, *versions("1", "2", "--format", "text"))
    assert "too few to tell: 10 and 10 requests reach it (20 needed in each set)" in text
    _, doc, _ = diff(store_path, *versions("1", "2", "--format", "json", "--min-requests", "5"))
    assert isinstance(doc, dict) and node(doc, FRAUD)["status"] == "same"


def test_version_1_against_itself_reports_nothing(store_path: Path) -> None:
    code, doc, _ = diff(store_path, *versions("1", "1", "--format", "json"))
    assert isinstance(doc, dict)
    assert (code, doc["changes"], doc["different"]) == (0, [], False)


def test_two_halves_of_version_1_report_nothing(store_path: Path) -> None:
    """Independent samples of one version (two hosts): every test corrected together."""
    code, doc, _ = diff(store_path, "--a", "host.name=fulfilment-1", "--b",
                        "host.name=fulfilment-2", "--format", "json")  # fmt: skip
    assert isinstance(doc, dict)
    assert (doc["a"]["requests"], doc["b"]["requests"]) == (100, 100)
    assert (code, doc["changes"]) == (0, [])
    assert "not a significant change in duration" in doc["headline"]


def test_too_few_requests_in_a_set_is_too_few_to_tell(store_path: Path) -> None:
    code, doc, _ = diff(store_path, *versions("1", "2", "--format", "json",
                                              "--min-requests", "201"))  # fmt: skip
    assert isinstance(doc, dict)

    assert code == 0 and doc["changes"] == []
    assert doc["headline"].startswith("too few requests to tell")
    assert doc["warnings"][0].startswith(
        "set A (service.version=1) has 200 requests, fewer than the 201 needed"
    )


def test_too_few_requests_to_tell_is_not_called_no_difference(store_path: Path) -> None:
    """Exit 0 (nothing found that counts, as the contract's codes allow), but the result line
    does not claim the sets alike when nothing could be tested."""
    code, out, _ = diff(store_path, *versions("1", "2", "--format", "text",
                                              "--min-requests", "201"))  # fmt: skip

    assert code == 0
    assert isinstance(out, str)
    assert out.rstrip().splitlines()[-1] == (
        "result: too few requests to tell (--min-requests 201): exit 0"
    )


def test_route_and_not_found(store_path: Path) -> None:
    code, doc, _ = diff(store_path, *versions("1", "2", "--route", "orders.created",
                                              "--format", "json"))  # fmt: skip
    assert code == 1 and isinstance(doc, dict) and doc["b"]["requests"] == PER_VERSION
    code, out, err = diff(store_path, *versions("1", "2", "--route", "/nowhere"))
    assert (code, out) == (3, "")
    assert err.startswith("tracekit: no requests of 'fulfilment' with '1 /nowhere'") or (
        "no requests of 'fulfilment'" in err
    )
    code, _, err = diff(store_path, *versions("1", "9"))
    assert code == 3 and len(err.splitlines()) == 1


def test_a_route_with_no_requests_is_named_as_a_route(store_path: Path) -> None:
    """The route ran on from the attribute: "with 'service.version=1 /nowhere'" read as one
    value with a space in it."""
    code, out, err = diff(store_path, *versions("1", "2", "--route", "/nowhere"))

    assert (code, out) == (3, "")
    assert err == (
        "tracekit: no requests of 'fulfilment' with 'service.version=1' on route '/nowhere'"
        " since '1h' (set A)\n"
    )


@pytest.mark.parametrize("route", ["", " "])
def test_an_empty_route_is_a_usage_error(store_path: Path, route: str) -> None:
    """``--route "$ROUTE"`` with the variable unset selected no request: exit 3, "no requests
    of 'fulfilment' with 'service.version=1' since '1h' (set A)", naming no route, where
    version 1 has 200; it is refused, exit 2, naming the option."""
    code, out, err = diff(store_path, *versions("1", "2", "--route", route))

    assert (code, out) == (2, "")
    assert "Invalid value for '--route'" in err


def test_a_route_typed_with_white_space_around_it_is_the_route(store_path: Path) -> None:
    """``--route "$(cat route.txt)"`` keeps no newline, but a value from an env file does: the
    route was found nowhere (exit 3)."""
    args = versions("1", "2", "--route", " orders.created\n", "--format", "json")
    code, doc, _ = diff(store_path, *args)

    assert code == 1 and isinstance(doc, dict) and doc["b"]["requests"] == PER_VERSION


@pytest.mark.parametrize(
    "args",
    [
        ("--a", "service.version"),  # no value
        ("--a", "service.version=1"),  # no --b
        ("--a", "service.version=1", "--b", "service.version=2", "req-1", "req-2"),
        ("--a", "service.version=1", "--b", "service.version=2", "--since", "yesterday"),
    ],
)
def test_set_form_usage_errors(store_path: Path, args: tuple[str, ...]) -> None:
    code, out, err = diff(store_path, *args)
    assert code == 2 and out == "" and "Traceback" not in err


def test_a_limit_below_min_requests_is_a_usage_error(store_path: Path) -> None:
    """--limit 10 keeps at most 10 requests a set: with --min-requests 20 nothing could ever
    be tested, whatever the store holds (version 1 and 2 have 200 each)."""
    code, out, err = diff(store_path, *versions("1", "2", "--limit", "10"))
    assert (code, out) == (2, "")
    assert err == ("tracekit: --limit 10 is below --min-requests 20: no set could be tested "
                   "(raise --limit or lower --min-requests)\n")  # fmt: skip


def test_set_views(store_path: Path) -> None:
    code, text, _ = diff(store_path, *versions("1", "2", "--format", "text"))
    assert isinstance(text, str) and code == 1
    lines = text.splitlines()
    assert lines[0].startswith("A service.version=1  200 requests, mean ")
    assert lines[2].startswith("+") and " ms mean (+" in lines[2]
    added = next(line for line in lines[3:] if line.endswith(CACHE))  # after the headline
    assert added.startswith("+ ") and max(len(line) for line in lines) <= 120
    assert "in requests 0% -> 100%" in text
    assert "result: different (structure, timing): exit 1" in text
    code, rich, _ = diff(store_path, *versions("1", "2", "--format", "rich"))
    assert isinstance(rich, str) and "\x1b[32m" in rich and "fulfilment → cache" in rich
    again = diff(store_path, *versions("1", "2", "--format", "json"))
    assert again == diff(store_path, *versions("1", "2", "--format", "json"))


def test_a_busy_window_compares_its_newest_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the spans read per window (200,000; 60 here), the newest are compared, as the docs
    and ``services`` say: the oldest were read, and a version deployed in the last minutes was
    "not found" (exit 3) behind an hour of the old one."""
    monkeypatch.setattr("tracekit.diff.select.MAX_SPANS", 60)
    now = time.time_ns()

    def request(n: int, version: str, ago_s: float) -> SpanRecord:
        cid = {"correlation.id": f"req-{n}"}
        return api_entry(n, now - int(ago_s * 1e9), attributes=cid, service_version=version)

    old = [request(n, "1.4", 3000 - n) for n in range(100)]
    recent = [request(100 + n, "1.4" if n % 2 else "1.5", 60 - n) for n in range(40)]
    code, out, err = diff_of(tmp_path, old + recent, *versions("1.4", "1.5"), "--format", "json")
    assert code == 0, err
    assert isinstance(out, dict) and out["b"]["requests"] == 20
    assert "newest 60 spans" in err  # and says so


def test_a_boolean_or_number_attribute_is_selected_as_json_writes_it(tmp_path: Path) -> None:
    """A feature flag set with ``span.set_attribute("feature.new_checkout", True)``: the user
    types ``=true``, as tracekit shows it everywhere; it matched only Python's ``True``."""
    now = time.time_ns() - 60 * 10**9

    def request(n: int) -> SpanRecord:
        flags = {"feature.new_checkout": n % 2 == 1, "retry.limit": 3}
        return api_entry(n, now + n * 10**7, 30 if n % 2 else 20, attributes=flags)

    spans = [request(n) for n in range(40)]
    code, out, err = diff_of(
        tmp_path,
        spans,
        "--a",
        "feature.new_checkout=false",
        "--b",
        "feature.new_checkout=true",
        "--a",
        "retry.limit=3",
        "--b",
        "retry.limit=3",
        "--format",
        "json",
    )

    assert (code, err) == (1, "")
    assert isinstance(out, dict) and (out["a"]["requests"], out["b"]["requests"]) == (20, 20)


def test_requests_that_share_a_correlation_id_are_compared_one_by_one(tmp_path: Path) -> None:
    """Clients retry with the same X-Correlation-ID: each attempt is a trace of its own. Keyed by
    correlation ID, version 1.5's retried requests were joined into one "request" of both
    attempts and the wait between them (70 ms for two 20 ms calls: a slowdown that never
    happened), and a request retried on the other version was left out of both sets."""
    now = time.time_ns() - 60 * 10**9

    def attempt(n: int, version: str, cid: str, later_ms: int = 0) -> SpanRecord:
        start = now + (n % 100) * 10**8 + later_ms * 10**6
        return api_entry(n, start, attributes={"correlation.id": cid}, service_version=version)

    spans = []
    for n in range(20):
        spans += [attempt(n, "1.4", f"req-a{n}"), attempt(100 + n, "1.5", f"req-b{n}"),
                  attempt(200 + n, "1.5", f"req-b{n}", later_ms=50)]  # fmt: skip
    for n in range(5):  # retried on the other version; first tried on a version neither set has
        spans += [attempt(300 + n, "1.4", f"req-c{n}"), attempt(400 + n, "1.5", f"req-c{n}", 50)]
        spans += [attempt(500 + n, "1.3", f"req-d{n}"), attempt(600 + n, "1.5", f"req-d{n}", 50)]
    code, out, err = diff_of(tmp_path, spans, *versions("1.4", "1.5"), "--format", "json")

    assert (code, err) == (0, "")
    assert isinstance(out, dict) and (out["a"]["requests"], out["b"]["requests"]) == (25, 50)
    assert out["a"]["mean_duration_ms"] == out["b"]["mean_duration_ms"] == 20.0


def test_retries_through_a_service_that_does_not_stamp_the_correlation_id(tmp_path: Path) -> None:
    """The service compared runs an SDK without tracekit: its spans carry no correlation ID, its
    caller's do. Keyed by trace ID, each attempt was reconstructed by its caller's correlation
    ID, so a client's retries were still joined into one request (exit 1, 72 ms for 22 ms)."""
    now = time.time_ns() - 60 * 10**9

    def attempt(n: int, version: str, cid: str, later_ms: int = 0) -> list[SpanRecord]:
        start = now + (n % 100) * 10**8 + later_ms * 10**6
        cids = {"correlation.id": cid}
        edge = SpanRecord(f"{n + 1:032x}", f"{n + 1:016x}", None, "edge", "GET", "CLIENT",
                          start, start + 22 * 10**6, attributes=cids)  # fmt: skip
        served = api_entry(n, start + 10**6, service_version=version)
        served.span_id, served.parent_span_id = f"{n + 1:08x}{n + 1:08x}", edge.span_id
        return [edge, served]

    spans = []
    for n in range(20):
        spans += attempt(n, "1.4", f"req-a{n}") + attempt(100 + n, "1.5", f"req-b{n}")
        spans += attempt(200 + n, "1.5", f"req-b{n}", later_ms=50)
    code, out, err = diff_of(tmp_path, spans, *versions("1.4", "1.5"), "--format", "json")

    assert (code, err) == (0, "")
    assert isinstance(out, dict) and (out["a"]["requests"], out["b"]["requests"]) == (20, 40)
    assert out["a"]["mean_duration_ms"] == out["b"]["mean_duration_ms"] == 22.0


def test_a_significant_change_below_the_thresholds_is_not_called_insignificant(
    tmp_path: Path,
) -> None:
    """Version 2 is 1 ms slower in every one of its 20 requests: clearly a change (p far below
    0.05), but below --min-delta-ms 5. The headline says that, not that it is insignificant."""
    now = time.time_ns() - 60 * 10**9
    spans = [api_entry(n, now + n * 10**7, 100 + n % 2, service_version=str(1 + n % 2))
             for n in range(40)]  # fmt: skip
    code, out, err = diff_of(tmp_path, spans, *versions("1", "2"), "--format", "json")

    assert (code, err) == (0, "")
    assert isinstance(out, dict) and out["duration_test"]["p_adjusted"] < 0.05
    assert out["headline"] == (
        f"+1.0 ms mean (+1%): no timing difference above 5 ms and 10% "
        f"(p={out['duration_test']['p_adjusted']:.2g} after correction)"
    )


def test_a_set_of_one_request_is_said_in_the_singular(tmp_path: Path) -> None:
    now = time.time_ns() - 60 * 10**9
    spans = [api_entry(n, now + n * 10**7, 20, service_version="1" if n else "2")
             for n in range(3)]  # fmt: skip
    _, out, _ = diff_of(tmp_path, spans, *versions("1", "2"), "--format", "text")

    assert isinstance(out, str)
    lines = out.splitlines()
    assert lines[:2] == [
        "A service.version=1  2 requests, mean 20.0 ms, median 20.0 ms",
        "B service.version=2  1 request, mean 20.0 ms, median 20.0 ms",
    ]


def test_a_version_stored_with_a_newline_is_the_version_typed(tmp_path: Path) -> None:
    """Another SDK that reads its version from a VERSION file sends "2\n" (a resource's
    ``service.version`` too). As found in review: ``--b service.version=2`` (a typed value is
    stripped) found no request of B, exit 3, the version's 20 requests 10 ms slower unseen."""
    now = time.time_ns() - 60 * 10**9

    def request(n: int) -> SpanRecord:
        version = "2\n" if n % 2 else "1"
        return api_entry(n, now + n * 10**7, 30 if n % 2 else 20, service_version=version,
                         resource={"service.name": "api", "service.version": version})  # fmt: skip

    code, out, err = diff_of(tmp_path, [request(n) for n in range(40)], *versions("1", "2"),
                             "--format", "json")  # fmt: skip

    assert (code, err) == (1, "")
    assert isinstance(out, dict) and (out["a"]["requests"], out["b"]["requests"]) == (20, 20)
    assert out["reasons"] == ["timing"]


def test_a_change_under_one_percent_keeps_its_sign_and_size(tmp_path: Path) -> None:
    """Version 2 is 0.3 ms faster on 100 ms: "(-0.3%)" beside "-0.3 ms", not "(-0%)"."""
    now = time.time_ns() - 60 * 10**9
    spans = [api_entry(n, now + n * 10**7, 100 - 0.3 * (n % 2), service_version=str(1 + n % 2))
             for n in range(40)]  # fmt: skip
    _, out, _ = diff_of(tmp_path, spans, *versions("1", "2"), "--format", "json")

    assert isinstance(out, dict) and out["headline"].startswith("-0.3 ms mean (-0.3%): ")


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_the_column_header_is_whole_on_a_narrow_terminal(store_path: Path, fmt: str) -> None:
    """At 60 columns the set view's header read 'node (ranked by contribution to the change i',
    cut without a sign; it wraps now, as the view's other prose does."""
    result = CliRunner().invoke(
        cli, ["diff", "--service", "fulfilment", *versions("1", "2", "--format", fmt),
              "--store", str(store_path)], env={"COLUMNS": "60", "NO_COLOR": "1"},
    )  # fmt: skip

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 60
    at = next(i for i, line in enumerate(lines) if line.startswith("  contribution  node"))
    said = " ".join(" ".join(lines[at : at + 2]).split())
    assert said.startswith(
        "contribution node (ranked by contribution to the change in mean duration)"
    ), lines[at : at + 2]


def _store_retrying_version(path: Path) -> None:
    """30 requests of gateway 1.4 calling inventory once, and 30 of 1.5 retrying it once after
    a 503."""
    with Store(path) as store:
        deployment = Deployment(store)
        for version, statuses in (("1.4", (200,)), ("1.5", (503, 200))):
            for _ in range(30):
                req = deployment.request(versions={"gateway": version})
                gateway = req.entry("gateway", "/checkout", 0, 120)
                for attempt, status in enumerate(statuses):
                    req.call(gateway, "inventory", "/stock/{sku}", 5 + 4 * attempt,
                             8 + 4 * attempt if status >= 500 else 100, status=status)  # fmt: skip
        deployment.shutdown()


def test_a_version_that_retries_every_call_fails_fail_on_retries(tmp_path: Path) -> None:
    """Every request of 1.5 retries inventory after a 503 (30 requests a version): --fail-on
    retries gates on it, as in the pair form (it said 'no difference that counts', exit 0)."""
    _store_retrying_version(tmp_path / "retries.db")

    args = versions("1.4", "1.5", "--format", "json", "--fail-on", "retries")
    code, doc, _ = diff(tmp_path / "retries.db", *args, service="gateway")

    assert isinstance(doc, dict)
    assert (code, doc["reasons"]) == (1, ["retries"])
    stock = node(doc, "gateway -> inventory: GET /stock/{sku}")
    retried = next(t for t in stock["tests"] if t["metric"] == "retries")
    assert (retried["a"], retried["b"], retried["verdict"]) == (0.0, 1.0, "changed")
    assert "gateway -> inventory: GET /stock/{sku}: 0.00 -> 1.00 retries per request" in [
        c["message"].split(" (p=")[0] for c in doc["changes"] if c["kind"] == "retries"
    ]


def test_fail_on_a_kind_the_set_form_never_reports_is_said(store_path: Path) -> None:
    """--fail-on order (or resources) in the set form can never fail: it gated on nothing
    without a word; one line on stderr now says so, and the exit status is as before."""
    code, _, err = diff(store_path, *versions("1", "2", "--format", "json", "--fail-on", "order"))

    assert code == 0
    assert err == (
        "tracekit: warning: --fail-on order: the set form reports no such change (it reports"
        " structure, retries, errors, timing, slower); that part never fails\n"
    )
    assert diff(store_path, *versions("1", "2", "--format", "json", "--fail-on", "errors"))[2] == ""


def test_retries_alone_are_no_change_in_calls_per_request(tmp_path: Path) -> None:
    """Every request of 1.5 retries inventory once after a 503: one more attempt, not one more
    call the code made, as the pair form counts it ('1 retry', calls unchanged). It read
    '1.00 -> 2.00 calls per request' too, and --fail-on structure failed (exit 1)."""
    _store_retrying_version(tmp_path / "retries.db")

    args = versions("1.4", "1.5", "--format", "json", "--fail-on", "structure")
    code, doc, _ = diff(tmp_path / "retries.db", *args, service="gateway")

    assert isinstance(doc, dict)
    assert (code, doc["reasons"]) == (0, [])  # was 1, ['structure']: 1.00 -> 2.00 calls
    stock = node(doc, "gateway -> inventory: GET /stock/{sku}")
    tests = {t["metric"]: (t["a"], t["b"], t["verdict"]) for t in stock["tests"]}
    assert tests["calls"] == (1.0, 1.0, "same")
    assert tests["retries"] == (0.0, 1.0, "changed")
