"""Correlated logs: every stdlib record carries the request's IDs, on stdout and over OTLP.

``install`` (called by ``tracekit.init()``) does two independent things, each with an option:

- ``logs`` (``TRACEKIT_LOGS``): wraps the LogRecord factory so that every record, from every
  logger, gets ``correlation_id``, ``trace_id``, ``span_id`` and ``service``. A factory wrapper
  rather than a ``logging.Filter``, because a filter only sees records of the handlers it was added
  to, and handlers added later (by the app, by gunicorn, by a framework) would miss it. The
  application's handlers and formatters are left alone, so ``%(correlation_id)s`` just works in
  them. Values the application passes itself with ``extra=`` win over ours.
- ``export_logs`` (``TRACEKIT_EXPORT_LOGS``): hands every record that reaches the root logger
  (and Celery's task loggers, which stop short of it) to the OpenTelemetry SDK's log pipeline
  (``LoggerProvider`` + ``BatchLogRecordProcessor``) and on to the OTLP exporter, or to the
  embedded store when ``TRACEKIT_EXPORTER=store``. The correlation ID travels as the log attribute
  ``correlation.id``.

  Not a handler on the root logger: the root's handler list belongs to the host. A handler there
  would switch off Python's last-resort stderr output in an app that configured nothing, make a
  later ``logging.basicConfig()`` do nothing, and be thrown away by every framework that
  reconfigures logging after ``init`` (Celery's ``worker_hijack_root_logger``, Django's
  ``LOGGING``, uvicorn's ``--log-config``, gunicorn's ``logconfig_dict``). Instead tracekit wraps
  ``logging.Logger.callHandlers``, the step that runs a record's handlers: the host's handlers run
  exactly as before, then the record is exported if its propagation reaches the root. Nothing the
  host configures, before or after ``init``, can see or remove it.

``JsonFormatter`` writes the one-JSON-object-per-line format the collector's filelog receiver reads.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping
from time import time_ns
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import NoOpLoggerProvider, SeverityNumber, get_logger_provider

from tracekit import config, correlation, semconv
from tracekit._http.wsgi_environ import CONTEXT_KEY
from tracekit._runtime import state
from tracekit._runtime.guard import (
    instrumentation_suppressed,
    report_once,
    without_url_secrets,
)
from tracekit._utf8 import clean_text
from tracekit.config import batch_setting_error

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.resources import Resource

    from tracekit.config import Options

__all__ = [
    "EMPTY",
    "EXPORT_POINTS",
    "MAX_EXTRA_FIELDS",
    "MAX_MESSAGE",
    "MAX_VALUE",
    "STAMPED_FIELDS",
    "JsonFormatter",
    "LogExportHandler",
    "build_log_exporter",
    "current_fields",
    "detach",
    "flush",
    "install",
    "json_stdout_handler",
    "log_attributes",
    "severity_number",
    "uninstall",
]

STAMPED_FIELDS = ("correlation_id", "trace_id", "span_id", "service")
EMPTY = "-"  # what a text format shows outside a request or span; JSON output omits the key
MAX_MESSAGE = 16_384
MAX_VALUE = 1_024
MAX_EXTRA_FIELDS = 32

_service = "unknown_service"
_stamping = False
_previous_factory: Callable[..., logging.LogRecord] | None = None
_probing = False  # set while _start_stamping asks whether the factory still calls ours
_probed = False
_handler: _Bridge | None = None
_lock = threading.Lock()


def current_fields() -> dict[str, str]:
    """The correlation fields of the current context (``EMPTY`` where there is none)."""
    span_context = trace.get_current_span().get_span_context()
    valid = span_context.is_valid
    return {
        "correlation_id": correlation.correlation_id() or EMPTY,
        "trace_id": f"{span_context.trace_id:032x}" if valid else EMPTY,
        "span_id": f"{span_context.span_id:016x}" if valid else EMPTY,
        "service": _service,
    }


# --- stamping records -------------------------------------------------------------------------


class _Correlating:
    """A LogRecord whose correlation fields give way to same-named ``extra=`` values.

    ``Logger.makeRecord`` refuses ``extra`` keys already in the record's ``__dict__``, so the
    fields wait in a slot and move into ``__dict__`` (without overwriting) when the record is
    formatted; attribute access finds them before that. Pickled (``SocketHandler``, a
    ``QueueHandler`` to another process), it is the record class it stands for, with the fields
    in its dict; copied (``copy.copy``), it stays a correlating record with its stamp.
    """

    __slots__ = ()
    _tracekit_fields: dict[str, str]
    _tracekit_base: type[logging.LogRecord] = logging.LogRecord
    __dict__: dict[str, Any]

    def getMessage(self) -> str:
        _settle(self)
        return super().getMessage()  # type: ignore[misc, no-any-return]

    def __getattr__(self, name: str) -> str:
        if name in STAMPED_FIELDS:
            return self._tracekit_fields[name]
        raise AttributeError(name)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (self._tracekit_base, {**self._tracekit_fields, **self.__dict__})

    def __copy__(self) -> _Correlating:
        # A copy in this process (``QueueHandler.prepare``) keeps the stamp apart from the
        # ``extra=`` values: a listener's ``LogExportHandler`` exports it in the stamped span,
        # not in one an application's own ``trace_id``/``span_id`` names (``_record_context``).
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        copied._tracekit_fields = self._tracekit_fields  # type: ignore[misc]  # (each subclass's slot)
        return copied


class _CorrelatedRecord(_Correlating, logging.LogRecord):
    __slots__ = ("_tracekit_fields",)


def _settle(record: _Correlating) -> None:
    """Move the fields into the record's ``__dict__``, where ``extra=`` did not set them.

    A function, not a method of the record: ``extra=`` may name anything the stdlib's record
    does not have, and a key named like a method would shadow it (``extra={"settle": ...}``
    made every logging call with it raise TypeError)."""
    for key, value in record._tracekit_fields.items():
        record.__dict__.setdefault(key, value)


def _rebuilt(cls: type[logging.LogRecord], state: dict[str, Any]) -> logging.LogRecord:
    record = cls.__new__(cls)
    record.__dict__.update(state)
    return record


def _correlated_class(cls: type[logging.LogRecord]) -> type[_Correlating]:
    """The correlating subclass of a record class another factory makes (made once)."""
    found = _correlated_classes.get(cls)
    if found is None:
        namespace = {"__slots__": ("_tracekit_fields",), "_tracekit_base": cls}
        found = type(f"Correlated{cls.__name__}", (_Correlating, cls), namespace)
        _correlated_classes[cls] = found
    return found


_correlated_classes: dict[type[logging.LogRecord], type[_Correlating]] = {
    logging.LogRecord: _CorrelatedRecord
}


def _safe_fields() -> dict[str, str]:
    try:
        return current_fields()
    except Exception as error:
        report_once("log record correlation fields", error)
        return dict.fromkeys(STAMPED_FIELDS, EMPTY)


def _stopped_fields() -> dict[str, str]:
    """The fields once stamping stopped: empty, so a format that names them still works."""
    return {**dict.fromkeys(STAMPED_FIELDS, EMPTY), "service": _service}


class _Rebuilt(dict[str, str]):
    """The fields of a record ``logging.makeLogRecord`` makes, to take the attributes of one
    logged elsewhere (a ``SocketHandler``'s, from another process or host), its fields too:
    no logging call of this process's made it."""


def _stamp(record: logging.LogRecord) -> dict[str, str] | None:
    """The fields tracekit stamped on ``record`` in a logging call of this process; None for
    a record made otherwise (unstamped, unpickled, or by ``logging.makeLogRecord``)."""
    if isinstance(record, _Correlating) and type(record._tracekit_fields) is not _Rebuilt:
        return record._tracekit_fields
    return None


def _make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    global _probed
    if _probing:
        _probed = True
    previous = _previous_factory or logging.LogRecord
    fields = _request_fields(args) if _stamping else _stopped_fields()
    if args[:1] == (None,):  # no logger's name: ``logging.makeLogRecord``
        fields = _Rebuilt(fields)
    if previous is logging.LogRecord:
        record = _CorrelatedRecord(*args, **kwargs)
        record._tracekit_fields = fields
        return record
    # Another factory made the record (the application's, a library's): the same record, as
    # its correlating subclass, so that ``extra=`` may still name the fields.
    made = previous(*args, **kwargs)
    try:
        correlated = _correlated_class(type(made))
        stamped = correlated.__new__(correlated)
        stamped.__dict__.update(made.__dict__)
    except Exception as error:  # a record class that cannot be subclassed or has no __dict__
        report_once("log record correlation fields", error)
        return made
    stamped._tracekit_fields = fields  # type: ignore[misc]  # (each subclass's slot)
    return cast(logging.LogRecord, stamped)


# gunicorn logs a request's access line once the response is sent, after the WSGI middleware
# put the request's context back: the line would show ``-``. gunicorn hands that record the
# request's environ as ``{key}e`` atoms, and the middleware left the request's context there.
_ACCESS_ATOM = f"{{{CONTEXT_KEY}}}e"


def _request_fields(args: tuple[Any, ...]) -> dict[str, str]:
    """The fields of the current context, or of the request the record is about: the one an
    access record names, or the one its exception was raised in (logged by the server)."""
    context = _access_record_context(args)
    if context is not None:
        return _fields_in(context)
    return _fields_logged_with(args[6] if len(args) > 6 else None)  # makeRecord's exc_info


def _fields_logged_with(exc_info: object) -> dict[str, str]:
    """The fields of the request whose response is being sent here (the server's line about
    it), else of the current context, or, outside any request, of the request a logged
    exception escaped: ``exc_info`` as a logging call gives it, else the one being handled."""
    answered = correlation._answered_context()
    if answered is not None:
        return _fields_in(answered)
    fields = _safe_fields()
    if fields["correlation_id"] == EMPTY and fields["trace_id"] == EMPTY:
        context = _error_context(exc_info)
        if context is not None:
            return _fields_in(context)
    return fields


def _fields_in(context: contextvars.Context) -> dict[str, str]:
    try:
        return context.run(_safe_fields)
    except RuntimeError:  # that context is entered already (in another thread)
        return _safe_fields()


def _error_context(exc_info: object) -> contextvars.Context | None:
    """The context of the request an exception escaped: the logged one (a ``sys.exc_info()``
    tuple, or an exception as structlog takes it), else the exception being handled where the
    line is logged. Servers log some lines about a request that raised while handling it,
    without ``exc_info``: werkzeug's "Error on request" and its 500's access line, gunicorn's
    access line of the 500 it answers in the app's place (with an environ of its own)."""
    if isinstance(exc_info, BaseException):
        return correlation._context_of(exc_info)
    if type(exc_info) is tuple and len(exc_info) == 3:
        return correlation._context_of(exc_info[1])
    return correlation._context_of(sys.exc_info()[1])


def _access_record_context(args: tuple[Any, ...]) -> contextvars.Context | None:
    """The request's context among the atoms of a gunicorn access record (``makeRecord``'s
    sixth argument holds the logging call's arguments: for this record, one dict of atoms)."""
    logged = args[5] if len(args) > 5 else None
    if type(logged) is not tuple or len(logged) != 1 or not isinstance(logged[0], dict):
        return None
    context = logged[0].get(_ACCESS_ATOM)
    return context if isinstance(context, contextvars.Context) else None


def _start_stamping() -> None:
    global _previous_factory, _stamping
    current = logging.getLogRecordFactory()
    if current is not _make_record and not _calls_ours(current):
        _previous_factory = current
        logging.setLogRecordFactory(_make_record)
    _stamping = True


def _calls_ours(factory: Callable[..., logging.LogRecord]) -> bool:
    """Whether ``factory`` wraps tracekit's (an application's wrapper put in after an earlier
    ``init``): wrapping it again would make the two call each other forever."""
    global _probing, _probed
    if _previous_factory is None:
        return False  # never installed: nothing of ours to reach
    _probing, _probed = True, False
    # the nine arguments Logger.makeRecord passes, as it passes them (args a tuple), which a
    # wrapper may spell out and read; one that raises after reaching ours still calls ours
    try:
        with contextlib.suppress(Exception):
            factory("tracekit", logging.DEBUG, __file__, 0, "", (), None, None, None)
    finally:
        _probing = False
    return _probed


def _stop_stamping() -> None:
    """Stop stamping; the factory stays, giving records empty fields (``-``): a format that
    names them keeps working for what is logged after (at exit, by the exporter's last batch)."""
    global _stamping
    _stamping = False


# --- bounded values ---------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    (*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName")
) | frozenset(STAMPED_FIELDS)


