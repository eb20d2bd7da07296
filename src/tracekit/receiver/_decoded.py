"""What a decoded OTLP request carries, independent of its wire format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tracekit.records import LogRecordData, SpanRecord
from tracekit.store._rows import SpanRows

# OTLP SpanKind and StatusCode numbers -> tracekit's names (unknown numbers: the safe default).
SPAN_KIND_NAMES = ("INTERNAL", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES = ("UNSET", "OK", "ERROR")
# Attribute values nest (arrays, key-value lists); deeper than this is refused, not recursed into.
MAX_VALUE_DEPTH = 32
UNKNOWN_SERVICE = "unknown_service"


class MalformedRequest(ValueError):
    """The payload cannot be decoded; answered with 400 and a google.rpc.Status body."""


@dataclass(slots=True)
class Decoded:
    """Records decoded from one request, plus what was rejected (for partial success)."""

    spans: list[SpanRecord] = field(default_factory=list)  # JSON: records, encoded later
    rows: SpanRows = field(default_factory=SpanRows)  # protobuf: spans decoded into rows
    logs: list[LogRecordData] = field(default_factory=list)
    rejected: int = 0
    total: int = 0
    reason: str = ""

    def reject(self, reason: str) -> None:
        """Count one record refused while the rest of the request is accepted."""
        self.rejected += 1
        self.reason = reason


def kind_name(number: int) -> str:
    """Span kind name for an OTLP SpanKind number."""
    return SPAN_KIND_NAMES[number] if 0 <= number < len(SPAN_KIND_NAMES) else "INTERNAL"


def status_name(number: int) -> str:
    """Status name for an OTLP StatusCode number."""
    return STATUS_NAMES[number] if 0 <= number < len(STATUS_NAMES) else "UNSET"


def check_id(raw: bytes, length: int, what: str) -> str | None:
    """Hex of a valid id; None for an empty or all-zero one; ``MalformedRequest`` otherwise."""
    if len(raw) != length:
        if not raw:
            return None
        raise MalformedRequest(f"{what} must be {length} bytes")
    if not any(raw):
        return None
    return raw.hex()


def service_of(resource: Mapping[str, object]) -> tuple[str, str | None]:
    """``service.name`` and ``service.version`` of a resource, with the OTel defaults."""
    name = resource.get("service.name")
    version = resource.get("service.version")
    return (
        name if isinstance(name, str) and name else UNKNOWN_SERVICE,
        version if isinstance(version, str) else None,
    )
