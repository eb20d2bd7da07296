"""A warning when the OTLP endpoint takes nothing, and a word when it takes again: telemetry
must not vanish silently.

The SDK's exporter retries and then drops the batch, logging each attempt under
``opentelemetry.*``; tracekit adds one warning of its own per signal and outage that says where
it tried to send and what to do about it, and one line as the outage ends, with what it lost.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status
from opentelemetry.util.re import parse_env_headers
from opentelemetry.util.types import Attributes, AttributeValue

from tracekit import config
from tracekit._runtime import state
from tracekit._runtime.export_failure import failure_of, refused
from tracekit._runtime.guard import guarded, instrumentation_suppressed, without_url_secrets
from tracekit._runtime.otlp_settings import endpoint, exporter_arguments, with_grpc_compression
from tracekit._utf8 import clean_text, clean_value, escaped

_log = logging.getLogger("tracekit")
T = TypeVar("T")


def otlp_endpoint(signal: str, protocol: str) -> str:
    """Where the OTLP exporter sends ``signal`` (traces, logs), by the SDK's variables, for a
    log line (without credentials)."""
    return _without_credentials(endpoint(signal, protocol))


def otlp_protocol(signal: str) -> str:
    """The protocol the SDK's variables choose for ``signal``'s (``traces``, ``logs``) OTLP
    exporter (``config.otlp_protocol``), once that exporter is known to be installed: found,
    not imported (``_ExporterOfThisProcess`` imports it at the first export)."""
    protocol, variable = config.otlp_protocol(signal.upper())
    if protocol == "grpc" and not all(map(_installed, ("grpc", _GRPC_EXPORTER_PACKAGE))):
        raise config.ConfigError(
            f"{variable}=grpc needs OpenTelemetry's gRPC exporter: pip install 'tracekit[grpc]'"
        )
    return protocol


def exporter_module(signal: str, protocol: str) -> str:
    """The module of the class of ``signal``'s OTLP exporter in ``protocol``: the name of the
    logger it logs to."""
    package = "grpc" if protocol == "grpc" else "http"
    return f"opentelemetry.exporter.otlp.proto.{package}.{_EXPORTERS[signal][0]}"


def otlp_exporter(signal: str, protocol: str, arguments: dict[str, Any]) -> Any:
    """A new OTLP exporter of ``signal`` in ``protocol``, made with ``arguments``
    (``exporter_arguments``)."""
    module = importlib.import_module(exporter_module(signal, protocol))
    class_name = _EXPORTERS[signal][1]
    _making.exporter = True
    try:
        return getattr(module, class_name)(**with_grpc_compression(arguments))
    finally:
        _making.exporter = False


def check_headers(signal: str) -> None:
    """Parse the headers ``signal``'s exporter will send (``OTEL_EXPORTER_OTLP_[<SIGNAL>_]
    HEADERS``) as it does, so that the SDK warns of a malformed member as ``init`` runs, not at
    the first export, where the exporter is made and parses them again, quietly."""
    specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS")
    logging.getLogger(_HEADER_PARSER_LOGGER).addFilter(_header_values_hidden)  # added once
    parse_env_headers(specific or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""), liberal=True)


_GRPC_EXPORTER_PACKAGE = "opentelemetry.exporter.otlp.proto.grpc"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import, or is hidden
        return False


# The SDK's parser of OTEL_EXPORTER_OTLP_HEADERS, which logs nothing but this warning.
_HEADER_PARSER_LOGGER = "opentelemetry.util.re"


class _HeaderValuesHidden(logging.Filter):
    """The SDK warns of a malformed ``OTEL_EXPORTER_OTLP_HEADERS`` member by quoting it whole,
    its value (an API key, ``Authorization="Bearer …"``) included: only its name is kept, and
    only when it is a header name (``Bearer abc`` is all value). The warnings of an exporter
    being made are left out: ``check_headers`` gave them in ``init``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_making, "exporter", False):
            return False
        if isinstance(record.args, tuple) and record.args and isinstance(record.args[0], str):
            record.args = (_name_of_member(record.args[0]), *record.args[1:])
        return True


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")


def _name_of_member(member: str) -> str:
    """``name=…`` of a ``name=value`` member; ``…`` when no header name comes before ``=``."""
    name, separator, _ = member.partition("=")
    name = name.strip(" \t")
    return f"{name}=…" if separator and _HEADER_NAME.fullmatch(name) else "…"


_header_values_hidden = _HeaderValuesHidden()
_making = threading.local()  # .exporter: whether this thread is making an exporter


