"""Reconstruct and render a 10,000-span request (target: under 1 s for each view).

python -m bench.trace_render
"""

from __future__ import annotations

import json
import statistics
import time

from tracekit.diff.pair import compare_paths
from tracekit.path import build_path
from tracekit.records import SpanRecord

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def ten_thousand_spans() -> list[SpanRecord]:
    """A root calling 1,999 services in turn, each doing 3 steps (1 + 1999 * 5 + 4 spans)."""
    trace = "ab" * 16
    ids = iter(range(1, 20_000))
    root = SpanRecord(trace, f"{next(ids):016x}", None, "gateway", "POST /bulk", "SERVER",
                      T0, T0 + 20_000 * MS, attributes={"correlation.id": "bench-10k"})  # fmt: skip
    spans = [root]
    for i in range(1999):
        start = T0 + (5 + 10 * i) * MS
        client = SpanRecord(trace, f"{next(ids):016x}", root.span_id, "gateway", f"GET /items/{i}",
                            "CLIENT", start, start + 9 * MS)  # fmt: skip
        server = SpanRecord(trace, f"{next(ids):016x}", client.span_id, f"svc-{i % 20}",
                            f"GET /items/{i}", "SERVER", start + MS, start + 8 * MS)  # fmt: skip
        spans += [client, server]
        for j in range(3):
            s = start + (2 + 2 * j) * MS
            spans.append(SpanRecord(trace, f"{next(ids):016x}", server.span_id, server.service,
                                    f"step {j}", "INTERNAL", s, s + MS))  # fmt: skip
    for k in range(4):
        parent = spans[-1].span_id if k else root.span_id
        spans.append(SpanRecord(trace, f"{next(ids):016x}", parent,
                                "gateway", f"flush {k}", "INTERNAL",
                                T0 + (19_995 + k) * MS, T0 + 19_999 * MS))  # fmt: skip
    return spans


def chain_across_two_hosts() -> list[SpanRecord]:
    """10,000 spans calling one another in turn, between two hosts (client then server, each
    host's server calling the other host): every call enters another clock."""
    trace = "cd" * 16
    hosts = [{"service.name": "ping", "host.name": "a"}, {"service.name": "pong", "host.name": "b"}]
    spans = [SpanRecord(trace, f"{1:016x}", None, "ping", "GET /0", "SERVER", T0,
                        T0 + 20_000 * MS, attributes={"correlation.id": "bench-chain"},
                        resource=hosts[0])]  # fmt: skip
    for i in range(1, 10_000):
        host = hosts[(i // 2) % 2]
        spans.append(SpanRecord(trace, f"{i + 1:016x}", spans[-1].span_id, host["service.name"],
                                f"GET /{i}", "CLIENT" if i % 2 else "SERVER", T0 + i * MS,
                                T0 + (20_000 - i) * MS, resource=host))  # fmt: skip
    return spans


def retried_calls(trace: str) -> list[SpanRecord]:
    """A batch job's server span calling 2,500 items in turn, each answered 503 and sent again
    (``http.request.resend_count``), with each call's server: 10,001 spans, 5,000 CLIENT spans
    under one. Finding the request sent before each resend took the diff 31 s when it scanned
    the siblings for each."""
    ids = iter(range(1, 20_000))
    cid = {"correlation.id": f"bench-{trace[:4]}"}
    root = SpanRecord(trace, f"{next(ids):016x}", None, "batch", "POST /run", "SERVER", T0,
                      T0 + 15_001 * MS, attributes=cid)  # fmt: skip
    spans = [root]
    for i in range(5_000):
        start, resend = T0 + (3 * i + 1) * MS, i % 2
        attributes: dict[str, object] = {
            "http.request.method": "GET",
            "url.path": f"/items/{i // 2}",
            "http.response.status_code": 200 if resend else 503,
        }
        if resend:
            attributes["http.request.resend_count"] = 1
        client = SpanRecord(trace, f"{next(ids):016x}", root.span_id, "batch", "GET", "CLIENT",
                            start, start + 2 * MS, attributes=attributes)  # fmt: skip
        spans += [client, SpanRecord(trace, f"{next(ids):016x}", client.span_id, "items",
                                     "GET /items/{id}", "SERVER", start + MS // 2,
                                     start + 3 * MS // 2)]  # fmt: skip
    return spans


def best_of(runs: int, work: object) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), max(samples)


def main() -> None:
    from tracekit_cli.render import rich_view
    from tracekit_cli.render.text import render_path

    spans = ten_thousand_spans()
    path = build_path("bench-10k", spans)
    assert path is not None and len(path.spans) == 10_000
    chain = chain_across_two_hosts()

    retried = [retried_calls("ef" * 16), retried_calls("01" * 16)]

    def rich() -> None:
        rich_view.format_path(path, 120, color=True)

    def diff_retried() -> None:
        a, b = (build_path(f"bench-{s[0].trace_id[:4]}", s) for s in retried)
        assert a is not None and b is not None
        compare_paths(a, b)

    rows = [
        ("reconstruct (build_path)", best_of(5, lambda: build_path("bench-10k", spans))),
        ("reconstruct chain, 2 hosts", best_of(5, lambda: build_path("bench-chain", chain))),
        ("render --format text", best_of(5, lambda: render_path(path, 120))),
        ("render --format json", best_of(5, lambda: json.dumps(path.to_json()))),
        ("render --format rich", best_of(3, rich)),
        ("diff, 2,500 calls sent again", best_of(3, diff_retried)),
    ]
    print("10,000-span request (target < 1000 ms per view, reconstruct included)\n")
    print(f"{'step':<28} {'median ms':>10} {'max ms':>8}")
    for name, (median, worst) in rows:
        print(f"{name:<28} {median * 1000:>10.1f} {worst * 1000:>8.1f}")


if __name__ == "__main__":
    main()