def _bounded_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, in text UTF-8 can hold (``clean_text``: OTLP's
    protobuf cannot encode a lone surrogate, and the SDK then dropped the whole batch)."""
    return clean_text(text if len(text) <= limit else text[:limit] + "…[truncated]")


def _bounded_value(value: object) -> str | int | float | bool | None:
    """A JSON/OTLP-safe scalar: strings truncated, non-finite floats, integers beyond OTLP's
    64 bits and objects as text (without URL queries and credentials)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return value
        if value.bit_length() > 4 * MAX_VALUE:  # more digits than kept (or than str() makes)
            return f"<integer of {value.bit_length()} bits>"
        return _bounded_text(str(value), MAX_VALUE)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _bounded_text(value, MAX_VALUE)
    try:
        # An object's repr may quote a URL whole (Django's 404 and 500 records carry the
        # request, ``<WSGIRequest: GET '/reset?token=…'>``): its query and credentials are cut,
        # as from a span's ``url.full``.
        text = without_url_secrets(_bounded_repr(value))
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return _bounded_text(text, MAX_VALUE)


# The builtin containers, as their repr opens and closes them.
_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    dict: ("{", "}"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
}
_NESTING = 32  # levels of containers taken apart; a deeper one gives its own repr


def _bounded_repr(value: object) -> str:
    """``repr(value)`` as far as ``_bounded_value`` keeps it, and a piece more: the items of
    builtin containers are repr'd one by one until then, strings and bytes cut first. A 20 MB
    request body or 300,000 rows of a query given with ``extra=`` had their whole repr made,
    in the logging call (190 ms each), to keep its first kibibyte."""
    pieces, size = [], 0
    for piece in _repr_pieces(value, _NESTING, set()):
        pieces.append(piece)
        size += len(piece)
        if size > MAX_VALUE:
            break
    return "".join(pieces)


