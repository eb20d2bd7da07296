"""``tracekit diff A B`` where the sampler left out part of one request.

The API samples 30% of requests (``parentbased_traceidratio``), its queue consumer keeps every
message (``always_on``): most requests have the consumer's spans alone, their trace beginning at
a span whose parent (the producer's) is not there. Stored in a real store, compared by the real
command.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from diff_cli import diff_document
from trace_topologies import MS, Topology, write_store

UNSENT_PRODUCER = "00f067aa0ba902b7"  # the span id the consumer's parent has: never exported


def order(t: Topology, wait_ms: float) -> None:
    """The sampled request: POST /order/{n} publishes, worker consumes."""
    api = t.span("api", "POST /order/{n}", "SERVER", 0, 4, attrs={"http.route": "/order/{n}"})
    publish = t.publish(api, "orders", 1, 3, system="rabbitmq")
    t.consume("worker", "orders", 3 + wait_ms, 13 + wait_ms, publish, system="rabbitmq")


def sampled_out(t: Topology) -> None:
    """The same request, the API's spans left out: the consumer's span alone, in a trace of its
    own whose parent is the producer's span, which was never exported."""
    t.span(
        "worker", "process orders", "CONSUMER", 0, 10, parent_span_id=UNSENT_PRODUCER,
        attrs={"messaging.system": "rabbitmq", "messaging.destination.name": "orders",
               "tracekit.queue_wait_ms": 2.0},
    )  # fmt: skip


def diff(tmp_path: Path, *topologies: Topology, a: str, b: str) -> tuple[int, dict[str, Any]]:
    return diff_document(write_store(tmp_path / "tracekit.db", *topologies), a, b)


def test_a_request_whose_api_spans_were_sampled_out_did_not_take_another_route(
    tmp_path: Path,
) -> None:
    """It read "removed api: POST /order/{n}" and "added worker", and put the whole change in
    the API's hop; it says B recorded no spans for the API now, and attributes no time."""
    kept, left = Topology("order-1"), Topology("order-2")
    order(kept, wait_ms=5)
    sampled_out(left)

    code, doc = diff(tmp_path, kept, left, a="order-1", b="order-2")

    said = "B recorded no spans for api (left out by the sampler, or not exported)"
    assert doc["headline"] == f"time not attributed: {said}"
    assert f"{said}: its nodes are not counted as added or removed" in doc["warnings"]
    assert [c["message"] for c in doc["changes"]] == []
    assert (code, doc["different"], doc["attribution"]) == (0, False, [])

    code, doc = diff(tmp_path / "swapped", kept, left, a="order-2", b="order-1")
    assert doc["headline"] == (
        "time not attributed: A recorded no spans for api (left out by the sampler, or not "
        "exported)"
    )
    assert (code, doc["changes"], doc["attribution"]) == (0, [], [])


def test_two_kept_requests_still_differ_by_a_service_one_did_not_call(tmp_path: Path) -> None:
    """A request that did not reach a service, its trace whole, is still a removed node."""
    kept, shorter = Topology("order-3"), Topology("order-4")
    order(kept, wait_ms=5)
    shorter.span("api", "POST /order/{n}", "SERVER", 0, 4, attrs={"http.route": "/order/{n}"})

    code, doc = diff(tmp_path, kept, shorter, a="order-3", b="order-4")

    assert code == 1 and "structure" in doc["reasons"]
    assert any(c["kind"] == "removed" for c in doc["changes"])
    assert not any("recorded no spans" in w for w in doc["warnings"])


