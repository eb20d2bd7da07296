"""The demo's own requests, run for real, read with the right critical path.

``tracekit demo``'s topology (eight processes, real HTTP between them, the embedded SQLite queue,
telemetry written into a real store) sends a bulk checkout, whose third pricing replica is slow,
and plain ones. Fulfilment calls inventory and waits for it, then publishes pricing.1..3 one after
the other; the aggregator gathers the three replies in one batch span (a new trace, linked to
them). What the request's end waited for is therefore known from the topology, except which
finishes last: the aggregator's work, or the slow replica's handler, whose reply call can return
after the aggregator is done.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path as FilePath

import pytest
from click.testing import CliRunner

from tracekit.path import Path, PathSpan, reconstruct
from tracekit.store import Store
from tracekit_cli.demo.topology import SentRequest, Topology
from tracekit_cli.main import cli

NUMBERS = (0, 1, 2, 3)  # 1 is a bulk order (slow pricing replica 3); none is the failing SKU


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FilePath, list[SentRequest]]]:
    store_path = tmp_path_factory.mktemp("demo") / "demo.db"
    with Topology(store_path, queue="embedded") as topology:
        topology.start()
        sent = []
        for number in NUMBERS:
            sent.append(topology.send(number))
            time.sleep(0.05)
        assert topology.wait_until_idle(timeout=30)
    assert [(r.status, r.should_fail) for r in sent] == [(202, False)] * len(NUMBERS)
    yield store_path, sent


def path_of(store_path: FilePath, request: SentRequest) -> Path:
    assert request.correlation_id
    with Store(store_path) as store:
        path = reconstruct(store, request.correlation_id)
    assert path is not None
    return path


def spans(path: Path, service: str, name: str) -> list[PathSpan]:
    return [s for s in path.spans if s.service == service and s.record.name.startswith(name)]


def descends_from(span: PathSpan, ancestor: PathSpan) -> bool:
    node: PathSpan | None = span
    while node is not None and node is not ancestor:
        node = node.parent
    return node is ancestor


def destination(span: PathSpan) -> object:
    return span.record.attributes.get("messaging.destination.name")


def test_bulk_checkout_waits_for_inventory_and_the_slow_replica_only(
    demo: tuple[FilePath, list[SentRequest]],
) -> None:
    store_path, sent = demo
    bulk = next(r for r in sent if r.should_be_slow)
    path = path_of(store_path, bulk)
    critical = path.critical_span_ids()

    def on(span: PathSpan) -> bool:
        return span.record.span_id in critical

    (get,) = [s for s in spans(path, "fulfilment", "GET") if s.record.kind == "CLIENT"]
    (stock,) = spans(path, "inventory", "GET /stock/")
    assert on(get) and on(stock), "fulfilment waited for inventory before publishing anything"
    sends = spans(path, "fulfilment", "send pricing.")
    assert len(sends) == 3 and all(on(s) for s in sends), "published one after the other"
    pricing = {destination(s): s for s in spans(path, "pricing", "process pricing.")}
    assert on(pricing["pricing.3"])
    quick = [pricing["pricing.1"], pricing["pricing.2"]]
    assert not any(on(s) for s in quick), "nobody waited for the quick replicas"
    assert not any(on(c) for s in quick for c in s.children), "nor for their replies"
    (gather,) = spans(path, "aggregator", "process pricing.replies")
    assert gather.parent is not None and gather.parent.parent is pricing["pricing.3"]
    # the batch is on the path when its work ended last; when the slow replica's reply call
    # returns after the aggregator already finished, the request ends in pricing.3 instead
    end = path.request_end()
    assert end is not None and on(end)
    assert on(gather) == descends_from(end, gather)
    assert descends_from(end, pricing["pricing.3"])
    total = sum(s.critical_ns + s.critical_wait_ns for s in path.spans)
    assert total / 1e6 == pytest.approx(path.duration_ms)


def test_every_checkout_has_one_pricing_reply_on_its_path(
    demo: tuple[FilePath, list[SentRequest]],
) -> None:
    store_path, sent = demo
    for request in sent:
        path = path_of(store_path, request)
        critical = path.critical_span_ids()
        on_path = [s for s in spans(path, "pricing", "process ") if s.record.span_id in critical]
        assert len(on_path) == 1, request
        (stock,) = spans(path, "inventory", "GET /stock/")
        assert stock.record.span_id in critical, request
        # the batch span hangs under one of the replies it links to
        (gather,) = spans(path, "aggregator", "process pricing.replies")
        linked = {link.span_id for link in gather.record.links}
        assert gather.parent is not None and gather.parent.record.span_id in linked


def test_text_view_of_the_bulk_checkout(demo: tuple[FilePath, list[SentRequest]]) -> None:
    store_path, sent = demo
    bulk = next(r for r in sent if r.should_be_slow)
    assert bulk.correlation_id
    result = CliRunner().invoke(
        cli, ["trace", bulk.correlation_id, "--store", str(store_path), "--format", "text"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    row = re.compile(r"^ *\+[\d.]+ m?s +[\d.]+ m?s ([* ]) (.*?) +\|[^|]*\|$", re.MULTILINE)
    rows = {label.strip(" |`+-"): mark for mark, label in row.findall(result.stdout)}
    assert rows["inventory: GET /stock/{sku}"] == "*"
    assert rows["pricing: process pricing.3"] == "*"
    assert rows["pricing: process pricing.1"] == rows["pricing: process pricing.2"] == " "
    assert len(re.findall(r"~ also consumed pricing\.replies from pricing", result.stdout)) == 2
    assert "* request ends here" in result.stdout