def _repr_pieces(value: object, depth: int, open_ids: set[int]) -> Iterator[str]:
    """The pieces of ``repr(value)``, each made when it is asked for. ``open_ids``: the
    containers being repr'd around it; one inside itself is ``[...]`` or ``{...}``, as
    ``repr`` writes it (it was taken apart again, 32 levels deep)."""
    kind = type(value)
    if isinstance(value, (str, bytes, bytearray)) and kind in (str, bytes, bytearray):
        # twice what is kept: credentials in a URL that starts in the part kept end in the
        # text ``without_url_secrets`` sees
        yield repr(value[: 2 * MAX_VALUE])
    elif isinstance(value, Collection) and kind in _BRACKETS and value and depth > 0:
        opening, closing = _BRACKETS[kind]
        if id(value) in open_ids:
            yield f"{opening}...{closing}"
            return
        open_ids.add(id(value))
        yield opening
        for index, item in enumerate(value):
            yield ", " if index else ""
            if isinstance(value, dict):
                yield from _repr_pieces(item, depth - 1, open_ids)
                yield ": "
                item = value[item]
            yield from _repr_pieces(item, depth - 1, open_ids)
        yield ",)" if kind is tuple and len(value) == 1 else closing
        open_ids.discard(id(value))
    else:
        yield repr(value)


