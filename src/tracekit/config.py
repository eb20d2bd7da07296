"""tracekit's options: arguments of ``tracekit.init()``, each with a ``TRACEKIT_*`` variable.

Precedence: an explicit keyword argument, then the environment variable, then the default. The
standard ``OTEL_*`` variables are read by the OpenTelemetry SDK itself (endpoint, headers, sampler,
resource attributes); ``OTEL_SERVICE_NAME`` (then ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``)
also names the service when nothing else does, and ``service.version`` there gives its version.

Every value is checked here, once, when the options are resolved: a bad one raises
``ConfigError`` naming the variable (and the keyword, when it came as one), so a mistake fails
``init`` instead of every request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any
from urllib.parse import unquote

__all__ = [
    "EXPORTERS",
    "MAX_PATH",
    "MAX_TEXT",
    "MODES",
    "OTLP_PROTOCOLS",
    "ConfigError",
    "Options",
    "batch_setting_error",
    "compile_excluded",
    "default_service_name",
    "env_var",
    "otlp_protocol",
    "resolve",
    "signal_exporter",
]

EXPORTERS = ("otlp", "store", "console", "none")
MODES = ("full", "correlation")
MAX_TEXT = 256
MAX_PATH = 4096
# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
# RFC 9110 field-name: a token
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers that frame the message, route it or manage its connection (RFC 9110 7.2, 7.6.1, 8;
# RFC 9112 6), lower case: servers and clients act on them, so an ID written there breaks the
# exchange (uvicorn drops a streamed response whose Content-Length is not a number).
_PROTOCOL_HEADERS = frozenset({
    "connection", "host", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade",
})  # fmt: skip


class ConfigError(ValueError):
    """An option or ``TRACEKIT_*`` variable holds a value tracekit cannot use."""


# A batch processor's parameters, as the SDK's refusals name them, and the end of the
# variable that sets each (OTEL_BSP_* for spans, OTEL_BLRP_* for log records).
_BATCH_SETTINGS = {
    "schedule_delay_millis": "SCHEDULE_DELAY",
    "max_queue_size": "MAX_QUEUE_SIZE",
    "max_export_batch_size": "MAX_EXPORT_BATCH_SIZE",
    "export_timeout_millis": "EXPORT_TIMEOUT",
}


def batch_setting_error(error: ValueError, prefix: str) -> ConfigError:
    """The SDK's refusal of a batch processor's setting (``prefix``: ``OTEL_BSP`` or
    ``OTEL_BLRP``), naming the variable that holds it."""
    message = str(error)
    named = [f"{prefix}_{end}" for name, end in _BATCH_SETTINGS.items() if name in message]
    return ConfigError(f"{' or '.join(named) or prefix + '_*'}: {message}")


def default_service_name() -> str:
    """OpenTelemetry's fallback name: ``unknown_service:`` and the interpreter's file name."""
    executable = os.path.basename(sys.executable) if sys.executable else ""
    return f"unknown_service:{executable}" if executable else "unknown_service"


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _split_names(value: str) -> tuple[str, ...]:
    """At least one name: an empty TRACEKIT_INSTRUMENT (``${UNSET}`` in a compose file) read as
    no names instrumented nothing, silently. ``instrument=[]`` in code still means none."""
    names = _split(value)
    if not names:
        raise ValueError(f"expected all or instrumentation names, got {value!r:.80}")
    return names


def _split_patterns(value: str) -> tuple[str, ...]:
    """Comma-separated regular expressions. A comma inside a group, a class or a quantifier
    (``^/v[0-9]{1,2}/health$``) belongs to its expression: split there, each half still
    compiles and neither matches what the user meant. Unbalanced brackets split at every comma."""
    cuts, depth, in_class, escaped = [], 0, False, False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "({":
            depth += 1
        elif char in ")}":
            depth -= 1
        elif char == "," and depth == 0:
            cuts.append(index)
    if depth or in_class:
        return _split(value)
    bounds = zip([-1, *cuts], [*cuts, len(value)], strict=True)
    return tuple(part.strip() for start, end in bounds if (part := value[start + 1 : end]).strip())


_LIST_PARSERS = (_split, _split_names, _split_patterns)


def _bool(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


# --- checks: each raises ValueError saying what is wrong, without naming the option -----------


def _text(value: object, limit: int = MAX_TEXT) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r:.80}")
    if len(value) > limit or not value.isprintable():
        raise ValueError(f"expected at most {limit} printable characters, got {value!r:.80}")


def _optional_text(value: object) -> None:
    if value is not None:
        _text(value)


def _optional_path(value: object) -> None:
    """A file path, up to Linux's PATH_MAX: a deep CI workspace's paths pass 256 characters."""
    if value is not None:
        _text(value, MAX_PATH)


def _flag(value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r:.80}")


def _one_of(choices: tuple[str, ...]) -> Callable[[object], None]:
    def check(value: object) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r:.80}")

    return check


def _port(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"expected a port number from 0 to 65535, got {value!r:.80}")


def _host(value: object) -> None:
    """An IP address or a host name to bind: ``0.0.0.0:9464`` or ``http://…`` would only fail
    later, on a thread, where the service could not say why."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(value)
            return
        if len(value) <= 253 and _HOST_NAME.fullmatch(value):
            return
    raise ValueError(f"expected an IP address or a host name, got {value!r:.80}")