_EXPORTERS = {
    "traces": ("trace_exporter", "OTLPSpanExporter"),
    "logs": ("_log_exporter", "OTLPLogExporter"),
}


def _without_credentials(url: str) -> str:
    """``url`` for a log line: without userinfo, and with its query (``?api_key=…``, a token
    some backends take there) and fragment cut to ``?…``."""
    bare = "//" not in url  # a gRPC endpoint is often host:port alone, userinfo and all
    parts = urlsplit(f"//{url}" if bare else url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "…" if parts.query or parts.fragment else ""
    text = urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))
    return text.removeprefix("//") if bare else text


class ExportWatch(logging.Filter):
    """Warns once per outage, as an export of ``what`` to ``endpoint`` first fails, and says
    when it ends, with how many at least were dropped meanwhile: a collector that restarts (a
    deploy, a crash) goes away more than once in a service's life, and each time data is lost.

    During an outage it also quiets the exporter's own loggers (a filter on them): the SDK logs
    its retries and the failure of every batch, lines that explained the first failure and,
    repeated for each batch, bury the application's own.
    """

    def __init__(
        self, what: str, endpoint: str, exporter_module: str, *, resends_unencodable: bool = False
    ) -> None:
        super().__init__()
        self.what = what
        self.resends_unencodable = resends_unencodable
        self.endpoint = endpoint
        self.failing = False
        self.dropped = 0  # during the current outage
        self._pid = os.getpid()
        self._loggers: dict[str, logging.Logger] = {}
        self._filter_loggers([exporter_module])
        self._request_lines = _ExportRequestLines()
        logging.getLogger(_HTTP_CLIENT_LOGGER).addFilter(self._request_lines)

    def following(self, exporter: T) -> T:
        """``exporter``, the loggers of whose classes' modules this watch filters too (the gRPC
        exporters log from their base's): it is made at the first export, after the watch."""
        self._filter_loggers(c.__module__ for c in type(exporter).__mro__)
        return exporter

    def _filter_loggers(self, names: Iterable[str]) -> None:
        for name in names:
            if name.startswith("opentelemetry.exporter.") and name not in self._loggers:
                logger = self._loggers[name] = logging.getLogger(name)
                # First: the SDK's own filter on some of them (DuplicateFilter) drops a line
                # said again within 20 s, the retry line of the next export among them, unseen.
                logger.filters.insert(0, self)

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the exporter's lines through, without URL secrets, unless its endpoint is known
        to be failing; its "Failed to encode" line of a batch with text UTF-8 cannot hold is
        left out too: tracekit sends that batch again (``WatchedSpanExporter.export``)."""
        self._note_failure(record)
        if _retry_skipped(record):
            raise RetriesSkipped  # out of the SDK's export, before its wait (one_attempt_only)
        if self.failing or (self.resends_unencodable and _encoding_error(record)):
            return False
        _cut_url_secrets(record)
        return True

    @guarded(None)
    def _note_failure(self, record: logging.LogRecord) -> None:
        """Keep what ``record`` says went wrong, when it says more than "unreachable": the
        last such line of an export explains its failure (a restarted collector's stale
        connection, reset, is followed by refused ones). Kept for the thread that exports:
        the gRPC exporters of spans and of log records log to one logger, which each watch
        filters, and the first filter rewrites the line (``_cut_url_secrets``)."""
        failure = failure_of(record, self.endpoint)
        if failure is not None and record.levelno >= logging.WARNING:
            _export_failure.text = failure
            _export_failure.refused = refused(record)

    @contextmanager
    def one_attempt_only(self) -> Iterator[None]:
        """Around one export on this thread: while its endpoint is known to refuse connections
        (nothing listens there: no collector in a test run or on a laptop), a refused attempt
        ends it, raising ``RetriesSkipped``, instead of the SDK waiting 1, 2 and 4 s to try
        again. Each stop's flush (a test client's lifespan, ``tracekit.shutdown()`` in a
        fixture, the exit) waited those 7 s. So does any export while the process stops
        (``state.stopping``): a collector that refuses then is not coming back in time. The
        first refusal of a running service is retried as before (a collector starting beside
        it), and an export that succeeds ends the rule."""
        _export_failure.endpoint = self.endpoint
        try:
            yield
        finally:
            _export_failure.endpoint = None

    def close(self) -> None:
        """Take the filter off the exporter's loggers."""
        for logger in self._loggers.values():
            logger.removeFilter(self)
        logging.getLogger(_HTTP_CLIENT_LOGGER).removeFilter(self._request_lines)

    def exported_in_requests(
        self, batch: Sequence[T], text_size: Callable[[T], int], export: Callable[[list[T]], bool]
    ) -> bool:
        """Whether ``export`` took all of ``batch``, sent in requests a collector takes
        (``_export_requests``), and note the outcome. After a failed request the rest of the
        batch is dropped, as a whole batch was: the collector is not taking any."""
        sent = 0
        for request in _export_requests(batch, text_size):
            if not export(request):
                self.saw(True, len(batch) - sent)
                return False
            sent += len(request)
        self.saw(False)
        return True

    def saw(self, failed: bool, dropped: int = 0) -> None:
        """Record one export's outcome (``dropped``: what a failed one lost): a failure quiets
        the exporter's lines until a success (the SDK's lines of the first failure of an outage
        explain it)."""
        self._forget_parents_outage()
        began, ended = failed and not self.failing, self.failing and not failed
        self.failing = failed
        self.dropped += dropped
        failure = getattr(_export_failure, "text", "")
        was_refused = getattr(_export_failure, "refused", False)
        _export_failure.text, _export_failure.refused = "", False
        if failed and was_refused:
            _refusing.add(self.endpoint)
        else:
            _refusing.discard(self.endpoint)
        if began and failure:
            _log.warning(
                "tracekit: could not export %s to the OTLP endpoint %s: %s",
                self.what,
                self.endpoint,
                failure,
            )
        elif began:
            _log.warning(
                "tracekit: could not export %s to the OTLP endpoint %s (unreachable or refusing);"
                " they are dropped until it answers. Start a collector there (or `tracekit"
                " collector`), or set TRACEKIT_EXPORTER=store to write to the local store.",
                self.what,
                self.endpoint,
            )
        elif ended:
            self._say_outage_ended()

    def _forget_parents_outage(self) -> None:
        """A forked worker exports on a connection of its own (``_ExporterOfThisProcess``): what
        its parent lost is not its to report."""
        if self._pid != os.getpid():
            self._pid, self.failing, self.dropped = os.getpid(), False, 0

    def _say_outage_ended(self) -> None:
        # "at least": what the failed exports held is counted; what the SDK's batch queue,
        # full while they waited out their timeout, dropped is not (the SDK counts it privately)
        dropped, self.dropped = self.dropped, 0
        _log.warning(
            "tracekit: the OTLP endpoint %s takes %s again; at least %d %s dropped meanwhile.",
            self.endpoint,
            self.what,
            dropped,
            "was" if dropped == 1 else "were",
        )