def _extra_fields(record: logging.LogRecord) -> dict[str, str | int | float | bool | None]:
    """The record's ``extra=`` fields, and the keys of a structlog event dict logged as its
    message (``_event_dict``), bounded."""
    fields = _bounded_fields(vars(record), _STANDARD_ATTRIBUTES)
    event = _event_dict(record)
    if event is not None:
        fields = {**_bounded_fields(event, _EVENT_DICT_LEFT_OUT), **fields}
    return {**_own_stamped_names(record, event), **fields}


def _own_stamped_names(
    record: logging.LogRecord, event: Mapping[Any, object] | None
) -> dict[str, str | int | float | bool | None]:
    """The application's own values (``extra=``, then a structlog event's keys) for the names
    tracekit stamps, where they differ from the stamp (``extra={"service": "stripe"}``: the
    provider called). The correlation ID is left out: a valid one is ``correlation.id``."""
    stamp = _stamp(record)
    if stamp is None:  # not stamped here: nothing tells the application's values from others'
        return {}
    own = {}
    for name in ("trace_id", "span_id", "service"):
        values = (record.__dict__.get(name), event.get(name) if event is not None else None)
        value = next((v for v in values if _differs(v, stamp[name])), None)
        if value is not None:
            own[name] = _bounded_value(value)
    return own


def _differs(value: object, stamped: str) -> bool:
    """Whether ``value`` is another than tracekit's text; any object but text differs (and is
    not compared: a numpy array's comparison has no truth value)."""
    return value is not None and (not isinstance(value, str) or value != stamped)


def _bounded_fields(
    fields: Mapping[Any, object], left_out: frozenset[str]
) -> dict[str, str | int | float | bool | None]:
    """At most ``MAX_EXTRA_FIELDS`` of ``fields``, bounded, but for names in ``left_out`` or
    starting with ``_`` (private)."""
    kept: dict[str, str | int | float | bool | None] = {}
    for key, value in fields.items():
        if not isinstance(key, str) or key in left_out or key.startswith("_"):
            continue
        if len(kept) >= MAX_EXTRA_FIELDS:
            break
        kept[clean_text(key[:64])] = _bounded_value(value)
    return kept


# structlog's stdlib integration (``ProcessorFormatter.wrap_for_formatter``) logs the event
# dict itself as the record's message; its ``event`` is the message, the other keys are fields
# but ``exc_info``, the record's exception (``_exception_of``).
_EVENT_DICT_LEFT_OUT = frozenset(("event", "exc_info", *STAMPED_FIELDS))


def _event_dict(record: logging.LogRecord) -> Mapping[Any, object] | None:
    msg = record.msg
    return msg if isinstance(msg, Mapping) and "event" in msg and not record.args else None


def _record_fields(record: logging.LogRecord) -> dict[str, str]:
    """The record's correlation fields that hold a value, bounded.

    An application may set ``correlation_id`` itself with ``extra=``: only a valid ID is kept.
    """
    fields = {}
    for name in STAMPED_FIELDS:
        value = getattr(record, name, None)
        if not isinstance(value, str) or value in (EMPTY, ""):
            continue
        if name != "correlation_id" or correlation.is_valid(value):
            fields[name] = value[:MAX_VALUE]
    return fields


