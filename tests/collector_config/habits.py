"""Production habits asked of every tracekit collector config, beyond what the collector checks.

Component catalogues are written from the otelcol-contrib and AWS Distro for OpenTelemetry
component lists; a component missing here must be looked up and added on purpose.
"""

from __future__ import annotations

from .otelcol import (
    ENV_RE,
    Config,
    component_type,
    defined,
    extension_references,
    host_of,
    pipelines,
    placeholders,
    used,
)

CONTRIB: dict[str, set[str]] = {
    "receivers": {"otlp", "prometheus"},
    "processors": {"memory_limiter", "batch", "resourcedetection", "tail_sampling", "resource"},
    "exporters": {
        "otlp", "otlphttp", "prometheusremotewrite", "awsxray", "awsemf",
        "awscloudwatchlogs", "loadbalancing", "debug",
    },
    "connectors": {"spanmetrics", "servicegraph", "forward"},
    "extensions": {"health_check", "file_storage", "sigv4auth", "pprof", "zpages"},
}  # fmt: skip

# The AWS Distro ships a subset; file_storage and awscloudwatchlogs arrived in ADOT v0.34.0.
ADOT: dict[str, set[str]] = {
    "receivers": {"otlp", "prometheus"},
    "processors": {"memory_limiter", "batch", "resourcedetection", "resource"},
    "exporters": {
        "otlp",
        "otlphttp",
        "prometheusremotewrite",
        "awsxray",
        "awsemf",
        "awscloudwatchlogs",
        "debug",
    },
    "connectors": set(),
    "extensions": {"health_check", "file_storage", "sigv4auth", "pprof", "zpages"},
}

REMOVED: dict[tuple[str, str], str] = {
    ("exporters", "logging"): "the logging exporter was removed; use debug",
    ("exporters", "loki"): "the loki exporter was removed; send OTLP to Loki's /otlp endpoint",
    ("exporters", "jaeger"): "the jaeger exporter was removed; Jaeger ingests OTLP",
    (
        "extensions",
        "memory_ballast",
    ): "the memory ballast was removed; use memory_limiter (and GOMEMLIMIT)",
    (
        "processors",
        "spanmetrics",
    ): "the spanmetrics processor was removed; use the spanmetrics connector",
    (
        "processors",
        "servicegraph",
    ): "the servicegraph processor was replaced by the servicegraph connector",
}

# Exporters whose sending queue can be persisted through a storage extension.
QUEUE_EXPORTERS = {"otlp", "otlphttp", "loadbalancing", "awscloudwatchlogs"}
# prometheusremotewrite has no sending_queue, and its write-ahead log grows on disk without bound
# through an outage (past a pod's emptyDir limit, the kubelet evicts the app with it). Its series
# are cumulative: the first write after an outage carries every count. It retries from memory.
MEMORY_EXPORTERS = {"prometheusremotewrite"}
# No queue setting exists for these; the collector rejects the key. Documented in the README.
UNQUEUEABLE = {"awsxray"}
ALWAYS_REMOTE = {"awsxray", "awsemf", "awscloudwatchlogs", "loadbalancing"}
LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def memory_limiter_problems(config: Config) -> list[str]:
    """memory_limiter must be the first processor of every pipeline, so it refuses data early."""
    return [
        f"pipeline {name!r}: memory_limiter is not the first processor"
        for name, pipe in pipelines(config).items()
        if [component_type(p) for p in (pipe.get("processors") or [])][:1] != ["memory_limiter"]
    ]


def batch_problems(config: Config) -> list[str]:
    """batch, where used, comes last: after limiting, enrichment and sampling."""
    problems = []
    for name, pipe in pipelines(config).items():
        types = [component_type(p) for p in pipe.get("processors") or []]
        if "batch" in types and types[-1] != "batch":
            problems.append(f"pipeline {name!r}: batch is not the last processor")
    return problems


def removed_problems(config: Config) -> list[str]:
    """Components and keys the collector no longer has."""
    problems = [
        f"{cid!r}: {why}"
        for (section, kind), why in REMOVED.items()
        for cid in defined(config, section)
        if component_type(cid) == kind
    ]
    for cid, settings in (config.get("processors") or {}).items():
        if component_type(cid) == "memory_limiter" and "ballast_size_mib" in (settings or {}):
            problems.append(f"{cid!r}: ballast_size_mib went away with the ballast")
    return problems


def catalogue_problems(config: Config, catalogue: dict[str, set[str]], name: str) -> list[str]:
    """Components not shipped by the distribution the config is meant for."""
    return [
        f"{section[:-1]} {cid!r} is not in {name}"
        for section in catalogue
        for cid in sorted(defined(config, section))
        if component_type(cid) not in catalogue[section]
    ]


def placeholder_problems(config: Config) -> list[str]:
    """Only ``${env:VAR}`` / ``${env:VAR:-default}``: bare ``${VAR}`` is deprecated."""
    return [
        f"placeholder ${{{inner}}} is not ${{env:VAR}}"
        for inner in placeholders(config)
        if not ENV_RE.fullmatch(inner)
    ]


def persistence_problems(config: Config) -> list[str]:
    """Every exporter to a remote backend buffers on disk and retries."""
    storages = {e for e in defined(config, "extensions") if component_type(e) == "file_storage"}
    problems = []
    for cid in sorted(used(config, "exporters") & defined(config, "exporters")):
        settings = config["exporters"][cid] or {}
        if is_remote(cid, settings):
            problems += _exporter_persistence(cid, settings, storages)
    return problems


def is_remote(cid: str, settings: Config) -> bool:
    """True unless the exporter talks to this machine (loopback)."""
    if component_type(cid) in ALWAYS_REMOTE:
        return True
    return host_of(str(settings.get("endpoint", ""))) not in LOOPBACK


def _exporter_persistence(cid: str, settings: Config, storages: set[str]) -> list[str]:
    kind = component_type(cid)
    if kind in UNQUEUEABLE:
        return []
    if kind in MEMORY_EXPORTERS:
        if "wal" in settings:
            return [f"exporter {cid!r}: its write-ahead log grows without bound"]
        persisted = True
    elif kind in QUEUE_EXPORTERS:
        queue = settings.get("sending_queue") or {}
        persisted = queue.get("enabled", True) is not False and queue.get("storage") in storages
    else:
        return [f"exporter {cid!r}: unknown persistence story, classify it in habits.py"]
    problems = [] if persisted else [f"exporter {cid!r}: queue is not persisted to file_storage"]
    if (settings.get("retry_on_failure") or {}).get("enabled") is not True:
        problems.append(f"exporter {cid!r}: retry_on_failure is not enabled")
    return problems


def storage_references(config: Config) -> set[str]:
    """Extensions used as queue storage."""
    return {ext for _, ext in extension_references(config) if component_type(ext) == "file_storage"}
