"""A stand-in for an OpenTelemetry Collector's Prometheus series, served over HTTP.

No collector binary runs in these tests. This serves the series its servicegraph and spanmetrics
connectors and its own telemetry expose, under the names and labels tests/dashboards/
metric_contract.py holds from their documentation, as current releases spell them (``_total``
on counters). Its exporter ``otlphttp/tracekit`` sends spans and log records, as in
collector-config/local.yaml: one exporter in two pipelines; ``prometheusremotewrite`` sends
metric points. Counts grow by ten at each scrape
while ``busy`` and then hold, as a collector's counters do once its traffic stops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXPORTER = 'exporter="otlphttp/tracekit"'
_METRICS = ('exporter="prometheusremotewrite"', "metric_points")


class CollectorSeries:
    """The series, counted up at each scrape while ``busy``."""

    def __init__(self) -> None:
        self.busy = True
        self.count = 0
        # the edge shop -> payments has no failed series until it has failed (as the connector
        # counts: a series from an edge's first failure)
        self.payments_failed = 0

    def exposition(self) -> str:
        """The text a scrape gets."""
        self.count += 10 if self.busy else 0
        n = self.count
        lines = [*_service_graph(n), *_span_metrics(n)]
        payments = 'client="shop", server="payments"'
        lines.append(f"traces_service_graph_request_total{{{payments}}} {n}")
        lines += _histogram("traces_service_graph_request_server_seconds", payments, n, (0.1, 1))
        if self.payments_failed:
            lines.append(
                f"traces_service_graph_request_failed_total{{{payments}}} {self.payments_failed}"
            )
        for item in ("spans", "metric_points", "log_records"):
            for counted in ("accepted", "refused"):
                lines.append(f'otelcol_receiver_{counted}_{item}_total{{receiver="otlp"}} {n}')
        for exporter, item in (*((EXPORTER, "spans"), (EXPORTER, "log_records")), _METRICS):
            for counted in ("sent", "send_failed", "enqueue_failed"):
                lines.append(f"otelcol_exporter_{counted}_{item}_total{{{exporter}}} {n}")
        lines += [
            f"otelcol_connector_servicegraph_{name}_total {n}"
            for name in ("expired_edges", "dropped_spans")
        ]
        lines += [
            f'otelcol_exporter_queue_size{{{EXPORTER}, data_type="traces"}} 0',
            f'otelcol_exporter_queue_capacity{{{EXPORTER}, data_type="traces"}} 1000',
            "otelcol_process_memory_rss_bytes 50000000",
            f"otelcol_process_cpu_seconds_total {n / 100}",
        ]
        return "\n".join(lines) + "\n"


def _service_graph(n: int) -> list[str]:
    lines = []
    for connection in ("", "messaging_system"):
        edge = (
            f'client="shop", server="orders", connection_type="{connection}",'
            ' client_messaging_system="kafka"'
        )
        lines += [
            f"traces_service_graph_request_total{{{edge}}} {n}",
            f"traces_service_graph_request_failed_total{{{edge}}} {n // 10}",
            *_histogram("traces_service_graph_request_server_seconds", edge, n, (0.1, 1)),
            *_histogram("traces_service_graph_request_client_seconds", edge, n, (0.1, 1)),
        ]
    return lines


def _span_metrics(n: int) -> list[str]:
    lines = []
    for kind in ("SERVER", "PRODUCER"):
        span = (
            f'service_name="shop", span_name="GET /orders", span_kind="SPAN_KIND_{kind}",'
            ' status_code="STATUS_CODE_UNSET", messaging_destination_name="orders"'
        )
        lines += [
            f"traces_span_metrics_calls_total{{{span}}} {n}",
            *_histogram("traces_span_metrics_duration_milliseconds", span, n, (100, 1000)),
        ]
    return lines


def _histogram(name: str, labels: str, count: int, bounds: tuple[float, float]) -> list[str]:
    """Half of ``count`` in the first bucket, all of it by the second."""
    return [
        f'{name}_bucket{{{labels}, le="{bounds[0]}"}} {count // 2}',
        f'{name}_bucket{{{labels}, le="{bounds[1]}"}} {count}',
        f'{name}_bucket{{{labels}, le="+Inf"}} {count}',
        f"{name}_sum{{{labels}}} {count * 0.2}",
        f"{name}_count{{{labels}}} {count}",
    ]


@contextmanager
def serving(series: CollectorSeries) -> Iterator[int]:
    """Serve ``series`` on a free loopback port; yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = series.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # no line per scrape on stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