def _header_name(value: object) -> None:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value) or len(value) > MAX_TEXT:
        raise ValueError(f"not a valid HTTP header name: {value!r:.80}")


def _sequence(values: object) -> tuple[object, ...]:
    if not isinstance(values, tuple):
        raise ValueError(f"expected a list, got {values!r:.80}")
    return values


def _writable_header_name(value: object) -> None:
    """A header tracekit writes (the echoed and sent correlation ID): no protocol header, no
    ``Content-*`` header, which describes the body, and no header of the trace context."""
    _header_name(value)
    name = str(value).lower()
    if name in _PROTOCOL_HEADERS or name.startswith("content-"):
        raise ValueError(f"{value!r} is a header HTTP itself uses; choose another name")
    if name in _propagated_headers():
        # written after the trace headers, it replaced them on every outgoing request
        raise ValueError(f"{value!r} carries trace context or baggage; choose another name")


def _propagated_headers() -> set[str]:
    """The headers of every ``OTEL_PROPAGATORS`` format tracekit carries, lower case."""
    from tracekit._propagation.trace_formats import FORMATS

    names = {"traceparent", "tracestate", "baggage"}  # W3C's, written by tracekit.propagation
    return names | {field.lower() for format_ in FORMATS.values() for field in format_().fields}


def _header_names(values: object) -> None:
    if not _sequence(values):
        raise ValueError("expected at least one header name")
    for value in _sequence(values):
        _header_name(value)


def _texts(values: object) -> None:
    for value in _sequence(values):
        _text(value)


