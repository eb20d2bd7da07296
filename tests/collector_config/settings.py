"""The settings each component of tracekit's configs takes, as the collector names them.

The collector decodes a component's settings into its config struct and refuses to start on a
key the struct does not have (``'processors' error reading configuration for "memory_limiter":
decoding failed ... has invalid keys: limit_percent``). These catalogues are written from the
config structs (``mapstructure`` tags) and READMEs of opentelemetry-collector (core components,
``exporterhelper``, ``confighttp``, ``configgrpc``, ``configtls``) and
opentelemetry-collector-contrib; a component missing here must be looked up and added on purpose,
as in ``habits.CONTRIB``.

A catalogue maps each key to the catalogue of its own settings, or to None where its value is not
checked here (a scalar, a list of values, a block of another project's format such as a
Prometheus scrape config). A list of mappings is checked item by item.
"""

from __future__ import annotations

from typing import Any

from .otelcol import Config, component_type

Keys = dict[str, "Keys | None"]


def _any(*names: str) -> Keys:
    """Keys whose values are not checked."""
    return dict.fromkeys(names)


TLS_CLIENT = _any(
    "insecure", "insecure_skip_verify", "ca_file", "ca_pem", "cert_file", "cert_pem",
    "key_file", "key_pem", "server_name_override", "min_version", "max_version",
    "include_system_ca_certs_pool", "reload_interval", "cipher_suites", "curve_preferences",
)  # fmt: skip
SENDING_QUEUE = _any(
    "enabled", "num_consumers", "queue_size", "sizer", "blocking", "block_on_overflow",
    "storage", "wait_for_result", "batch",
)  # fmt: skip
RETRY = _any(
    "enabled", "initial_interval", "randomization_factor", "multiplier", "max_interval",
    "max_elapsed_time",
)  # fmt: skip
HTTP_CLIENT: Keys = {
    **_any("endpoint", "proxy_url", "headers", "timeout", "compression", "compression_params",
           "auth", "read_buffer_size", "write_buffer_size", "max_idle_conns",
           "max_idle_conns_per_host", "max_conns_per_host", "idle_conn_timeout",
           "disable_keep_alives", "http2_read_idle_timeout", "http2_ping_timeout", "cookies"),
    "tls": TLS_CLIENT,
}  # fmt: skip
GRPC_CLIENT: Keys = {
    **_any("endpoint", "compression", "headers", "auth", "balancer_name", "keepalive",
           "read_buffer_size", "write_buffer_size", "wait_for_ready", "authority", "timeout"),
    "tls": TLS_CLIENT,
}  # fmt: skip
QUEUED = {"sending_queue": SENDING_QUEUE, "retry_on_failure": RETRY}
AWS_SESSION = _any(
    "region", "endpoint", "role_arn", "external_id", "profile", "shared_credentials_file",
    "certificate_file_path", "local_mode", "no_verify_ssl", "num_workers", "proxy_address",
    "request_timeout_seconds", "max_retries", "resource_arn", "imds_retries", "middleware",
)  # fmt: skip
HTTP_SERVER = _any(
    "endpoint", "tls", "cors", "auth", "max_request_body_size", "include_metadata",
    "response_headers", "compression_algorithms", "read_timeout", "read_header_timeout",
    "write_timeout", "idle_timeout", "keepalives_enabled",
)  # fmt: skip
GRPC_SERVER = _any(
    "endpoint", "transport", "tls", "max_recv_msg_size_mib", "max_concurrent_streams",
    "read_buffer_size", "write_buffer_size", "keepalive", "auth", "include_metadata",
)  # fmt: skip