def test_behind_a_tracing_gateway_a_call_not_made_is_still_removed(tmp_path: Path) -> None:
    """Behind a gateway that keeps its spans elsewhere, every request's trace begins at a span
    whose parent is not there: a service one request called and the other did not is below
    that entry, not above it, and is still a removed node."""
    kept, shorter = Topology("order-5"), Topology("order-6")
    for t in (kept, shorter):
        t.span("api", "POST /order/{n}", "SERVER", 0, 4, parent_span_id=UNSENT_PRODUCER,
               attrs={"http.route": "/order/{n}"})  # fmt: skip
    kept.publish(kept.spans[0], "orders", 1, 3, system="rabbitmq")
    kept.consume("worker", "orders", 8, 18, kept.spans[-1], system="rabbitmq")

    code, doc = diff(tmp_path, kept, shorter, a="order-5", b="order-6")

    assert code == 1 and "structure" in doc["reasons"]
    assert [c["message"] for c in doc["changes"] if c["kind"] == "removed"] == [
        "removed api -> worker: orders"
    ]
    assert not any("recorded no spans" in w for w in doc["warnings"])


def test_the_work_both_recorded_is_still_compared(tmp_path: Path) -> None:
    """The worker's call to inventory took 100 times as long in the request whose API spans
    were left out: it read "no difference that counts" (exit 0), every node below the API
    left out of the comparison; the worker's part is compared with the kept request's now."""
    kept, left = Topology("order-7"), Topology("order-8")
    order(kept, wait_ms=5)
    kept.http(kept.spans[-1], "inventory", "/stock", 10, 16)
    sampled_out(left)
    left.http(left.spans[-1], "inventory", "/stock", 2, 302)
    left.spans[0] = replace(left.spans[0], end_unix_nano=left.spans[0].start_unix_nano + 305 * MS)

    for a, b in (("order-7", "order-8"), ("order-8", "order-7")):
        code, doc = diff(tmp_path / a, kept, left, a=a, b=b)

        timing = [c["message"] for c in doc["changes"] if c["kind"] == "timing"]
        assert (code, doc["reasons"]) == (1, ["timing"])
        assert [m.split(":")[0] for m in timing] == ["worker -> inventory"]
        assert not any(c["kind"] in ("added", "removed") for c in doc["changes"])
        assert doc["headline"].startswith("time not attributed: ")


def test_the_same_work_is_not_a_change_for_the_critical_path_it_is_not_on(
    tmp_path: Path,
) -> None:
    """In the kept request the API answered after its consumer was done, which was not on the
    critical path; in the sampled-out one the consumer is all there is, and on it: the same
    10 ms of work is no timing change."""
    kept, left = Topology("order-9"), Topology("order-10")
    api = kept.span("api", "POST /order/{n}", "SERVER", 0, 40, attrs={"http.route": "/order/{n}"})
    publish = kept.publish(api, "orders", 1, 3, system="rabbitmq")
    kept.consume("worker", "orders", 5, 15, publish, system="rabbitmq")
    sampled_out(left)

    code, doc = diff(tmp_path, kept, left, a="order-9", b="order-10")

    assert (code, [c["message"] for c in doc["changes"]]) == (0, [])


def test_a_callers_error_is_not_compared_with_a_request_that_lost_the_caller(
    tmp_path: Path,
) -> None:
    """The gateway's client gave up on orders (its span failed: a timeout) while orders
    answered; the other request has orders' span alone, its caller left out: orders did not
    stop failing, nothing recorded the caller there."""
    kept, left = Topology("order-11"), Topology("order-12")
    gateway = kept.span("gateway", "POST /checkout", "SERVER", 0, 30)
    client = kept.span(
        "gateway", "POST /order", "CLIENT", 1, 20, gateway, status="ERROR", message="timed out",
        attrs={"http.request.method": "POST", "url.path": "/order"},
    )  # fmt: skip
    kept.span("orders", "POST /order", "SERVER", 2, 25, client, attrs={"http.route": "/order"})
    left.span("orders", "POST /order", "SERVER", 0, 23, parent_span_id=UNSENT_PRODUCER,
              attrs={"http.route": "/order"})  # fmt: skip

    code, doc = diff(tmp_path, kept, left, a="order-11", b="order-12")

    assert (code, [c["message"] for c in doc["changes"]]) == (0, [])
