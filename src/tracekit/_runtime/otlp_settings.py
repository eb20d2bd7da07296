"""The OTLP exporter's endpoint, timeout and compression, read from OpenTelemetry's variables.

OpenTelemetry's exporters read ``OTEL_EXPORTER_OTLP_[<SIGNAL>_]TIMEOUT`` and ``…_COMPRESSION``
themselves, unevenly: over HTTP an unreadable value is warned of and replaced, over gRPC it
raised out of the exporter's constructor and so out of ``init`` (``none``, the specification's
own compression value, included), and a timeout of zero or less made every export fail, over
either protocol, as if the collector were down. tracekit reads them first, as the HTTP exporter
does (the per-signal variable, else the general one; an empty one is unset), and hands the
exporter a value it can use, with one warning naming the variable where it replaced one.

The HTTP exporter's endpoint is handed over too, without the spaces around it that an env file
may leave: the SDK kept them, and every export failed on a host name ending in a space.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any
from urllib.parse import urlsplit

from tracekit._runtime.guard import without_url_secrets
from tracekit.config import ConfigError

_log = logging.getLogger("tracekit")
DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_TIMEOUT = 10.0  # seconds, the SDK's
# A longer timeout (a "never give up" value) failed every export: past 292 years the HTTP
# exporter's wait raised 'timestamp out of range for platform time_t', and a gRPC deadline past
# 2262 (nanoseconds since 1970 in 64 bits) expired at once. A year is as good as never.
LONGEST_TIMEOUT = 365 * 24 * 3600.0
_GRPC_COMPRESSION = {"none": "NoCompression", "gzip": "Gzip", "deflate": "Deflate"}
_warned: set[str] = set()


def exporter_arguments(signal: str, protocol: str) -> dict[str, Any]:
    """Keyword arguments for ``signal``'s (``traces``, ``logs``) OTLP exporter in ``protocol``:
    the timeout; over HTTP the endpoint, over gRPC the compression, by its name in
    ``grpc.Compression`` (``with_grpc_compression`` makes it the member: read here, in
    ``init``, without importing grpc). Always given, so that the gRPC exporter does not read the
    variables again: it refused an empty one, which is unset."""
    arguments: dict[str, Any] = {"timeout": _timeout(signal)}
    if protocol != "grpc":
        arguments["endpoint"] = endpoint(signal, protocol)
    else:
        _check_grpc_timeout(signal)
        arguments["compression"] = _grpc_compression(signal)
    return arguments


def with_grpc_compression(arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` with the compression's name, if any, replaced by ``grpc.Compression``'s
    member, as the gRPC exporter takes it."""
    if "compression" not in arguments:
        return arguments
    import grpc

    return {**arguments, "compression": getattr(grpc.Compression, arguments["compression"])}


def endpoint(signal: str, protocol: str) -> str:
    """Where the exporter sends ``signal``: the per-signal variable as it is, else over HTTP
    the general one (or the default) with ``/v1/<signal>`` appended, as the SDKs do; over gRPC
    one endpoint serves every signal, without a path. Over HTTP, a value that is not an
    ``http://`` or ``https://`` URL is left out with one warning (below)."""
    specific_name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
    specific = os.environ.get(specific_name, "").strip()
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if protocol == "grpc":
        return specific or base or DEFAULT_GRPC_ENDPOINT
    if not _http_url("OTEL_EXPORTER_OTLP_ENDPOINT", base, DEFAULT_ENDPOINT):
        base = ""
    general = f"{(base or DEFAULT_ENDPOINT).rstrip('/')}/v1/{signal}"
    return specific if _http_url(specific_name, specific, general) else general


def _http_url(name: str, value: str, instead: str) -> bool:
    """Whether ``value`` is an OTLP/HTTP endpoint; if it is another one than empty, says that
    ``instead`` is used. ``collector:4318`` (a gRPC endpoint's form) or ``otel-collector`` made
    every export fail, with a line that said the collector was unreachable and to start one."""
    if not value:
        return False
    try:
        parts = urlsplit(value)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  # a port past 65535, or not a number, raises ValueError
    except ValueError:
        usable = False
    if not usable:
        warn_once(
            name, _shown(value), "is not an http:// or https:// URL (http://host:port)", instead
        )
    return usable


def _shown(url: str) -> str:
    """``url`` for a warning: without the credentials or query it may carry."""
    userinfo, at, rest = url.rpartition("@")
    scheme = userinfo.partition("//")[0] + "//" if "//" in userinfo else ""
    return without_url_secrets(f"{scheme}…@{rest}" if at else url)


def _setting(signal: str, setting: str) -> tuple[str, str] | None:
    """The variable that sets ``setting`` for ``signal`` and its value, per-signal first."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{setting}", f"OTEL_EXPORTER_OTLP_{setting}"):
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _timeout(signal: str) -> float:
    found = _setting(signal, "TIMEOUT")
    if found is None:
        return DEFAULT_TIMEOUT
    name, value = found
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds) and seconds > 0:
        return min(seconds, LONGEST_TIMEOUT)
    warn_once(name, value, "is not a number of seconds above 0", "10 s")
    return DEFAULT_TIMEOUT


def _check_grpc_timeout(signal: str) -> None:
    """The gRPC exporter reads its per-signal timeout itself, whatever it is given, and raises
    on one that is not a number: a line naming the variable instead of its traceback."""
    name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"
    value = os.environ.get(name)
    if value is None:
        return
    try:
        float(value)
    except ValueError:
        raise ConfigError(
            f"{name}: {value[:40]!r} is not a number of seconds,"
            " which OpenTelemetry's gRPC exporter needs"
        ) from None


def _grpc_compression(signal: str) -> str:
    found = _setting(signal, "COMPRESSION")
    if found is None:
        return "NoCompression"  # the exporter's default
    name, value = found
    member = _GRPC_COMPRESSION.get(value.lower())
    if member is None:
        warn_once(name, value, "is not gzip, deflate or none", "none")
        member = "NoCompression"
    return member


def warn_once(name: str, value: str, problem: str, used: str) -> None:
    """One warning a variable (both signals' exporters read the general one), naming it, its
    value (cut short) and what is used instead."""
    if name not in _warned:
        _warned.add(name)
        _log.warning("tracekit: %s=%r %s; using %s", name, value[:40], problem, used)