def compile_excluded(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression searching for any of ``patterns`` (None when there are none)."""
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _patterns(values: object) -> None:
    for value in _sequence(values):
        if not isinstance(value, str):
            raise ValueError(f"expected regular expressions, got {value!r:.80}")
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regular expression {value!r:.80}: {error}") from None
    try:
        compile_excluded(values)  # type: ignore[arg-type]  # every item is a str by now
    except re.error as error:
        raise ValueError(f"the expressions do not combine into one: {error}") from None


def _instrumentations(allow_all: bool) -> Callable[[object], None]:
    def check(values: object) -> None:
        from tracekit.instrumentation import INSTRUMENTORS

        known = (*(("all",) if allow_all else ()), *sorted(INSTRUMENTORS))
        unknown = ", ".join(repr(v) for v in _sequence(values) if v not in known)
        if unknown:
            raise ValueError(f"unknown {unknown}; known names: {', '.join(known)}")

    return check


@dataclass(frozen=True)
class Options:
    """Every setting of ``tracekit.init()``; see docs/configuration.md for the table."""

    # Names are stripped as OTEL_SERVICE_NAME is: "orders " from an env file labelled every
    # metric service_name="orders ", which a dashboard or `canary --service orders` never finds.
    service_name: str = field(
        default_factory=default_service_name,
        metadata={"env": "TRACEKIT_SERVICE_NAME", "parse": str.strip, "check": _text},
    )
    service_version: str | None = field(
        default=None,
        metadata={"env": "TRACEKIT_SERVICE_VERSION", "parse": str.strip, "check": _optional_text},
    )
    environment: str | None = field(
        default=None,
        metadata={"env": "TRACEKIT_ENVIRONMENT", "parse": str.strip, "check": _optional_text},
    )
    exporter: str = field(
        default="otlp", metadata={"env": "TRACEKIT_EXPORTER", "check": _one_of(EXPORTERS)}
    )
    store: str | None = field(
        # stripped as the CLI strips it: "/data/traces.db " from an env file is the same file
        default=None,
        metadata={"env": "TRACEKIT_STORE", "parse": str.strip, "check": _optional_path},
    )
    mode: str = field(default="full", metadata={"env": "TRACEKIT_MODE", "check": _one_of(MODES)})
    correlation_headers: tuple[str, ...] = field(
        default=("X-Correlation-ID", "X-Request-ID"),
        metadata={"env": "TRACEKIT_CORRELATION_HEADERS", "parse": _split, "check": _header_names},
    )
    response_header: str = field(
        default="X-Correlation-ID",
        metadata={"env": "TRACEKIT_RESPONSE_HEADER", "check": _writable_header_name},
    )
    public_endpoint: bool = field(
        default=False, metadata={"env": "TRACEKIT_PUBLIC_ENDPOINT", "parse": _bool, "check": _flag}
    )
    excluded_urls: tuple[str, ...] = field(
        default=(),
        metadata={"env": "TRACEKIT_EXCLUDED_URLS", "parse": _split_patterns, "check": _patterns},
    )
    instrument: tuple[str, ...] = field(
        default=("all",),
        metadata={
            "env": "TRACEKIT_INSTRUMENT", "parse": _split_names,
            "check": _instrumentations(True),
        },
    )  # fmt: skip
    disabled_instrumentations: tuple[str, ...] = field(
        default=(),
        metadata={
            "env": "TRACEKIT_DISABLED_INSTRUMENTATIONS", "parse": _split,
            "check": _instrumentations(False),
        },
    )  # fmt: skip
    logs: bool = field(
        default=True, metadata={"env": "TRACEKIT_LOGS", "parse": _bool, "check": _flag}
    )
    export_logs: bool = field(
        default=True, metadata={"env": "TRACEKIT_EXPORT_LOGS", "parse": _bool, "check": _flag}
    )
    metrics_port: int = field(
        default=9464, metadata={"env": "TRACEKIT_METRICS_PORT", "parse": _int, "check": _port}
    )
    metrics_host: str = field(
        default="0.0.0.0",
        metadata={"env": "TRACEKIT_METRICS_HOST", "parse": str.strip, "check": _host},
    )
    message_correlation_property: str = field(
        default="correlation_id",
        metadata={
            "env": "TRACEKIT_MESSAGE_CORRELATION_PROPERTY",
            "parse": str.strip,
            "check": _text,
        },
    )
    redis_pubsub_channels: tuple[str, ...] = field(
        default=(),
        metadata={"env": "TRACEKIT_REDIS_PUBSUB_CHANNELS", "parse": _split, "check": _texts},
    )

    def __post_init__(self) -> None:
        for option in fields(self):
            _check(option, getattr(self, option.name), _keyword_label(option))

    @property
    def correlation_only(self) -> bool:
        """True in correlation-only mode: IDs in context and logs, no spans, no metrics."""
        return self.mode == "correlation"


def env_var(name: str) -> str:
    """The environment variable that sets option ``name``."""
    return str(Options.__dataclass_fields__[name].metadata["env"])


def _keyword_label(option: Field[Any]) -> str:
    return f"{option.name} ({option.metadata['env']})"


def _check(option: Field[Any], value: object, label: str) -> None:
    try:
        option.metadata["check"](value)
    except ValueError as error:
        raise ConfigError(f"{label}: {error}") from None


OTLP_PROTOCOLS = ("http/protobuf", "grpc")


def otlp_protocol(signal: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The OTLP protocol ``signal`` (``TRACES``, ``LOGS``) is exported with, and the variable
    that chose it: ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``,
    else OTLP/HTTP protobuf. ``http/json``, which the Python SDK cannot send, is refused."""
    environ = os.environ if environ is None else environ
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name, "").strip()
        if value in OTLP_PROTOCOLS:
            return value, name
        if value:
            raise ConfigError(
                f"{name}: {value[:40]!r} is not a protocol tracekit's exporter can send;"
                f" use {' or '.join(OTLP_PROTOCOLS)}"
            )
    return OTLP_PROTOCOLS[0], ""