# --- JSON on stdout ---------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the correlation fields, extras.

    Every value is bounded (messages to 16 KiB, other values to 1 KiB, 32 extra fields) and JSON-
    escaped, so a hostile value can neither forge a line nor flood the log pipeline. A message
    its arguments do not fit is written as it came, followed by them, still as one line (the
    stdlib's formatters raise, and the handler prints a multi-line traceback instead).
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        document: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _bounded_text(_message(record), MAX_MESSAGE),
        }
        document.update(_record_fields(record))
        # As the stdlib's Formatter: a record that crossed a process (SocketHandler, a
        # multiprocessing queue) carries its traceback already formatted, in exc_text.
        exc_info = _exception_of(record)
        exception = self.formatException(exc_info) if exc_info else record.exc_text
        if exception:
            document["exception"] = _bounded_text(exception, MAX_MESSAGE)
        if record.stack_info:
            document["stack_info"] = _bounded_text(self.formatStack(record.stack_info), MAX_MESSAGE)
        for key, value in _extra_fields(record).items():
            document.setdefault(key, value)
        return json.dumps(document, ensure_ascii=True, default=str)


def _iso_time(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return f"{_utc(seconds)}.{millis:03d}Z"


def _utc(seconds: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def json_stdout_handler(level: int = logging.NOTSET) -> logging.Handler:
    """A stdout handler with ``JsonFormatter``: add it where the filelog receiver should read."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setLevel(level)
    handler.setFormatter(JsonFormatter())
    return handler


# --- OTLP export ------------------------------------------------------------------------------

# The export pipeline's own loggers and those below them (``urllib3.connectionpool``):
# exporting their records could feed back into itself.
_PIPELINE_LOGGERS = frozenset(("opentelemetry", "urllib3", "requests"))


class LogExportHandler(logging.Handler):
    """Hands stdlib records to an OpenTelemetry SDK ``LoggerProvider`` (the logs bridge)."""

    def __init__(
        self, provider: LoggerProvider, level: int = logging.NOTSET, *, owned: bool = True
    ) -> None:
        super().__init__(level)
        self.provider = provider
        self.owned = owned  # False: the host's provider, never shut down by tracekit

    def emit(self, record: logging.LogRecord) -> None:
        """Translate and emit ``record``; never raises into the application."""
        _emit(self.provider, record)

    def flush(self) -> None:
        """Push buffered records to the exporter, waiting 5 s at most (the stdlib flushes every
        handler at exit and in ``dictConfig``)."""
        _flushed_within(self.provider, 5_000)


class _Bridge:
    """tracekit's own export of the records that reach the root (``_call_handlers``): what
    ``LogExportHandler`` does, but not a ``logging.Handler``. The stdlib flushes every handler
    ever made when ``logging.shutdown()`` runs, and ``dictConfig``/``fileConfig`` run it: a
    host configuring its logging after ``init`` waited there while the batch went to an
    unreachable collector. tracekit flushes its pipeline itself (``flush``, bounded stops)."""

    def __init__(self, provider: LoggerProvider, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned  # False: the host's provider, never shut down by tracekit

    def handle(self, record: logging.LogRecord) -> None:
        if _emit(self.provider, record):
            state.flush_late()  # the interpreter is exiting: out now, or never (``state``)


def _emit(provider: LoggerProvider, record: logging.LogRecord) -> bool:
    """Translate ``record`` and emit it to ``provider``, True if it was; never raises into the
    application."""
    # A record made by hand (``logging.makeLogRecord({...})``) may be named None, as it shows.
    name = clean_text(str(record.name))
    # By the top-level name: an application's ``requestsvc`` is not ``requests``.
    if name.partition(".")[0] in _PIPELINE_LOGGERS or instrumentation_suppressed():
        return False
    try:
        provider.get_logger(name).emit(
            timestamp=int(record.created * 1e9),
            observed_timestamp=time_ns(),
            context=_record_context(record),
            severity_number=severity_number(record.levelno),
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            body=_bounded_text(_message(record), MAX_MESSAGE),
            attributes=log_attributes(record),
        )
    except Exception as error:
        report_once("log export", error)
        return False
    return True


def _record_context(record: logging.LogRecord) -> otel_context.Context:
    """The context ``record`` is exported in: the current one where the record was stamped
    in its span (the logging call) or outside spans, else the stamped span's (a
    ``LogExportHandler`` behind a ``QueueListener``, whose thread is in no span, or in a span
    of its own). Its trace flags are not stamped: they stay unset."""
    current = otel_context.get_current()
    stamp = _stamp(record)
    if stamp is not None:
        fields = stamp
    elif _stamped_elsewhere(record):  # its stamp and ``extra=`` share one dict
        fields = record.__dict__
    else:  # not stamped (``logs=False``): a ``trace_id`` on it is the application's own
        return current
    trace_id = fields.get("trace_id")
    if trace_id is None or trace_id == EMPTY:  # outside spans, or not stamped: nothing to check
        return current
    span_id = fields.get("span_id")
    if _is_current(trace.get_current_span(current).get_span_context(), span_id):
        return current
    stamped = _stamped_span(trace_id, span_id)
    if stamped is None:  # not ids: the current span, as without a stamp
        return current
    return trace.set_span_in_context(trace.NonRecordingSpan(stamped), current)


def _is_current(span_context: trace.SpanContext, span_id: object) -> bool:
    """Whether the current span is the one stamped (its flags then come with it): the span
    ID, random in 64 bits, tells."""
    return span_context.is_valid and f"{span_context.span_id:016x}" == span_id


_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")


def _stamped_span(trace_id: object, span_id: object) -> trace.SpanContext | None:
    """The span of a record's stamped ``trace_id`` and ``span_id`` (on a record pickled in
    another process, what it carries, ``extra=`` values included), None when they are not
    valid ids."""
    if not isinstance(trace_id, str) or not isinstance(span_id, str):
        return None
    if not (_TRACE_ID.fullmatch(trace_id) and _SPAN_ID.fullmatch(span_id)):
        return None
    stamped = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False)
    return stamped if stamped.is_valid else None


def _message(record: logging.LogRecord) -> str:
    """The record's message; one whose arguments do not fit it (``"%d", "x"``), or whose
    message object cannot be made text, is exported as it came rather than lost (the stdlib
    prints "--- Logging error ---" for it and its handlers drop it)."""
    event = _event_dict(record)
    if event is not None:
        return _text_of(event["event"])
    try:
        return record.getMessage()
    except Exception:
        text = _text_of(record.msg)
        if not record.args:
            return text
        return f"{text} (arguments that do not fit it: {_text_of(record.args)})"


def _text_of(value: object) -> str:
    """``str(value)``, else its ``repr``: a broken ``__str__`` must not cost the record."""
    try:
        return str(value)
    except Exception:
        return _repr_of(value)


def _repr_of(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_SEVERITY_BANDS = (
    (logging.CRITICAL, SeverityNumber.FATAL),
    (logging.ERROR, SeverityNumber.ERROR),
    (logging.WARNING, SeverityNumber.WARN),
    (logging.INFO, SeverityNumber.INFO),
    (logging.DEBUG, SeverityNumber.DEBUG),
)


def severity_number(levelno: int) -> SeverityNumber:
    """The OpenTelemetry severity of a stdlib level (custom levels land between the bands)."""
    for threshold, severity in _SEVERITY_BANDS:
        if levelno >= threshold:
            return SeverityNumber(severity.value + min(3, levelno - threshold))
    return SeverityNumber.TRACE if levelno > 0 else SeverityNumber.UNSPECIFIED


def log_attributes(record: logging.LogRecord) -> dict[str, Any]:
    """OTLP attributes of ``record``: correlation ID, code location, exception, bounded extras."""
    fields = _extra_fields(record).items()
    attributes: dict[str, Any] = {key: value for key, value in fields if value is not None}
    # Unstamped (``logs=False``), the record has no field: the export runs in the context the
    # record was made in, whose ID is the one stamping would have given it.
    cid = _record_fields(record).get("correlation_id") or correlation.correlation_id()
    if cid is not None:
        attributes[semconv.CORRELATION_ID] = cid
    elif not correlation.is_valid(attributes.get(semconv.CORRELATION_ID)):
        # ``extra={"correlation.id": ...}``, tracekit's own attribute: kept only if valid
        attributes.pop(semconv.CORRELATION_ID, None)
    path = record.pathname  # a file's name as the file system gave it
    attributes["code.file.path"] = clean_text(path) if isinstance(path, str) else path
    attributes["code.function.name"] = record.funcName
    attributes["code.line.number"] = record.lineno
    exc_info = _exception_of(record)
    if exc_info is not None and exc_info[0] is not None:
        attributes.update(_exception_attributes(exc_info))
    if record.stack_info:  # stack_info=True: where the call came from
        attributes["code.stacktrace"] = _bounded_text(record.stack_info, MAX_MESSAGE)
    return attributes


def _exception_of(record: logging.LogRecord) -> Any:
    """The record's ``exc_info``, or the one a structlog event dict names (which structlog's
    renderer formats in the handler, where the record's own is None): ``True`` for the
    exception being handled (the export runs in the logging call), an exception, or a
    ``sys.exc_info()`` tuple; None for neither.

    A record whose own is ``(None, None, None)`` holds none: structlog's ``aexception`` takes the
    exception in the caller and logs it in an executor thread, where ``Logger.exception`` finds
    nothing to take; the event dict's is the one."""
    if record.exc_info and record.exc_info[0] is not None:
        return record.exc_info
    event = _event_dict(record)
    exc_info = event.get("exc_info") if event is not None else None
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info if isinstance(exc_info[1], BaseException) else None
    return None