# What the SDK's lines said of the failure of the export this thread is making (``failure_of``).
_export_failure = threading.local()
# The endpoints whose last export was refused a connection (``ExportWatch.one_attempt_only``),
# for every exporter of this process: ``init`` after ``shutdown`` makes new ones.
_refusing: set[str] = set()
# The SDK's line before it waits to try an export again (OTLP/HTTP's and OTLP/gRPC's).
_RETRY_LINE = "retrying in"


class RetriesSkipped(Exception):
    """Ends an export at its refused attempt (``ExportWatch.one_attempt_only``)."""


def _retry_skipped(record: logging.LogRecord) -> bool:
    """Whether ``record`` is the SDK's line before it waits to try a refused export again, in
    an export ``one_attempt_only`` ends there. Asked at each retry: an export that began
    before a stop ends at its next one (its lock held up the stop's flush)."""
    endpoint = getattr(_export_failure, "endpoint", None)
    if endpoint is None or not (endpoint in _refusing or state.stopping()):
        return False
    return _RETRY_LINE in str(record.msg) and refused(record)


def _encoding_error(record: logging.LogRecord) -> bool:
    args = record.args
    return isinstance(args, tuple) and bool(args) and isinstance(args[0], UnicodeEncodeError)


# Userinfo before a host without "//": the gRPC exporter names its endpoint as the URL's
# netloc (``user:pass@host:4317``). A password may hold "@": each part up to one goes. (At
# most 256 characters a part, so that a long line without "@" costs linear time.)
_BARE_USERINFO = re.compile(r"[^\s/@'\"]{1,256}@(?=[^\s@'\"])")


# The HTTP client's refusal of a header value it cannot send (a line break in a token) quotes it:
# requests' words, or http.client's where requests (before 2.32) left the value to it.
_HEADER_VALUE = re.compile(r"(in header value: |Invalid header value ).+", re.DOTALL)


