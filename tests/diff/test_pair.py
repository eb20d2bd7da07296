"""``tracekit diff A B`` on requests with a known ground truth, read back from a real store.

Every request is built by ``checkout.build`` through real OpenTelemetry SDK providers into one
store (``sdk_requests``); the real command compares two of them, and the tests check what the
user reads: the JSON document (validated against its schema), the exit status and the views.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from checkout import Shape, build
from click.testing import CliRunner
from diff_cli import diff_document
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import Span
from sdk_requests import Deployment, Request, recent_origin

from tracekit_cli.main import cli

HOUR_NS = 3600 * 10**9
TRACEKIT = str(Path(sys.executable).with_name("tracekit"))


def pair(deployment: Deployment, a: Shape, b: Shape, **b_request: Any) -> tuple[str, str]:
    """Build request A and request B into the store; their correlation IDs."""
    first, second = deployment.request(), deployment.request(**b_request)
    build(first, a)
    build(second, b)
    deployment.flush()
    return first.correlation_id, second.correlation_id


def run(deployment: Deployment, *args: str) -> tuple[int, str, str]:
    store = str(deployment.store.path)
    result = CliRunner().invoke(
        cli, ["diff", *args, "--store", store], env={"COLUMNS": "120", "FORCE_COLOR": "1"}
    )
    return result.exit_code, result.stdout, result.stderr


def in_store(deployment: Deployment) -> str:
    """How a request not found names the store it was looked for in (the service may write
    another) and the command that lists what it holds (the ID may be mistyped)."""
    path = deployment.store.path
    return f" in the store {path} ('tracekit search' lists its newest requests)"


def document(deployment: Deployment, a: str, b: str, *options: str) -> tuple[int, dict[str, Any]]:
    return diff_document(deployment.store.path, a, b, *options)


def node(doc: dict[str, Any], label: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["label"] == label)


def kinds(doc: dict[str, Any]) -> list[str]:
    return [c["kind"] for c in doc["changes"]]


def share_of(doc: dict[str, Any], label: str, component: str | None = None) -> float:
    """The part of the end-to-end change the node accounts for (one component, or both)."""
    n = node(doc, label)["id"]
    return sum(
        p["share"] for p in doc["attribution"]
        if p["node"] == n and component in (None, p["component"])
    )  # fmt: skip


INVENTORY = "fulfilment -> inventory: GET /stock/{sku}"
PRICING = "fulfilment -> pricing: GET /price/{sku}"
ORDERS_CREATED = "orders -> fulfilment: orders.created"


def test_the_same_request_with_new_ids_and_shifted_clocks_is_no_difference(
    deployment: Deployment,
) -> None:
    """An hour later, inventory's clock 700 ms behind (evident: corrected), fulfilment's 3 ms
    ahead (not evident: it reads as 3 ms more queue wait, under the thresholds)."""
    a, b = pair(deployment, Shape(), Shape(), origin_ns=recent_origin() - HOUR_NS,
                skew_ms={"inventory": -700, "fulfilment": 3})  # fmt: skip

    code, doc = document(deployment, a, b)

    assert (code, doc["different"], doc["changes"]) == (0, False, [])
    assert {n["status"] for n in doc["nodes"]} == {"same"}
    assert len(doc["nodes"]) == 6  # gateway, orders hop, db, queue hop, inventory, pricing
    assert doc["a"]["trace_ids"] != doc["b"]["trace_ids"]
    assert any("clock skew adjusted on inventory" in w for w in doc["warnings"])
    text = run(deployment, a, b, "--format", "text")[1]
    assert "result: no difference that counts: exit 0" in text


def test_a_retry_after_a_503_is_one_retry_a_new_error_and_the_slowdown_is_inventory(
    deployment: Deployment,
) -> None:
    a, b = pair(deployment, Shape(), Shape(inventory=((150, 503), (30, 200))))

    code, doc = document(deployment, a, b)

    assert code == 1 and doc["reasons"] == ["retries", "errors", "timing"]
    inventory = node(doc, INVENTORY)
    assert (inventory["a"]["calls"], inventory["b"]["calls"]) == (1, 2)
    assert (inventory["b"]["retries"], inventory["b"]["retried_after"]) == (1, ["HTTP 503"])
    retries = [c for c in doc["changes"] if c["kind"] == "retries"]
    assert [c["node"] for c in retries] == [inventory["id"]]
    assert "calls" not in kinds(doc), "a retry is not a new call of another kind"
    errors = [c for c in doc["changes"] if c["category"] == "errors"]
    assert [(c["kind"], c["node"]) for c in errors] == [("new_error", inventory["id"])]
    assert errors[0]["message"].endswith("HTTP 503")
    assert doc["duration_delta_ms"] == 152.0
    assert share_of(doc, INVENTORY) >= 0.9
    assert doc["headline"] == (
        f"+152.0 ms end to end (+149%): 99% in {INVENTORY} (1 retry after HTTP 503)"
    )


def test_parallel_calls_made_sequential_are_a_concurrency_change_of_about_100_ms(
    deployment: Deployment,
) -> None:
    both = dict(inventory=((100.0, 200),), pricing_ms=100.0)
    a, b = pair(deployment, Shape(parallel=True, **both), Shape(gap=0, **both))  # type: ignore[arg-type]

    code, doc = document(deployment, a, b)

    assert code == 1
    concurrency = [c for c in doc["changes"] if c["kind"] == "concurrency"]
    assert len(concurrency) == 1
    change = concurrency[0]
    assert change["delta_ms"] == pytest.approx(100, abs=2)
    assert "in parallel in A, one after another in B" in change["message"]
    assert sorted(change["related"]) == sorted([node(doc, INVENTORY)["id"],
                                                node(doc, PRICING)["id"]])  # fmt: skip
    assert change["node"] == node(doc, ORDERS_CREATED)["id"]
    assert all("self" not in n["changed"] for n in doc["nodes"]), "self times are unchanged"
    assert all(n["a"]["self_ms"] == n["b"]["self_ms"] for n in doc["nodes"])
    assert doc["duration_delta_ms"] == pytest.approx(100, abs=2)
    assert "(no longer in parallel)" in doc["headline"]


def test_one_call_repeated_in_parallel_then_in_turn_says_so_in_the_headline(
    deployment: Deployment,
) -> None:
    """Three ``SELECT item`` of one node, at once in A and one after another in B: the change
    names the node itself (no related siblings), and the headline left its note out."""
    first, second = deployment.request(), deployment.request()
    for req, starts in ((first, (10, 10, 10)), (second, (10, 110, 210))):
        entry = req.entry("web", "/items", 0, starts[-1] + 110, method="GET")
        for start in starts:
            req.db(entry, "SELECT item", start, start + 100)
    deployment.flush()

    code, doc = document(deployment, first.correlation_id, second.correlation_id)

    assert code == 1
    (change,) = [c for c in doc["changes"] if c["kind"] == "concurrency"]
    assert "ran in parallel in A, one after another in B" in change["message"]
    assert doc["headline"].endswith("in web: SELECT item (no longer in parallel)")


def test_a_consumer_started_400_ms_later_is_that_hops_queue_wait(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(), Shape(queue_delay=405))

    code, doc = document(deployment, a, b)

    assert code == 1 and doc["duration_delta_ms"] == 400.0
    assert share_of(doc, ORDERS_CREATED, "queue_wait") >= 0.95
    assert doc["headline"].startswith("+400.0 ms end to end (+392%): 100% queue wait on "
                                      "orders.created")  # fmt: skip
    hop = node(doc, ORDERS_CREATED)
    assert (hop["a"]["queue_wait_ms"], hop["b"]["queue_wait_ms"]) == (5.0, 405.0)
    text = run(deployment, a, b, "--format", "text")[1]
    assert "queue wait 5.0 ms -> 405.0 ms (+400.0 ms)" in text


def test_a_node_that_gains_a_child_is_one_added_child(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(), Shape(inventory_db=True))

    code, doc = document(deployment, a, b)

    assert code == 1 and doc["reasons"] == ["structure"]
    assert [(c["kind"], c["message"]) for c in doc["changes"]] == [
        ("added", "added inventory: SELECT stock")
    ]
    added = [n for n in doc["nodes"] if n["status"] == "added"]
    assert len(added) == 1 and added[0]["parent"] == node(doc, INVENTORY)["id"]
    assert {n["status"] for n in doc["nodes"] if n is not added[0]} == {"same"}


def test_a_two_second_clock_skew_is_a_warning_and_no_timing_difference(
    deployment: Deployment,
) -> None:
    a, b = pair(deployment, Shape(), Shape(), skew_ms={"inventory": 2000})

    code, doc = document(deployment, a, b)

    assert (code, doc["changes"]) == (0, [])
    warning = "B: clock skew adjusted on inventory: shifted -2000.0 ms"
    assert [w for w in doc["warnings"] if w.startswith(warning)]
    assert all(n["a"] == {**n["b"], "start_offset_ms": n["a"]["start_offset_ms"]}
               for n in doc["nodes"])  # fmt: skip
    text = run(deployment, a, b, "--format", "text")[1]
    assert warning in text and "+0.0 ms end to end: no timing difference" in text


def test_calls_that_swap_places_are_an_order_change(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(), Shape(pricing_first=True))

    code, doc = document(deployment, a, b)

    assert code == 1 and kinds(doc) == ["order"]
    assert doc["changes"][0]["message"] == (
        f"under {ORDERS_CREATED}: {PRICING} now runs before {INVENTORY}"
    )
    assert document(deployment, a, b, "--fail-on", "structure,errors")[0] == 0


def test_a_resend_marked_by_the_http_client_is_a_retry(deployment: Deployment) -> None:
    shape = Shape(inventory=((30, 200), (30, 200)), inventory_resend=True)
    a, b = pair(deployment, Shape(), shape)

    _, doc = document(deployment, a, b)

    inventory = node(doc, INVENTORY)
    assert inventory["b"]["retries"] == 1
    assert inventory["b"]["retried_after"] == ["a resend (http.request.resend_count)"]
    assert "calls" not in kinds(doc)


def test_errors_and_retries_that_went_away(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(inventory=((150, 503), (30, 200))), Shape())

    code, doc = document(deployment, a, b)

    assert code == 1
    gone = [c for c in doc["changes"] if c["kind"] == "gone_error"]
    assert len(gone) == 1 and gone[0]["message"].endswith("HTTP 503")
    retries = next(c for c in doc["changes"] if c["kind"] == "retries")
    assert retries["message"].endswith("no retries (A: 1 retry after HTTP 503)")
    assert doc["headline"].startswith("-152.0 ms end to end (-60%): 99% in ")


def test_a_new_version_on_a_service_is_a_resource_change(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(), Shape(), versions={"orders": "1.5"},
                hosts={"orders": "orders-7f9c"})  # fmt: skip

    code, doc = document(deployment, a, b)

    assert code == 1 and doc["reasons"] == ["resources"]
    assert [c["message"] for c in doc["changes"]] == [
        "orders: host.name orders-host -> orders-7f9c",
        "orders: service.version 1.0 -> 1.5",
    ]
    assert document(deployment, a, b, "--fail-on", "structure,timing")[0] == 0


def test_a_fan_out_over_many_hosts_says_which_host_changed(tmp_path: Path) -> None:
    """A request calls 40 pods of one service. One pod was replaced between A and B: the
    change listed all 40 hosts of A, then all 40 of B (a 1 KB line, cut in the terminal before
    B's), which read the same and did not say which one had gone."""
    from tracekit.records import SpanRecord
    from tracekit.store import Store

    def request(cid: str, trace: int, hosts: list[str]) -> list[SpanRecord]:
        start, ids = 1_700_000_000_000_000_000, {"correlation.id": cid}
        root = SpanRecord(f"{trace:032x}", f"{trace:08x}{0:08x}", None, "batch", "run",
                          "INTERNAL", start, start + 10**8, attributes=ids)  # fmt: skip
        calls = [
            SpanRecord(root.trace_id, f"{trace:08x}{i + 1:08x}", root.span_id, "pricing",
                       "price", "INTERNAL", start + i, start + 10**6, attributes=ids,
                       resource={"host.name": host})
            for i, host in enumerate(hosts)
        ]  # fmt: skip
        return [root, *calls]

    pods = [f"pricing-7f9c4d-{n:02d}" for n in range(40)]
    with Store(tmp_path / "pods.db") as store:
        store.write_spans(request("before", 1, pods) + request("after", 2, [*pods[:-1], "new"]))

    result = CliRunner().invoke(cli, ["diff", "before", "after", "--store",
                                      str(tmp_path / "pods.db"), "--format", "json"])  # fmt: skip

    doc = json.loads(result.stdout)
    assert [c["message"] for c in doc["changes"]] == [
        "pricing: host.name pricing-7f9c4d-39 -> new (also in both: pricing-7f9c4d-00,"
        " pricing-7f9c4d-01, pricing-7f9c4d-02 and 36 more)"
    ]


def test_fail_on_and_thresholds_narrow_what_counts(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(), Shape(queue_delay=405))  # +400 ms, +392%

    assert document(deployment, a, b, "--fail-on", "errors,structure")[0] == 0
    assert document(deployment, a, b, "--fail-on", "slower")[0] == 1
    assert document(deployment, a, b, "--fail-on", "slower=20%")[0] == 1
    assert document(deployment, a, b, "--fail-on", "slower=500%")[0] == 0
    assert document(deployment, a, b, "--fail-on", "slower=0.5s")[0] == 0
    assert document(deployment, b, a, "--fail-on", "slower")[0] == 0, "faster is not slower"
    code, doc = document(deployment, a, b, "--min-delta-ms", "500")
    assert (code, doc["changes"], doc["settings"]["min_delta_ms"]) == (0, [], 500.0)
    code, doc = document(deployment, a, b, "--fail-on", "timing,slower=20%")
    assert doc["settings"]["fail_on"] == ["timing", "slower=20%"]
    assert doc["reasons"] == ["timing", "slower"]


def test_a_batch_consumer_matches_whichever_reply_came_last(deployment: Deployment) -> None:
    """A gather waits for the slowest reply: pricing.3 in A, pricing.1 in B. Same structure."""
    cids = []
    for slow in (3, 1):
        req = deployment.request()
        root = req.entry("gateway", "/quote", 0, 400)
        replies = []
        for i in (1, 2, 3):
            sent = req.publish(root, f"pricing.{i}", 2 * i, 2 * i + 1)
            done = 2 * i + 2 + (300 if i == slow else 20)
            handled = req.consume("pricing", sent, 2 * i + 2, done)
            replies.append(req.publish(handled, "pricing.replies", done - 1, done))
        last = max(r.end_time or 0 for r in replies)
        req.consume_batch("aggregator", replies, (last - req.origin_ns) / 1e6 + 1,
                          (last - req.origin_ns) / 1e6 + 20)  # fmt: skip
        cids.append(req.correlation_id)
    deployment.flush()

    _, doc = document(deployment, *cids)

    statuses = {n["label"]: n["status"] for n in doc["nodes"]}
    assert "added" not in statuses.values() and "removed" not in statuses.values()
    gather = node(doc, "pricing -> aggregator: pricing.replies")
    assert gather["parent"] == node(doc, "gateway: POST /quote")["id"]
    assert gather["a"]["calls"] == gather["b"]["calls"] == 1


def test_a_pasted_traceparent_is_answered_with_the_trace_id_in_it(deployment: Deployment) -> None:
    """As in `tracekit trace`: a whole `traceparent` is looked up as a correlation ID, and when
    nothing carries it the error names the trace ID inside it."""
    a, _ = pair(deployment, Shape(), Shape())
    typed = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"

    code, out, err = run(deployment, a, typed)

    assert (code, out) == (3, "")
    assert err == (
        f"tracekit: no request found for '{typed}' (a traceparent header, whose trace ID is"
        f" 4bf92f3577b34da6a3ce929d0e0e4736){in_store(deployment)}\n"
    )


def test_exit_status_like_unix_diff(deployment: Deployment, tmp_path: Path) -> None:
    a, _ = pair(deployment, Shape(), Shape())

    code, out, err = run(deployment, a, "req-nowhere", "--format", "text")
    assert (code, out) == (3, "")
    assert err == f"tracekit: no request found for 'req-nowhere'{in_store(deployment)}\n"
    code, _, err = run(deployment, "req-x", "req-y")
    assert code == 3
    assert err == f"tracekit: no request found for 'req-x' and 'req-y'{in_store(deployment)}\n"
    for usage in ([a], [a, a, "--service", "orders"], [a, a, "--fail-on", "faster"],
                  [a, a, "--fail-on", "slower=fast"]):  # fmt: skip
        code, out, err = run(deployment, *usage)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (usage, err)
        assert "Traceback" not in err
    for option, value in (("--since", "1m"), ("--limit", "3"), ("--min-requests", "5")):
        code, out, err = run(deployment, a, a, option, value)
        assert (code, out) == (2, "")
        assert (
            err
            == f"tracekit: {option} is for the set form (--service S --a K=V --b K=V), not A B\n"
        )
    result = CliRunner().invoke(cli, ["diff", a, a, "--store", str(tmp_path / "none.db")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"tracekit: no tracekit store at {tmp_path / 'none.db'} yet: ")
    assert result.stderr.count("\n") == 1
    usage = subprocess.run([TRACEKIT, "diff", a, a, "--format", "xml"], capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1


def test_the_rich_view_reads_like_a_code_diff(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(queue_delay=405), Shape(inventory_db=True))

    code, out, _ = run(deployment, a, b, "--format", "rich")

    lines = out.splitlines()
    added = next(line for line in lines if "SELECT stock" in line and "added" not in line)
    assert added.startswith("\x1b[1;32m+ ") and "\x1b[32m" in added  # green
    context = next(line for line in lines if "gateway: POST /checkout" in line)
    assert "\x1b[2m" in context and "\x1b[32m" not in context  # dim
    at = next(i for i, line in enumerate(lines) if "orders → fulfilment: orders.created" in line)
    assert lines[at].startswith("\x1b[1;33m~ ")  # changed
    wait = lines[at + 1]
    assert "queue wait 405.0 ms → 5.0 ms (-400.0 ms)" in wait and "\x1b[36m" in wait  # faster
    assert code == 1


def test_no_color_and_hostile_names(deployment: Deployment) -> None:
    req = deployment.request()
    req.entry("web\x1b[2J", "/x\x1b]0;pwned\x07", 0, 5)
    other = deployment.request()
    other.entry("web\x1b[2J", "/y\r\n", 0, 5)
    deployment.flush()
    for fmt in ("text", "rich"):
        result = CliRunner().invoke(
            cli, ["diff", req.correlation_id, other.correlation_id, "--store",
                  str(deployment.store.path), "--format", fmt], env={"NO_COLOR": "1"},
        )  # fmt: skip
        assert result.exit_code == 1
        assert not any(c in result.stdout for c in "\x1b\x07\r")


def test_the_views_are_deterministic_and_fit_the_width(deployment: Deployment) -> None:
    a, b = pair(deployment, Shape(), Shape(inventory=((150, 503), (30, 200))))
    for fmt in ("text", "rich", "json"):
        assert run(deployment, a, b, "--format", fmt) == run(deployment, a, b, "--format", fmt)
    text = run(deployment, a, b, "--format", "text")[1]
    assert max(len(line) for line in text.splitlines()) <= 120


def test_random_jitter_keeps_the_document_valid(deployment: Deployment) -> None:
    rng = random.Random(5)
    a, b = pair(deployment, Shape(jitter=rng), Shape(jitter=rng, cache_ms=4))
    code, doc = document(deployment, a, b)
    assert code == 1 and "added" in kinds(doc)


def test_the_demo_diffs_its_fastest_and_slowest_checkout_that_did_not_fail(
    deployment: Deployment,
) -> None:
    from tracekit.path import reconstruct
    from tracekit_cli.demo.diff_step import fastest_and_slowest

    requests = [deployment.request() for _ in range(3)]
    build(requests[0], Shape(queue_delay=200))
    build(requests[1], Shape())
    build(requests[2], Shape(inventory=((1, 503),)))  # failed: shortest of all
    deployment.flush()
    paths = [reconstruct(deployment.store, r.correlation_id) for r in requests]
    assert all(p is not None for p in paths)

    picked = fastest_and_slowest([p for p in paths if p is not None])

    assert picked is not None
    assert [p.correlation_id for p in picked] == [requests[1].correlation_id,
                                                  requests[0].correlation_id]  # fmt: skip
    assert fastest_and_slowest([p for p in paths[1:] if p is not None]) is None


def test_a_retried_call_that_no_longer_recovers_is_a_new_error(deployment: Deployment) -> None:
    """A: a 503, then the retry succeeds. B: the retry fails too. Both have one retry and the
    same message, so the diff said "no difference that counts" (exit 0) for a call that now
    ends in failure."""
    recovered = Shape(inventory=((150, 503), (30, 200)))
    a, b = pair(deployment, recovered, Shape(inventory=((150, 503), (30, 503))))

    code, doc = document(deployment, a, b)

    assert code == 1 and "errors" in doc["reasons"]
    inventory = node(doc, INVENTORY)
    errors = [c for c in doc["changes"] if c["category"] == "errors"]
    assert [(c["kind"], c["node"]) for c in errors] == [("new_error", inventory["id"])]
    assert errors[0]["message"] == f"more errors at {INVENTORY}: 1 -> 2 (HTTP 503)"

    back, doc = document(deployment, b, a)
    assert back == 1
    assert [c["message"] for c in doc["changes"] if c["kind"] == "gone_error"] == [
        f"fewer errors at {INVENTORY}: 2 -> 1 (HTTP 503)"
    ]


def test_the_same_error_with_another_id_is_no_difference(deployment: Deployment) -> None:
    """Each request fails on its own order: the messages differ only in the ids, which is the
    same error, not a new one and a gone one. Another message, or another status, still is."""

    def failing(message: str, status: int = 503) -> Shape:
        return Shape(inventory=((150, status), (30, 200)), inventory_error=message)

    a, b = pair(deployment, failing("order 1042 not found (trace 5d9b7c726baf450b)"),
                failing("order 2077 not found (trace 0af7651916cd43dd)"))  # fmt: skip
    code, doc = document(deployment, a, b)
    assert code == 0, doc["changes"]
    assert node(doc, INVENTORY)["b"]["error_messages"] == [
        "order 2077 not found (trace 0af7651916cd43dd)"
    ]

    a, b = pair(deployment, failing("order 1042 not found"), failing("stock 1042 is locked"))
    code, doc = document(deployment, a, b)
    assert code == 1
    assert [c["message"] for c in doc["changes"] if c["category"] == "errors"] == [
        f"new error at {INVENTORY}: stock 1042 is locked",
        f"error gone at {INVENTORY}: order 1042 not found",
    ]

    a, b = pair(deployment, failing("upstream said 502", 502), failing("upstream said 504", 504))
    code, doc = document(deployment, a, b)
    assert code == 1 and "errors" in doc["reasons"]


def fan_out(deployment: Deployment, durations: dict[str, float]) -> str:
    """A request whose gateway calls each service in turn, 2 ms apart; its correlation ID."""
    req = deployment.request()
    calls, at = [], 2.0
    for service, ms in durations.items():
        calls.append((service, at, at + ms))
        at += ms + 2
    gateway = req.entry("gateway", "/fan-out", 0, at + 3)
    for service, start, end in calls:
        req.call(gateway, service, f"/{service}", start, end)
    return req.correlation_id


@pytest.mark.parametrize(("others", "more"), [(11, "3 smaller parts"), (9, "1 smaller part")])
def test_where_the_time_went_lists_the_largest_parts_whichever_their_sign(
    deployment: Deployment, others: int, more: str
) -> None:
    """A part that made B faster was ranked below every part that made it slower, so the view's
    ten rows hid 30 ms behind "... smaller parts" while listing 1 ms ones."""
    names = [f"s{n:02d}" for n in range(others)]
    a = fan_out(deployment, {"orders": 40, "slow": 10, **dict.fromkeys(names, 10)})
    b = fan_out(deployment, {"orders": 10, "slow": 610, **dict.fromkeys(names, 11)})
    deployment.flush()

    _, doc = document(deployment, a, b)
    code, text, _ = run(deployment, a, b, "--format", "text")

    parts = [p["delta_ms"] for p in doc["attribution"]]
    assert len(parts) == others + 2, "json lists every part"
    assert sum(parts) == pytest.approx(doc["duration_delta_ms"]) == 570.0 + others
    section = text.split("where the time went", 1)[1].splitlines()[1:]
    rows = section[: section.index(f"  ... {more} (--format json lists them all)")]
    shown = [float(row.split()[0]) for row in rows]
    assert shown[:2] == [600.0, -30.0]
    assert "gateway -> orders: GET /orders" in rows[1]
    hidden = sorted(parts, key=abs)[: len(parts) - len(shown)]
    assert min(map(abs, shown)) >= max(map(abs, hidden)), (shown, hidden)
    assert doc["headline"].endswith("in gateway -> slow: GET /slow"), doc["headline"]
    assert code == 1


def test_the_headline_names_the_parts_in_the_direction_of_the_change(
    deployment: Deployment,
) -> None:
    a = fan_out(deployment, {"first": 10, "second": 10, "third": 10, "orders": 50})
    b = fan_out(deployment, {"first": 60, "second": 55, "third": 55, "orders": 2})
    deployment.flush()

    _, doc = document(deployment, a, b)

    assert [p["delta_ms"] for p in doc["attribution"]] == [50.0, -48.0, 45.0, 45.0]
    assert doc["headline"] == (
        "+92.0 ms end to end (+99%): 54% in gateway -> first: GET /first,"
        " 49% in gateway -> second: GET /second"
    )


def test_two_traces_of_one_correlation_id_are_compared_as_two(deployment: Deployment) -> None:
    """A session's correlation ID on two checkouts, the second 400 ms slower: diffed by their
    trace IDs, each path joined both traces and the diff said 'no difference' (exit 0)."""
    first, second = deployment.request("session-42"), deployment.request("session-42")
    build(first, Shape())
    build(second, Shape(queue_delay=405))
    deployment.flush()
    a, b = (f"{r.spans[0].get_span_context().trace_id:032x}" for r in (first, second))

    code, doc = document(deployment, a, b)

    assert (code, doc["duration_delta_ms"]) == (1, 400.0)
    assert (doc["a"]["trace_ids"], doc["b"]["trace_ids"]) == ([a], [b])
    assert doc["warnings"][0] == (
        "A and B share the correlation ID 'session-42': each trace is compared with the traces"
        " linked to it, not with every trace of that ID"
    )
    assert document(deployment, a, a)[1]["warnings"] == [SAME_ID]  # not the shared-ID note


def test_the_header_names_each_request_as_typed(deployment: Deployment) -> None:
    """Two trace IDs of one session: the header named each request by its correlation ID, so
    it read "A session-7" and "B session-7" and did not say which was which."""
    first, second = deployment.request("session-7"), deployment.request("session-7")
    build(first, Shape())
    build(second, Shape(queue_delay=405))
    deployment.flush()
    a, b = (f"{r.spans[0].get_span_context().trace_id:032x}" for r in (first, second))

    code, text, _ = run(deployment, a, b, "--format", "text")

    assert code == 1
    assert text.startswith(f"A {a} (correlation ID session-7)  102.0 ms, start ")
    assert text.splitlines()[1].startswith(f"B {b} (correlation ID session-7)  502.0 ms, start ")
    _, text, _ = run(deployment, first.correlation_id, a, "--format", "text")
    assert text.startswith("A session-7  ")  # typed as the correlation ID: said once


SAME_ID = "A and B are the same ID: the request is compared with itself"


def test_one_id_typed_twice_is_said_to_be_compared_with_itself(deployment: Deployment) -> None:
    """One ID pasted as both A and B said "no difference that counts" (exit 0) and nothing
    else, as if two requests had been found the same. A trace ID matches in either case; a
    correlation ID only as typed (``req-1`` and ``REQ-1`` are two requests)."""
    req = deployment.request()
    build(req, Shape())
    deployment.flush()
    trace_id = f"{req.spans[0].get_span_context().trace_id:032x}"

    for a, b in ((req.correlation_id, req.correlation_id), (trace_id, trace_id.upper())):
        code, doc = document(deployment, a, b)
        assert (code, doc["warnings"]) == (0, [SAME_ID])
        code, text, _ = run(deployment, a, b, "--format", "text")
        assert code == 0 and f"warnings:\n  {SAME_ID}\n" in text


def test_two_linked_traces_of_one_request_are_said_to_be_one(tmp_path: Path) -> None:
    """A producer's trace and its consumer's (a new trace, linked): one request whichever is
    typed, so the diff says it compares the request with itself."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
    from trace_topologies import Topology, write_store

    t = Topology("req-linked")
    producer = t.publish(t.span("api", "POST /jobs", "SERVER", 0, 20), "jobs", 5, 8)
    t.new_trace()
    t.consume("worker", "jobs", 30, 90, links=[producer], correlated=False)
    db = write_store(tmp_path / "linked.db", t)
    first, second = sorted({span.trace_id for span in t.spans})

    result = CliRunner().invoke(cli, ["diff", first, second, "--store", str(db), "--format",
                                      "json"])  # fmt: skip

    doc = json.loads(result.stdout)
    assert (result.exit_code, doc["changes"]) == (0, [])
    assert doc["warnings"] == ["A and B are one request (they share traces): compared with itself"]


def test_two_requests_that_fed_one_batch_are_not_said_to_be_one(tmp_path: Path) -> None:
    """Two requests each publish a job; one worker takes both in a batch (a trace of its own,
    linked to both). Each path holds the worker's trace, and the diff said "A and B are one
    request (they share traces): compared with itself" over a comparison of two requests."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
    from trace_topologies import Topology, write_store

    x = Topology("req-batch-x")
    job_x = x.publish(x.span("api", "POST /jobs", "SERVER", 0, 20), "jobs", 5, 8)
    y = Topology("req-batch-y")
    job_y = y.publish(y.span("api", "POST /jobs", "SERVER", 0, 80), "jobs", 5, 8)
    worker = Topology(None)
    worker.consume("worker", "jobs", 100, 190, links=[job_x, job_y], correlated=False)
    db = write_store(tmp_path / "batch.db", x, y, worker)

    result = CliRunner().invoke(cli, ["diff", "req-batch-x", "req-batch-y", "--store", str(db),
                                      "--format", "json"])  # fmt: skip

    doc = json.loads(result.stdout)
    assert result.exit_code == 1 and node(doc, "api: POST /jobs")["changed"] == ["self"]
    assert doc["warnings"] == [
        "A and B share 1 trace (a batch both fed, say): what it holds counts in both"
    ]


def test_requests_only_log_lines_carry_are_said_to_have_no_span_to_compare(
    tmp_path: Path,
) -> None:
    """Every service in correlation-only mode: `tracekit trace` shows each request from its log
    lines, but `diff` said "no request found" for IDs the user had just traced."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
    from trace_topologies import Topology, write_store

    from tracekit.records import LogRecordData

    start = 1_700_000_000_000_000_000
    topologies = []
    for cid in ("req-logs-1", "req-logs-2"):
        t = Topology(cid)
        t.logs.append(LogRecordData(start, "shop", "WARN", 13, "paying order 7",
                                    attributes={"correlation.id": cid}))  # fmt: skip
        topologies.append(t)
    traced = Topology("req-traced")
    traced.span("api", "GET /", "SERVER", 0, 20)
    db = str(write_store(tmp_path / "logs-only.db", *topologies, traced))

    def diff(*ids: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, ["diff", *ids, "--store", db, "--format", "json"])
        return result.exit_code, result.stdout, result.stderr

    assert diff("req-logs-1", "req-logs-2") == (3, "", (
        "tracekit: 'req-logs-1' and 'req-logs-2' have only log lines, no span to compare"
        " (tracekit trace shows them)\n"
    ))  # fmt: skip
    assert diff("req-traced", "req-logs-2") == (3, "", (
        "tracekit: 'req-logs-2' has only log lines, no span to compare"
        " (tracekit trace shows them)\n"
    ))  # fmt: skip
    assert diff("req-nowhere", "req-logs-1") == (3, "", (
        f"tracekit: no request found for 'req-nowhere' in the store {db} ('tracekit search'"
        " lists its newest requests); 'req-logs-1' has only log lines, no span to compare"
        " (tracekit trace shows them)\n"
    ))  # fmt: skip
    assert diff("req-logs-1", "req-logs-1")[2] == (  # said once
        "tracekit: 'req-logs-1' has only log lines, no span to compare"
        " (tracekit trace shows them)\n"
    )


def test_times_read_in_the_unit_they_round_to(deployment: Deployment) -> None:
    """999.96 ms rounds to a second, not to "1000.0 ms"; 40 us less is "+0.0 ms", not "-0.0"."""
    a, b = pair(deployment, Shape(pricing_ms=50.0), Shape(pricing_ms=999.96))
    assert tree_row(deployment, a, b, PRICING)[:5] == ["50.0", "ms", "1.00", "s", "+950.0"]

    a, b = pair(deployment, Shape(pricing_ms=50.04), Shape(pricing_ms=50.0))
    assert tree_row(deployment, a, b, PRICING)[:6] == ["50.0", "ms", "50.0", "ms", "+0.0", "ms"]


def tree_row(deployment: Deployment, a: str, b: str, label: str) -> list[str]:
    """The words of the text view's tree row of the node ``label``, after its marker."""
    text = run(deployment, a, b, "--format", "text")[1]
    return next(line[2:].split() for line in text.splitlines() if line.endswith(f"- {label}"))


def test_a_loop_over_items_after_one_failed_is_not_a_retry(deployment: Deployment) -> None:
    """A checkout asks inventory for three SKUs in turn; in B the first answers 503. The calls
    for the other SKUs go elsewhere: they are no retry of it, and no change in calls."""
    ids = []
    for first_status in (200, 503):
        req = deployment.request()
        gateway = req.entry("gateway", "/checkout", 0, 40)
        for number, status in enumerate((first_status, 200, 200)):
            start = 2 + number * 12
            req.call(gateway, "inventory", "/stock/{sku}", start, start + 10, status=status,
                     path=f"/stock/sku-{number + 1}")  # fmt: skip
        ids.append(req.correlation_id)
    deployment.flush()

    code, doc = document(deployment, *ids)

    stock = node(doc, "gateway -> inventory: GET /stock/{sku}")
    assert (stock["b"]["calls"], stock["b"]["retries"], stock["b"]["errors"]) == (3, 0, 1)
    assert (code, doc["reasons"], kinds(doc)) == (1, ["errors"], ["new_error"])


def test_an_immediate_retry_of_a_call_whose_server_closed_late_is_a_retry(
    deployment: Deployment,
) -> None:
    """The client gets a 503 at 30 ms and asks again 0.1 ms later; the failed attempt's WSGI
    server span closes 1 ms after the client read the answer, after the second attempt reached
    its server. The attempt was over for the caller when its client span ended: a retry."""
    ids = []
    for statuses in ((200,), (503, 200)):
        req = deployment.request()
        gateway = req.entry("gateway", "/checkout", 0, 80)
        start = 2.0
        for status in statuses:
            stock_call(req, gateway, start, status)
            start += 28.1
        ids.append(req.correlation_id)
    deployment.flush()

    code, doc = document(deployment, *ids)

    stock = node(doc, "gateway -> inventory: GET /stock/{sku}")
    assert code == 1 and "retries" in doc["reasons"]
    assert (stock["b"]["calls"], stock["b"]["retries"]) == (2, 1)
    assert stock["b"]["retried_after"] == ["HTTP 503"]


def stock_call(req: Request, caller: Span, start: float, status: int) -> None:
    """A 28 ms call to inventory whose server span closes 1 ms after the client's ended."""
    error = "HTTP 503" if status >= 500 else None
    attrs = {"http.request.method": "GET", "url.path": "/stock/sku-1",
             "http.response.status_code": status}  # fmt: skip
    calling = trace.set_span_in_context(caller)
    client = req.span("gateway", "GET", "CLIENT", start, start + 28, calling, attrs=attrs,
                      error=error)  # fmt: skip
    headers: dict[str, str] = {}
    propagate.inject(headers, context=trace.set_span_in_context(client))
    req.span("inventory", "GET /stock/{sku}", "SERVER", start + 0.2, start + 29,
             propagate.extract(headers), attrs={**attrs, "http.route": "/stock/{sku}"},
             error=error)  # fmt: skip


def test_a_proxys_second_attempt_on_a_rewritten_path_is_a_retry(deployment: Deployment) -> None:
    """gateway calls /api/stock/sku-1 once; the proxy in front of inventory (untraced) strips
    /api and, after a 503, sends the request again: two SERVER spans under one CLIENT span."""
    from opentelemetry import trace

    ids = []
    for statuses in ((200,), (503, 200)):
        req = deployment.request()
        gateway = req.entry("gateway", "/checkout", 0, 40)
        client = req.span("gateway", "GET", "CLIENT", 2, 30, trace.set_span_in_context(gateway),
                          attrs={"http.request.method": "GET",
                                 "url.full": "http://inventory/api/stock/sku-1"})  # fmt: skip
        for number, status in enumerate(statuses):
            attrs = {"http.route": "/stock/{sku}", "http.request.method": "GET",
                     "url.path": "/stock/sku-1", "http.response.status_code": status}  # fmt: skip
            req.span("inventory", "GET /stock/{sku}", "SERVER", 3 + 13 * number,
                     14 + 13 * number, trace.set_span_in_context(client), attrs=attrs,
                     error="HTTP 503" if status == 503 else None)  # fmt: skip
        ids.append(req.correlation_id)
    deployment.flush()

    _, doc = document(deployment, *ids)

    b = node(doc, "gateway -> inventory: GET /stock/{sku}")["b"]
    assert (b["calls"], b["retries"], b["retried_after"]) == (2, 1, ["HTTP 503"])


def test_a_huge_request_draws_what_changed_not_every_node(deployment: Deployment) -> None:
    """A batch job of 1,500 distinct steps gains one step: the terminal view draws that step
    under its parent, not 1,500 unchanged rows around it; the JSON document still lists all."""
    from opentelemetry import trace

    ids = []
    for extra in (False, True):
        req = deployment.request()
        job = req.entry("batch", "/jobs/nightly", 0, 2000)
        for step in range(1500):
            name = "".join(chr(65 + step // 26**i % 26) for i in range(3))  # AAA, BAA, ...
            req.internal(job, f"step {name}", step, step + 0.5)
        if extra:
            req.span("batch", "vacuum", "INTERNAL", 1501, 1502, trace.set_span_in_context(job))
        deployment.flush()  # within the SDK's export queue (2,048 spans)
        ids.append(req.correlation_id)

    code, text, _ = run(deployment, *ids, "--format", "text")

    tree = text.split("  node\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert code == 1 and len(tree) == 3, tree[:5]
    assert tree[0].endswith("  batch: POST /jobs/nightly")
    assert tree[1].startswith("+") and tree[1].endswith("`- batch: vacuum")
    assert tree[2] == "  ... 1500 unchanged nodes not drawn (--format json lists them all)"
    assert len(document(deployment, *ids)[1]["nodes"]) == 1502


def test_a_retry_that_went_away_is_named_in_the_headline(deployment: Deployment) -> None:
    """B is faster because inventory no longer needed a retry: the headline says so, not
    "(no retries)", which reads as though retries had nothing to do with it."""
    a, b = pair(deployment, Shape(inventory=((150, 503), (30, 200))), Shape())

    _, doc = document(deployment, a, b)

    assert doc["headline"] == (
        f"-152.0 ms end to end (-60%): 99% in {INVENTORY} (1 retry after HTTP 503 in A, none in B)"
    )


def test_replies_through_queues_the_broker_named_are_one_node(deployment: Deployment) -> None:
    """An RPC client's reply queue is named by RabbitMQ, one per client (amq.gen-...): two
    clients' identical requests are no difference, not a reply hop removed and another added."""
    ids = []
    for reply_queue in ("amq.gen-JzTY20BRgKO-HjmUJj0wLg", "amq.gen-Q1w9xPZb3TvL0aYcKd2mFe"):
        req = deployment.request()
        gateway = req.entry("gateway", "/quote", 0, 40)
        asked = req.publish(gateway, "rpc.pricing", 1, 2)
        worker = req.consume("pricing", asked, 3, 20)
        reply = req.publish(worker, reply_queue, 18, 19)
        req.consume("gateway", reply, 21, 22)
        ids.append(req.correlation_id)
    deployment.flush()

    code, doc = document(deployment, *ids)

    assert (code, doc["changes"]) == (0, [])
    assert "pricing -> gateway: (anonymous)" in [n["label"] for n in doc["nodes"]]


def test_a_call_moved_behind_a_new_proxy_is_not_where_the_time_went(
    deployment: Deployment,
) -> None:
    """B reaches inventory through a proxy that adds 30 ms; inventory still takes 90 ms. Its
    node has another chain of ancestors, so it is removed and added, but the time it took did
    not come or go: the 30 ms went to the proxy (the headline said 300% in proxy -> inventory)."""
    first, second = deployment.request(), deployment.request()
    gateway = first.entry("gateway", "/reserve", 0, 200)
    first.call(gateway, "inventory", "/stock/{sku}", 10, 100)
    gateway = second.entry("gateway", "/reserve", 0, 230)
    _, proxy = second.call(gateway, "proxy", "/stock/{sku}", 10, 130)
    second.call(proxy, "inventory", "/stock/{sku}", 20, 110)
    deployment.flush()

    code, doc = document(deployment, first.correlation_id, second.correlation_id)

    assert code == 1 and "structure" in doc["reasons"]
    proxied = "gateway -> proxy: GET /stock/{sku}"
    assert doc["headline"] == f"+30.0 ms end to end (+15%): 100% in {proxied}"
    assert share_of(doc, proxied) == 1.0
    assert share_of(doc, "proxy -> inventory: GET /stock/{sku}") == 0
    assert share_of(doc, "gateway -> inventory: GET /stock/{sku}") == 0


def test_a_retry_after_a_refused_connection_is_a_retry(deployment: Deployment) -> None:
    """In B the first call to inventory is refused (a pod gone): the client span has no server
    below it. The caller asks again and another pod answers: one call retried, not a node added
    beside it (it read 'added gateway: GET /stock/{id}' and no retry)."""
    ids = []
    for refused in (False, True):
        req = deployment.request()
        gateway = req.entry("gateway", "/checkout", 0, 140)
        start = 10.0
        if refused:
            attrs = {"http.request.method": "GET", "server.address": "inventory",
                     "url.full": "http://inventory:8080/stock/sku-42",
                     "error.type": "ConnectionRefusedError"}  # fmt: skip
            req.span("gateway", "GET", "CLIENT", start, start + 20,
                     trace.set_span_in_context(gateway), attrs=attrs,
                     error="[Errno 111] Connection refused")  # fmt: skip
            start += 21
        req.call(gateway, "inventory", "/stock/{sku}", start, start + 90)
        ids.append(req.correlation_id)
    deployment.flush()

    code, doc = document(deployment, *ids)

    stock = node(doc, "gateway -> inventory: GET /stock/{sku}")
    assert (stock["b"]["calls"], stock["b"]["retries"], stock["b"]["errors"]) == (2, 1, 1)
    assert stock["b"]["retried_after"] == ["[Errno 111] Connection refused"]
    assert code == 1 and doc["reasons"] == ["retries", "errors", "timing"]
    assert "structure" not in [c["category"] for c in doc["changes"]]
