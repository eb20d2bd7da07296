"""The label values a prometheus-client registry's samples carry (tests/http)."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families


def routes_labelled(registry: CollectorRegistry) -> set[str]:
    """Every ``http_route`` value among ``registry``'s samples: the routes the HTTP server
    metrics keep a series of (``_unmatched`` for requests no route matched)."""
    return {
        sample.labels["http_route"]
        for metric in registry.collect()
        for sample in metric.samples
        if "http_route" in sample.labels
    }


def served_counts(url: str, method: str) -> dict[tuple[str, str], float]:
    """``(http_response_status_code, error_type)`` -> requests of ``method`` counted, read from
    the ``/metrics`` page under ``url`` (a server's process of its own)."""
    exposition = httpx.get(url + "/metrics", timeout=10).text
    return {
        (sample.labels["http_response_status_code"], sample.labels["error_type"]): sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "http_server_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels["http_request_method"] == method
    }