def _cut_url_secrets(record: logging.LogRecord) -> None:
    """Rewrite ``record``'s message without URL queries and credentials: the SDK's retry and
    failure lines quote the HTTP client's error, which names the request's URL whole
    (``…with url: /v1/traces?api_key=…``), or the gRPC endpoint with its userinfo, or an
    ``OTEL_EXPORTER_OTLP_HEADERS`` value it refused (``…in header value: 'Bearer …'``); and
    escaped: they quote the server's reason phrase (``code: 401, reason: …``) as it came."""
    try:
        message = record.getMessage()
    except Exception:  # a line the SDK cannot format: the handler reports it as it would
        return
    redacted = _BARE_USERINFO.sub("", without_url_secrets(message))
    redacted = escaped(_HEADER_VALUE.sub(r"\1…", redacted))
    if redacted != message:
        record.msg, record.args = redacted, ()


# The HTTP client under the OTLP/HTTP exporter: at DEBUG it logs every request line, query and all.
_HTTP_CLIENT_LOGGER = "urllib3.connectionpool"


class _ExportRequestLines(logging.Filter):
    """Cuts URL secrets from the HTTP client's lines about the exporter's own requests, which
    it makes with instrumentation suppressed; the application's requests' lines stay whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        if instrumentation_suppressed():
            _cut_url_secrets(record)
        return True


class _ExporterOfThisProcess:
    """The OTLP exporter of ``signal``, made at the first export of each process; its settings
    are read, and refused, as this is made (in ``init``).

    Not in ``init``: the exporter imports its HTTP client (``requests``, ``urllib3``) or gRPC,
    which keep ``ssl``'s names. gunicorn's gevent worker monkey-patches after the fork, and
    could not patch those the preloaded app's ``init`` had imported in the master: every HTTPS
    call the app made in a worker through ``requests`` failed with ``RecursionError``.

    And anew in a child of ``fork()``: an exporter keeps its connection to the collector open
    between exports (an HTTP session, a gRPC channel), and a forked child inherits it: parent
    and children then wrote their requests onto one socket, interleaved (the collector answered
    400), and read each other's answers (exports waited out their timeout), so batches were lost.
    """

    def __init__(self, signal: str) -> None:
        self._signal = signal
        self._protocol = otlp_protocol(signal)
        self._arguments = exporter_arguments(signal, self._protocol)
        check_headers(signal)
        self.endpoint = otlp_endpoint(signal, self._protocol)
        self.module = exporter_module(signal, self._protocol)
        self._exporter: Any = None
        self._pid: int | None = None

    def get(self) -> Any:
        """This process's exporter (no lock: one held at a fork would stay held in the child;
        two threads of a new child may each make one, and one of them is dropped)."""
        if self._pid != os.getpid():
            self._exporter = otlp_exporter(self._signal, self._protocol, self._arguments)
            self._pid = os.getpid()
        return self._exporter

    def shutdown(self) -> None:
        """Shut this process's exporter down, if it made one."""
        if self._pid == os.getpid():
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int) -> bool:
        """Flush this process's exporter, if it made one."""
        return self._pid != os.getpid() or bool(self._exporter.force_flush(timeout_millis))


