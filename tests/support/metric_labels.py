"""The label values a prometheus-client registry's samples carry (tests/http)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


def routes_labelled(registry: CollectorRegistry) -> set[str]:
    """Every ``http_route`` value among ``registry``'s samples: the routes the HTTP server
    metrics keep a series of (``_unmatched`` for requests no route matched)."""
    return {
        sample.labels["http_route"]
        for metric in registry.collect()
        for sample in metric.samples
        if "http_route" in sample.labels
    }