SETTINGS: dict[str, dict[str, Keys]] = {
    "extensions": {
        "health_check": {
            **HTTP_SERVER,
            **_any("path", "response_body", "check_collector_pipeline"),
        },
        "file_storage": {
            **_any(
                "directory",
                "timeout",
                "fsync",
                "create_directory",
                "directory_permissions",
                "recreate",
            ),
            "compaction": _any(
                "on_start",
                "on_rebound",
                "directory",
                "max_transaction_size",
                "rebound_needed_threshold_mib",
                "rebound_trigger_threshold_mib",
                "check_interval",
                "cleanup_on_start",
            ),
        },
        "sigv4auth": _any("region", "service", "assume_role"),
    },
    "receivers": {
        "otlp": {
            "protocols": {
                "grpc": GRPC_SERVER,
                "http": {
                    **HTTP_SERVER,
                    **_any("traces_url_path", "metrics_url_path", "logs_url_path"),
                },
            }
        },
        "prometheus": _any(
            "config",
            "target_allocator",
            "trim_metric_suffixes",
            "use_start_time_metric",
            "start_time_metric_regex",
            "report_extra_scrape_metrics",
            "api_server",
        ),
    },
    "processors": {
        "memory_limiter": _any(
            "check_interval",
            "limit_mib",
            "spike_limit_mib",
            "limit_percentage",
            "spike_limit_percentage",
            "min_gc_interval_when_soft_limited",
            "min_gc_interval_when_hard_limited",
        ),
        "batch": _any(
            "timeout",
            "send_batch_size",
            "send_batch_max_size",
            "metadata_keys",
            "metadata_cardinality_limit",
        ),
        "resourcedetection": {
            **HTTP_CLIENT,
            **_any(
                "detectors",
                "override",
                "attributes",
                "refresh_interval",
                "env",
                "system",
                "ec2",
                "ecs",
                "eks",
                "elasticbeanstalk",
                "lambda",
                "gcp",
                "azure",
                "aks",
                "consul",
                "docker",
                "heroku",
                "k8snode",
                "openshift",
                "kubeadm",
            ),
        },
        "resource": {
            "attributes": _any(
                "key",
                "value",
                "action",
                "from_attribute",
                "from_context",
                "pattern",
                "converted_type",
            )
        },
        "tail_sampling": {
            **_any(
                "decision_wait",
                "num_traces",
                "expected_new_traces_per_sec",
                "policies",
                "sample_on_first_match",
                "drop_pending_traces_on_shutdown",
                "block_on_overflow",
                "maximum_trace_size_bytes",
            ),
            "decision_cache": _any("sampled_cache_size", "non_sampled_cache_size"),
        },
    },
    "exporters": {
        "otlp": {**GRPC_CLIENT, **QUEUED},
        "otlphttp": {
            **HTTP_CLIENT,
            **QUEUED,
            **_any(
                "traces_endpoint",
                "metrics_endpoint",
                "logs_endpoint",
                "profiles_endpoint",
                "encoding",
            ),
        },
        "prometheusremotewrite": {
            **HTTP_CLIENT,
            **_any(
                "namespace",
                "external_labels",
                "remote_write_queue",
                "wal",
                "target_info",
                "export_created_metric",
                "add_metric_suffixes",
                "send_metadata",
                "max_batch_size_bytes",
                "max_batch_request_parallelism",
                "protobuf_message",
            ),
            "resource_to_telemetry_conversion": _any("enabled"),
            "retry_on_failure": RETRY,
        },
        "awsxray": {
            **AWS_SESSION,
            **_any(
                "indexed_attributes",
                "index_all_attributes",
                "aws_log_groups",
                "telemetry",
                "transit_spans_in_otlp_format",
            ),
        },
        "awscloudwatchlogs": {
            **AWS_SESSION,
            **QUEUED,
            **_any("log_group_name", "log_stream_name", "log_retention", "tags", "raw_log"),
        },
        "loadbalancing": {
            **QUEUED,
            **_any("routing_key", "routing_attributes", "timeout"),
            "protocol": {"otlp": {**GRPC_CLIENT, **QUEUED}},
            "resolver": {
                **_any("static", "k8s", "aws_cloud_map"),
                "dns": _any("hostname", "port", "interval", "timeout", "quarantine"),
            },
        },
        "debug": _any(
            "verbosity", "sampling_initial", "sampling_thereafter", "use_internal_logger"
        ),
    },
    "connectors": {
        "spanmetrics": {
            **_any(
                "dimensions",
                "exclude_dimensions",
                "dimensions_cache_size",
                "aggregation_temporality",
                "metrics_flush_interval",
                "metrics_expiration",
                "namespace",
                "resource_metrics_key_attributes",
                "resource_metrics_cache_size",
                "events",
                "include_instrumentation_scope",
                "aggregation_cardinality_limit",
                "calls_dimensions",
                "histogram_dimensions",
                "add_resource_attributes",
            ),
            "histogram": {
                **_any("disable", "unit", "dimensions"),
                "explicit": _any("buckets"),
                "exponential": _any("max_size"),
            },
            "exemplars": _any("enabled", "max_per_data_point"),
        },
        "servicegraph": {
            **_any(
                "latency_histogram_buckets",
                "exponential_histogram_max_size",
                "dimensions",
                "cache_loop",
                "store_expiration_loop",
                "virtual_node_peer_attributes",
                "virtual_node_extra_label",
                "metrics_flush_interval",
                "database_name_attributes",
            ),
            "store": _any("max_items", "ttl"),
        },
    },
}


def settings_problems(config: Config) -> list[str]:
    """Keys a component does not take, and components this catalogue does not know."""
    problems = []
    for section, known in SETTINGS.items():
        for cid, settings in (config.get(section) or {}).items():
            keys = known.get(component_type(cid))
            if keys is None:
                problems.append(f"{section[:-1]} {cid!r}: no settings catalogue; add one")
            else:
                problems += _unknown_keys(settings, keys, cid)
    return problems


def _unknown_keys(value: Any, keys: Keys, where: str) -> list[str]:
    if isinstance(value, list):
        return [
            p for i, item in enumerate(value) for p in _unknown_keys(item, keys, f"{where}[{i}]")
        ]
    if not isinstance(value, dict):
        return []
    problems = []
    for key, inner in value.items():
        if key not in keys:
            problems.append(f"{where}: invalid key {key!r}")
        elif (inner_keys := keys[key]) is not None:
            problems += _unknown_keys(inner, inner_keys, f"{where}.{key}")
    return problems