def signal_exporter(signal: str, chosen: str, environ: Mapping[str, str] | None = None) -> str:
    """The exporter of one signal (``TRACES``, ``LOGS``, ``METRICS``): ``chosen``, unless
    ``OTEL_<SIGNAL>_EXPORTER``, as the OpenTelemetry SDKs read it, names ``none`` (that signal
    is not exported) or only ``console``. Its other names (``otlp``, ``otlp_proto_http``,
    ``otlp_proto_grpc``, lists of them) leave the choice to ``exporter``."""
    environ = os.environ if environ is None else environ
    names = {name.strip().lower() for name in environ.get(f"OTEL_{signal}_EXPORTER", "").split(",")}
    names.discard("")
    if "none" in names:
        return "none"
    return "console" if names == {"console"} else chosen


def resolve(
    service_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Options:
    """Build ``Options`` from keyword arguments, then ``TRACEKIT_*`` variables, then defaults.

    Raises ``ConfigError`` (a ``ValueError``) naming the variable, or the keyword and its
    variable, of the first value that cannot be used.
    """
    environ = os.environ if environ is None else environ
    unknown = set(options) - {f.name for f in fields(Options)}
    if unknown:
        raise TypeError(f"unknown tracekit option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for option in fields(Options):
        if option.name in options:
            values[option.name] = _keyword_value(option, options[option.name])
        elif option.metadata["env"] in environ:
            values[option.name] = _env_value(option, environ)
    name_field = Options.__dataclass_fields__["service_name"]
    if service_name:
        _check(name_field, service_name, "service_name")
    name = service_name or values.get("service_name") or _otel_service_name(environ, name_field)
    if name:
        values["service_name"] = name
    if values.get("service_version") is None:
        # The version spans carry from OTEL_RESOURCE_ATTRIBUTES labels the metrics too.
        version_field = Options.__dataclass_fields__["service_version"]
        version = _resource_attribute(environ, "service.version", version_field)
        if version:
            values["service_version"] = version
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        # OpenTelemetry's switch over every other setting: no spans, metrics or exported logs.
        # Correlation IDs are the application's own, not telemetry: they keep flowing.
        values.update(mode="correlation", export_logs=False)
    return Options(**values)


def _keyword_value(option: Field[Any], value: Any) -> Any:
    if option.metadata.get("parse") in _LIST_PARSERS and isinstance(value, str):
        value = (value,)  # excluded_urls="^/health$" means that one expression
    elif isinstance(value, list):
        value = tuple(value)
    _check(option, value, _keyword_label(option))
    return value


def _env_value(option: Field[Any], environ: Mapping[str, str]) -> Any:
    name = option.metadata["env"]
    parse: Callable[[str], Any] = option.metadata.get("parse", str)
    try:
        value = parse(environ[name])
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None
    _check(option, value, name)
    return value


def _otel_service_name(environ: Mapping[str, str], name_field: Field[Any]) -> str | None:
    """``OTEL_SERVICE_NAME``, else ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES`` (as the SDK)."""
    name = environ.get("OTEL_SERVICE_NAME", "").strip()
    if name:
        _check(name_field, name, "OTEL_SERVICE_NAME")
        return name
    return _resource_attribute(environ, "service.name", name_field)


def _resource_attribute(environ: Mapping[str, str], key: str, option: Field[Any]) -> str | None:
    """The value of ``key`` in ``OTEL_RESOURCE_ATTRIBUTES`` (None if absent or empty)."""
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        name, _, raw = pair.partition("=")
        value = unquote(raw.strip())
        if name.strip() == key and value:
            _check(option, value, f"OTEL_RESOURCE_ATTRIBUTES {key}")
            return value
    return None
