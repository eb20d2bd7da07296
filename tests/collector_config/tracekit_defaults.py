"""tracekit's defaults that the collector configs and manifests must match, in one place.

Each value is read from the library (or the OpenTelemetry SDK it configures) where the library
exposes it, so a change there makes these tests point at every config that needs to follow.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import DEFAULT_ENDPOINT

from tracekit.config import Options, env_var
from tracekit.receiver import DEFAULT_HOST, DEFAULT_PORT
from tracekit.records import CORRELATION_ATTRIBUTE

# The app's OTLP/HTTP exporter target when OTEL_EXPORTER_OTLP_ENDPOINT is unset.
APP_OTLP_ENDPOINT = DEFAULT_ENDPOINT.rstrip("/")
OTLP_HTTP_PORT = urlsplit(DEFAULT_ENDPOINT).port or 4318
# The OTLP/gRPC port is a protocol convention (no Python default to read it from).
OTLP_GRPC_PORT = 4317

METRICS_PORT = Options().metrics_port
METRICS_PORT_ENV = env_var("metrics_port")
METRICS_PATH = "/metrics"

CORRELATION_ATTR = CORRELATION_ATTRIBUTE

# `tracekit collector` (the embedded OTLP/HTTP receiver) binds here unless told otherwise.
TRACEKIT_COLLECTOR_HOST = DEFAULT_HOST
TRACEKIT_COLLECTOR_PORT = DEFAULT_PORT
