"""tracekit's options: arguments of ``tracekit.init()``, each with a ``TRACEKIT_*`` variable.

Precedence: an explicit keyword argument, then the environment variable, then the default. The
standard ``OTEL_*`` variables are read by the OpenTelemetry SDK itself (endpoint, headers, sampler,
resource attributes); ``OTEL_SERVICE_NAME`` also names the service when nothing else does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

EXPORTERS = ("otlp", "store", "console", "none")
MODES = ("full", "correlation")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _bool(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _int(value: str) -> int:
    return int(value.strip())


@dataclass(frozen=True)
class Options:
    """Every setting of ``tracekit.init()``; see docs/configuration.md for the table."""

    service_name: str = field(default="unknown_service", metadata={"env": "TRACEKIT_SERVICE_NAME"})
    service_version: str | None = field(default=None, metadata={"env": "TRACEKIT_SERVICE_VERSION"})
    environment: str | None = field(default=None, metadata={"env": "TRACEKIT_ENVIRONMENT"})
    exporter: str = field(default="otlp", metadata={"env": "TRACEKIT_EXPORTER"})
    store: str | None = field(default=None, metadata={"env": "TRACEKIT_STORE"})
    mode: str = field(default="full", metadata={"env": "TRACEKIT_MODE"})
    correlation_headers: tuple[str, ...] = field(
        default=("X-Correlation-ID", "X-Request-ID"),
        metadata={"env": "TRACEKIT_CORRELATION_HEADERS", "parse": _split},
    )
    response_header: str = field(
        default="X-Correlation-ID", metadata={"env": "TRACEKIT_RESPONSE_HEADER"}
    )
    public_endpoint: bool = field(
        default=False, metadata={"env": "TRACEKIT_PUBLIC_ENDPOINT", "parse": _bool}
    )
    excluded_urls: tuple[str, ...] = field(
        default=(), metadata={"env": "TRACEKIT_EXCLUDED_URLS", "parse": _split}
    )
    instrument: tuple[str, ...] = field(
        default=("all",), metadata={"env": "TRACEKIT_INSTRUMENT", "parse": _split}
    )
    disabled_instrumentations: tuple[str, ...] = field(
        default=(), metadata={"env": "TRACEKIT_DISABLED_INSTRUMENTATIONS", "parse": _split}
    )
    logs: bool = field(default=True, metadata={"env": "TRACEKIT_LOGS", "parse": _bool})
    export_logs: bool = field(
        default=True, metadata={"env": "TRACEKIT_EXPORT_LOGS", "parse": _bool}
    )
    metrics_port: int = field(
        default=9464, metadata={"env": "TRACEKIT_METRICS_PORT", "parse": _int}
    )
    message_correlation_property: str = field(
        default="correlation_id", metadata={"env": "TRACEKIT_MESSAGE_CORRELATION_PROPERTY"}
    )
    redis_pubsub_channels: tuple[str, ...] = field(
        default=(), metadata={"env": "TRACEKIT_REDIS_PUBSUB_CHANNELS", "parse": _split}
    )

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(
                f"exporter must be one of {', '.join(EXPORTERS)}, not {self.exporter!r}"
            )
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    @property
    def correlation_only(self) -> bool:
        """True in correlation-only mode: IDs in context and logs, no spans, no metrics."""
        return self.mode == "correlation"


def env_var(name: str) -> str:
    """The environment variable that sets option ``name``."""
    return str(Options.__dataclass_fields__[name].metadata["env"])


def resolve(
    service_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Options:
    """Build ``Options`` from keyword arguments, then ``TRACEKIT_*`` variables, then defaults."""
    environ = os.environ if environ is None else environ
    unknown = set(options) - {f.name for f in fields(Options)}
    if unknown:
        raise TypeError(f"unknown tracekit option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for option in fields(Options):
        if option.name in options:
            value = options[option.name]
            values[option.name] = tuple(value) if isinstance(value, list) else value
        elif option.metadata["env"] in environ:
            parse: Callable[[str], Any] = option.metadata.get("parse", str)
            values[option.name] = _parse_env(option.metadata["env"], environ, parse)
    name = service_name or values.get("service_name") or environ.get("OTEL_SERVICE_NAME")
    if name:
        values["service_name"] = name
    return Options(**values)


def _parse_env(name: str, environ: Mapping[str, str], parse: Callable[[str], Any]) -> Any:
    try:
        return parse(environ[name])
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