def _exception_attributes(exc_info: Any) -> Mapping[str, str]:
    kind, value, _ = exc_info
    stacktrace = "".join(traceback.format_exception(*exc_info))
    return {
        "exception.type": kind.__qualname__,
        "exception.message": _bounded_text(_text_of(value), MAX_VALUE),
        "exception.stacktrace": _bounded_text(stacktrace, MAX_MESSAGE),
    }


def build_log_exporter(options: Options) -> LogRecordExporter | None:
    """The log exporter matching ``options.exporter``, or ``OTEL_LOGS_EXPORTER`` where it says
    ``none`` or ``console`` (None for ``none``)."""
    exporter = config.signal_exporter("LOGS", options.exporter)
    if exporter == "otlp":
        from tracekit._runtime.export_watch import WatchedLogExporter

        return WatchedLogExporter()
    if exporter == "store":
        from tracekit.store._paths import NoStorePathError
        from tracekit.store.exporter import StoreLogExporter

        try:
            return StoreLogExporter(options.store)
        except NoStorePathError as error:  # the service runs on, its logs kept from the store
            logging.getLogger("tracekit").warning("tracekit: log records are not stored: %s", error)
            return None
    if exporter == "console":
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

        return ConsoleLogRecordExporter()
    return None


# Celery's task loggers (``get_task_logger``) hang under ``celery.task``, which Celery sets to
# propagate=False so its worker does not print task lines twice: they are the task's log lines.
EXPORT_POINTS = frozenset(("celery.task",))