class WatchedSpanExporter(SpanExporter):
    """The OTLP span exporter, warning once when its exports fail."""

    def __init__(self) -> None:
        self._exporters = _ExporterOfThisProcess("traces")
        self.watch = ExportWatch(
            "spans", self._exporters.endpoint, self._exporters.module, resends_unencodable=True
        )
        logging.getLogger(_ATTRIBUTE_ENCODER_LOGGER).addFilter(_unencodable_attribute)

    @property
    def inner(self) -> SpanExporter:
        """The wrapped OTLP exporter, this process's own."""
        exporter: SpanExporter = self.watch.following(self._exporters.get())
        return exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the wrapped exporter, in requests a collector takes
        (``ExportWatch.exported_in_requests``).

        The SDK batches by count, whatever the spans hold: 20 spans with a 1 MB attribute each
        made one request a collector refused whole (413, or gRPC's largest message), and every
        span batched with them was lost."""
        if state.out_of_time():
            return SpanExportResult.FAILURE  # dropped: what the bound of a flush says
        sent = self.watch.exported_in_requests(spans, _span_text_size, self._export_request)
        return SpanExportResult.SUCCESS if sent else SpanExportResult.FAILURE

    def _export_request(self, spans: Sequence[ReadableSpan]) -> bool:
        """Export one request's spans; whether they went.

        A failed batch holding text UTF-8 cannot (a lone surrogate: JSON's ``"\\ud800"`` in a
        request body that a span is named after) goes again with U+FFFD in its place: OTLP's
        protobuf cannot encode it, and the SDK dropped the whole batch, other requests' spans
        too. Looked for only once an export failed: the batch's text costs nothing to check
        while exports succeed. An attribute holding such text, which the SDK's encoder would
        drop alone (with a traceback on stderr), fails the first attempt too
        (``_refusing_unencodable_attributes``), so that it is sent with U+FFFD as well; where
        the host's logging configuration silences that line, the batch's attributes are looked
        at before it goes (``_encoder_silenced``)."""
        if _encoder_silenced() and not all(map(_utf8_attributes, spans)):
            spans = [_cleaned_span(span) for span in spans]
        try:
            with _refusing_unencodable_attributes() as unencodable, self.watch.one_attempt_only():
                result = self.inner.export(spans)
        except (UnicodeEncodeError, RetriesSkipped):  # gRPC lets the encoder's error out
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE and (unencodable or not all(map(_utf8_span, spans))):
            result = self.inner.export([_cleaned_span(span) for span in spans])
        return result is SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.watch.close()
        self._exporters.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self._exporters.force_flush(timeout_millis)


class WatchedLogExporter(LogRecordExporter):
    """The OTLP log record exporter, warning once when its exports fail."""

    def __init__(self) -> None:
        self._exporters = _ExporterOfThisProcess("logs")
        self.watch = ExportWatch("log records", self._exporters.endpoint, self._exporters.module)

    @property
    def inner(self) -> LogRecordExporter:
        """The wrapped OTLP exporter, this process's own."""
        exporter: LogRecordExporter = self.watch.following(self._exporters.get())
        return exporter

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Export through the wrapped exporter, in requests a collector takes
        (``ExportWatch.exported_in_requests``)."""
        if state.out_of_time():
            return LogRecordExportResult.FAILURE  # dropped: what the bound of a flush says
        sent = self.watch.exported_in_requests(batch, _text_size, self._export_request)
        return LogRecordExportResult.SUCCESS if sent else LogRecordExportResult.FAILURE

    def _export_request(self, records: Sequence[ReadableLogRecord]) -> bool:
        try:
            with self.watch.one_attempt_only():
                return self.inner.export(records) is LogRecordExportResult.SUCCESS
        except RetriesSkipped:
            return False

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.watch.close()
        self._exporters.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self._exporters.force_flush(timeout_millis)


# The text one export request of spans or log records holds at most: each character is at most
# 4 bytes of UTF-8, so a request stays under gRPC's default largest message (4 MiB, an
# OpenTelemetry Collector's) and far under the HTTP receivers' bodies (16 MiB for tracekit's).
MAX_REQUEST_TEXT = 1024 * 1024
_RECORD_OVERHEAD = 256  # a record's or span's ids, times, severity and encoding, about


def _export_requests(batch: Sequence[T], text_size: Callable[[T], int]) -> Iterator[list[T]]:
    """``batch`` in consecutive parts of at most ``MAX_REQUEST_TEXT`` each, by ``text_size``,
    then each larger item alone. The SDK batches by count: 512 log records at tracekit's bounds
    (a 16 KiB message and traceback, 32 fields of 1 KiB) made a request of 30 MiB, which a
    collector refused whole. A larger item goes last: a collector may refuse it, and the
    requests after a refused one are not sent."""
    part: list[T] = []
    size = 0
    larger: list[T] = []
    for item in batch:
        item_size = text_size(item)
        if item_size > MAX_REQUEST_TEXT:
            larger.append(item)
            continue
        if part and size + item_size > MAX_REQUEST_TEXT:
            yield part
            part, size = [], 0
        part.append(item)
        size += item_size
    if part:
        yield part
    for item in larger:
        yield [item]


def _text_size(record: ReadableLogRecord) -> int:
    """About how much text ``record`` holds: its body, its attributes' names and values."""
    log_record = record.log_record
    return _RECORD_OVERHEAD + len(str(log_record.body)) + _attributes_size(log_record.attributes)


def _span_text_size(span: ReadableSpan) -> int:
    """About how much text ``span`` holds: its name, status, and the names and values of its
    attributes, its events' and its links'. (In the export thread, for every span: a loop over
    the attributes, no list of their texts.)"""
    size = _RECORD_OVERHEAD + len(span.name) + _attributes_size(span.attributes)
    for event in span.events:
        size += _RECORD_OVERHEAD + len(event.name) + _attributes_size(event.attributes)
    for link in span.links:
        size += _RECORD_OVERHEAD + _attributes_size(link.attributes)
    return size + len(span.status.description or "")


def _attributes_size(attributes: Mapping[str, object] | None) -> int:
    """The names and values of ``attributes`` as text (a value that is no ``str`` as it prints:
    a sequence with its brackets and quotes, which counts it generously)."""
    size = 0
    for key, value in (attributes or {}).items():
        size += len(key) + (len(value) if type(value) is str else len(str(value)))
    return size


def _utf8_span(span: ReadableSpan) -> bool:
    """Whether every text of ``span`` that protobuf encodes whole (its name, its events' names,
    its status) is UTF-8. Attributes are left out: the encoder's error line about one tells
    (``_UnencodableAttribute``)."""
    texts = [span.name, span.status.description or "", *(event.name for event in span.events)]
    return all(clean_text(text) is text for text in texts)


def _utf8_attributes(span: ReadableSpan) -> bool:
    """Whether every attribute of ``span``, its events' and its links', is text UTF-8 can
    hold (keys too)."""
    groups = [span.attributes, *(e.attributes for e in span.events)]
    groups += [link.attributes for link in span.links]
    return all(_utf8(k) and _utf8(v) for group in groups for k, v in (group or {}).items())


def _utf8(value: object) -> bool:
    if isinstance(value, str):
        return clean_text(value) is value
    if isinstance(value, list | tuple):
        return all(map(_utf8, value))
    return True


def _encoder_silenced() -> bool:
    """Whether the host's logging configuration keeps the encoder from making its error line
    (a logger disabled by ``dictConfig``, a level above ERROR, ``logging.disable``): the line
    that tells ``_UnencodableAttribute`` of an attribute it drops."""
    return not logging.getLogger(_ATTRIBUTE_ENCODER_LOGGER).isEnabledFor(logging.ERROR)


# The SDK's attribute encoder: it logs an attribute it cannot encode, then drops it.
_ATTRIBUTE_ENCODER_LOGGER = "opentelemetry.exporter.otlp.proto.common._internal"
_attempt = threading.local()


@contextmanager
def _refusing_unencodable_attributes() -> Iterator[list[bool]]:
    """While it runs, an attribute the encoder cannot encode fails the whole export on this
    thread (``_unencodable_attribute``) instead of being dropped; the list it yields is then
    ``[True]``. Nothing is checked while exports succeed: only the encoder's error line runs
    the filter."""
    refused: list[bool] = []
    _attempt.refused = refused
    try:
        yield refused
    finally:
        _attempt.refused = None


class _UnencodableAttribute(logging.Filter):
    """Raises the encoder's ``UnicodeEncodeError`` again, out of its "Failed to encode key"
    line, during ``_refusing_unencodable_attributes``; passes every line through otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = getattr(_attempt, "refused", None)
        args = record.args if isinstance(record.args, tuple) else ()
        error = next((a for a in args if isinstance(a, UnicodeEncodeError)), None)
        if refused is None or error is None:
            return True
        refused.append(True)
        raise error


_unencodable_attribute = _UnencodableAttribute()


def _cleaned_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with each lone surrogate of its text (attributes too) as U+FFFD; what the SDK
    counted as dropped stays counted."""
    events = [
        Event(clean_text(e.name), _cleaned(e.attributes, e.dropped_attributes), e.timestamp)
        for e in span.events
    ]
    links = [
        Link(link.context, _cleaned(link.attributes, link.dropped_attributes))
        for link in span.links
    ]
    return ReadableSpan(
        name=clean_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_cleaned(span.attributes, span.dropped_attributes),
        events=_counted(events, span.dropped_events),
        links=_counted(links, span.dropped_links),
        kind=span.kind,
        status=Status(span.status.status_code, clean_text(span.status.description or "") or None),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _cleaned(attributes: Attributes, dropped: int) -> BoundedAttributes:
    # clean_value keeps each value's type (text stays text, a sequence a sequence).
    cleaned = BoundedAttributes(
        attributes={
            clean_text(k): cast(AttributeValue, clean_value(v))
            for k, v in (attributes or {}).items()
        },
        immutable=True,
    )
    cleaned.dropped = dropped
    return cleaned


def _counted(items: list[T], dropped: int) -> BoundedList[T]:
    kept = BoundedList.from_seq(None, items)
    kept.dropped = dropped
    return kept
