"""A structured log body holding a NaN or infinite double (a ratio of 0 / 0, a peak of inf), sent
by OpenTelemetry Python's OTLP/HTTP log exporter: its stored text is JSON, the double written as
OTLP/JSON (and the store, for attributes) writes it."""

from __future__ import annotations

import json
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

from tracekit.receiver import Receiver
from tracekit.store import Store

BODY = {"ratio": float("nan"), "peak": float("inf"), "floor": float("-inf"), "mean": 1.5}
STORED = {"ratio": "NaN", "peak": "Infinity", "floor": "-Infinity", "mean": 1.5}


def strict_json(text: str) -> Any:
    """``text`` read as JSON proper (Python's reader takes NaN; JavaScript's, Go's do not)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_in_a_structured_log_body_is_stored_as_json(
    receiver: Receiver, reader: Store
) -> None:
    """Before, the body was stored as ``{"ratio": NaN, "peak": Infinity, ...}``, which
    ``tracekit trace --format json`` handed on as is: JSON.parse and Go's decoder refuse it,
    jq reads the NaN as null."""
    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs")
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("test").emit(
        body=BODY, timestamp=time.time_ns(), attributes={"correlation.id": "c-nan-body"}
    )
    provider.shutdown()
    (stored,) = reader.logs_by_correlation_id("c-nan-body")
    assert strict_json(stored.body) == STORED