def _exports(logger: logging.Logger) -> bool:
    """True when ``logger``'s records propagate to the root (or stop at an export point) and
    no handler on the way already hands them to an OpenTelemetry pipeline (the host's own
    bridge, or a ``LogExportHandler`` the host attached)."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(_is_otel_bridge(type(h)) and not _drops_records(h) for h in current.handlers):
            return False
        if current is logging.root or current.name in EXPORT_POINTS:
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def _drops_records(bridge: logging.Handler) -> bool:
    """Whether an OpenTelemetry bridge hands its records to no pipeline: made with the API's
    stand-in provider while none is set globally (contrib's ``LoggingInstrumentor`` adds such
    a handler to the root as it instruments, by default), or with the no-op one. The stand-in
    is private to the API (``ProxyLoggerProvider``), so known by its name: an API that renames
    it has its bridges taken as exporting, as before."""
    provider = getattr(bridge, "_logger_provider", None)  # where both LoggingHandlers keep it
    if _is_proxy(provider):  # it hands records to the global one, if set
        provider = get_logger_provider()
    return isinstance(provider, NoOpLoggerProvider) or _is_proxy(provider)


def _is_proxy(provider: object) -> bool:
    return type(provider).__name__ == "ProxyLoggerProvider"


_bridge_types: dict[type, bool] = {}


def _is_otel_bridge(cls: type) -> bool:
    """OpenTelemetry's stdlib bridge, ``LoggingHandler`` (the SDK's, or the newer one in
    ``opentelemetry-instrumentation-logging``), tracekit's ``LogExportHandler``, or a subclass
    of one; known without importing OpenTelemetry's."""
    found = _bridge_types.get(cls)
    if found is None:
        found = issubclass(cls, LogExportHandler) or any(
            c.__name__ == "LoggingHandler" and c.__module__.startswith("opentelemetry.")
            for c in cls.__mro__
        )
        _bridge_types[cls] = found
    return found


_previous_call_handlers = logging.Logger.callHandlers
_hooked = False  # our wrapper is in Logger.callHandlers' chain (perhaps under someone else's)


def _call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    """``Logger.callHandlers``: the host's handlers as before, then tracekit's export.

    The correlation fields move onto the record first (``extra=`` has been applied by now), so
    handlers that read a record's attributes without formatting it (``SocketHandler``,
    ``HTTPHandler``, OpenTelemetry's own logging bridge) ship them too.
    """
    exported_where_made = _stamped_elsewhere(record)
    if isinstance(record, _Correlating):
        _settle(record)
    _previous_call_handlers(self, record)
    handler = _handler
    if handler is not None and not exported_where_made and _exports(self):
        handler.handle(record)


