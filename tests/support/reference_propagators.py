"""OpenTelemetry's reference propagators, by OTEL_PROPAGATORS name: the other end of every
trace-header format tracekit reads and writes."""

from __future__ import annotations

from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

REFERENCES: dict[str, TextMapPropagator] = {
    "tracecontext": TraceContextTextMapPropagator(),
    "b3": B3SingleFormat(),
    "b3multi": B3MultiFormat(),
    "jaeger": JaegerPropagator(),
    "xray": AwsXRayPropagator(),
}

# B3 multi headers' names as each family of propagators writes them into a message's headers, a
# case-sensitive map: a test parametrized with ``B3_SPELLINGS`` reads a producer of each.
B3_SPELLINGS = {
    "java": ("X-B3-TraceId", "X-B3-SpanId", "X-B3-Sampled"),  # OpenTelemetry Java, .NET, Brave
    "python": ("x-b3-traceid", "x-b3-spanid", "x-b3-sampled"),  # Python, JS, Go, and tracekit
}
