"""Which measurements link to their trace: the exemplar filter, ``OTEL_METRICS_EXEMPLAR_FILTER``.

``exemplar_ids`` is what every measurement asks (a pair of integers, no dictionary built);
``exemplar_of`` gives the labels prometheus-client's own classes take. Re-exported by
``tracekit.metrics`` (``exemplar_of``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry.trace import Span

from tracekit.config import ConfigError

_log = logging.getLogger("tracekit")
_SAMPLED = 0x01  # W3C trace-flags bit


def exemplar_of(span: Span | None) -> dict[str, str] | None:
    """The exemplar labels (trace_id, span_id) of ``span`` under the exemplar filter (by default
    only a sampled span has them), else None."""
    trace_id, span_id = exemplar_ids(span)
    if not trace_id:
        return None
    return {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"}


# Which measurements carry an exemplar: OTEL_METRICS_EXEMPLAR_FILTER, as OpenTelemetry's SDKs read
# it (``install`` sets it at init): ``trace_based`` (the default) those made under a sampled span,
# ``always_on`` those made under any span (its trace may never be exported), ``always_off`` none.
_EXEMPLAR_FILTER_ENV = "OTEL_METRICS_EXEMPLAR_FILTER"
_EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")
_exemplar_filter: str | None = None  # None: no init has read it (a middleware used without one)


def exemplar_ids(span: Span | None) -> tuple[int, int]:
    """``(trace_id, span_id)`` of the span a measurement links to under the exemplar filter,
    else ``(0, 0)``: no exemplar (an invalid span's IDs are 0 too)."""
    chosen = _exemplar_filter or _exemplar_filter_without_init()
    if span is None or chosen == "always_off":
        return 0, 0
    span_context = span.get_span_context()
    if not span_context.trace_flags & _SAMPLED and chosen == "trace_based":
        return 0, 0
    return span_context.trace_id, span_context.span_id


def set_exemplar_filter(environ: Mapping[str, str]) -> None:
    """Read ``OTEL_METRICS_EXEMPLAR_FILTER``; a value the SDK would refuse stops ``init``."""
    global _exemplar_filter
    _exemplar_filter = _exemplar_filter_in(environ)


def _exemplar_filter_without_init() -> str:
    """The filter for a middleware recording metrics without ``init`` (its own ``registry``):
    read from the environment at its first measurement, as the middleware reads its other
    options. A value init would refuse cannot stop a request: one warning, and the default."""
    global _exemplar_filter
    try:
        _exemplar_filter = _exemplar_filter_in(os.environ)
    except ConfigError as error:
        _log.warning("tracekit: %s; using %s", error, _EXEMPLAR_FILTERS[0])
        _exemplar_filter = _EXEMPLAR_FILTERS[0]
    return _exemplar_filter


def _exemplar_filter_in(environ: Mapping[str, str]) -> str:
    value = environ.get(_EXEMPLAR_FILTER_ENV, "").strip().lower() or _EXEMPLAR_FILTERS[0]
    if value not in _EXEMPLAR_FILTERS:
        raise ConfigError(
            f"{_EXEMPLAR_FILTER_ENV}: {value[:40]!r} is not one of {', '.join(_EXEMPLAR_FILTERS)}"
        )
    return value