def _stamped_elsewhere(record: logging.LogRecord) -> bool:
    """True for a record tracekit stamped in another process, handed on to this one (the
    stdlib's multi-process recipes: a ``QueueHandler`` or ``SocketHandler`` there, a listener
    calling ``logger.handle(record)`` here): tracekit exported it there, with the context it
    was logged in; exporting it again here would show every line twice. (Stamped here, the
    fields wait in a slot until this very call.)

    A record ``logging.makeLogRecord`` rebuilt here (the ``SocketHandler`` recipe's listener)
    is known as such: its process ID, from another container or host, may well be this
    process's (each container's first process is 1)."""
    if "service" not in record.__dict__ or _stamp(record) is not None:
        return False
    if isinstance(record, _Correlating):  # rebuilt by ``logging.makeLogRecord``
        return True
    process = record.__dict__.get("process")
    return process is not None and process != os.getpid()


def _hook_call_handlers() -> None:
    global _previous_call_handlers, _hooked
    if not _hooked:
        _previous_call_handlers = logging.Logger.callHandlers
        logging.Logger.callHandlers = _call_handlers  # type: ignore[method-assign]
        _hooked = True


def _unhook_call_handlers() -> None:
    global _hooked
    # Restore only our own wrapper; if someone wrapped it since, ours stays and passes through.
    if logging.Logger.callHandlers is _call_handlers:
        logging.Logger.callHandlers = _previous_call_handlers  # type: ignore[method-assign]
        _hooked = False


def _start_export(options: Options, resource: Resource | None) -> None:
    global _handler
    host = _host_logger_provider()
    if host is not None:
        # The application configured the SDK's logs itself: bridge into its pipeline, as a host
        # tracer provider gets tracekit's spans; no exporter of ours, and its provider stays its.
        _handler = _Bridge(host, owned=False)
        return
    exporter = build_log_exporter(options)
    if exporter is None:
        return
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    try:
        processor = BatchLogRecordProcessor(exporter)
    except ValueError as error:  # the SDK refuses an OTEL_BLRP_* value, naming its parameter
        raise batch_setting_error(error, "OTEL_BLRP") from None
    # No exit hook of the SDK's: it would shut the pipeline down before the host's own exit hooks
    # registered before init have run (tracekit's flushes at exit, ``state.flush_at_exit``).
    from tracekit._runtime.limits import log_record_limits

    provider = LoggerProvider(
        resource=resource, shutdown_on_exit=False, log_record_limits=log_record_limits()
    )
    provider.add_log_record_processor(processor)
    _handler = _Bridge(provider, owned=True)


def _host_logger_provider() -> LoggerProvider | None:
    """The SDK ``LoggerProvider`` the application set globally, if it set one."""
    from opentelemetry.sdk._logs import LoggerProvider

    current = get_logger_provider()
    return current if isinstance(current, LoggerProvider) else None


def _stop_export() -> _Bridge | None:
    """Stop exporting new records; returns the handler whose provider is still to shut down."""
    global _handler
    if _handler is None:
        return None
    handler, _handler = _handler, None
    return handler


# --- install / uninstall ----------------------------------------------------------------------


def install(options: Options, resource: Resource | None = None) -> None:
    """Stamp records (``options.logs``) and export them (``options.export_logs``)."""
    global _service
    with _lock:
        _service = options.service_name
        if options.logs:
            _start_stamping()
        if options.export_logs and _handler is None:
            _start_export(options, resource)
        if _stamping or _handler is not None:
            _hook_call_handlers()


def uninstall() -> None:
    """Undo ``install``: flush and remove the export handler, stop stamping records."""
    provider = detach()
    if provider is not None:
        provider.shutdown()  # flushes what is still batched


def detach() -> LoggerProvider | None:
    """``uninstall`` but for the export: records are no longer stamped or exported; returns
    the provider of ours whose shutdown exports what is still batched (None without one: no
    export, or the host's provider, which is the host's to shut down)."""
    with _lock:
        stopped = _stop_export()
        _stop_stamping()
        _unhook_call_handlers()
    return None if stopped is None or not stopped.owned else stopped.provider


def flush(timeout_millis: int = 30_000) -> bool:
    """Export the log records still batched (for a process about to exit); True when done
    within ``timeout_millis``."""
    handler = _handler
    return True if handler is None else _flushed_within(handler.provider, timeout_millis)


def _flushed_within(provider: LoggerProvider, timeout_millis: int) -> bool:
    """Flush ``provider`` in a daemon thread waited for ``timeout_millis`` at most: the SDK's
    flush ignores its timeout and waits out the exporter's own, retries included."""
    outcome: list[bool] = []

    def flush_provider() -> None:
        try:
            outcome.append(bool(provider.force_flush(timeout_millis)))
        except Exception as error:
            report_once("log flush", error)

    state.bounded(flush_provider, "tracekit log flush", timeout_millis / 1000)
    return outcome == [True]
