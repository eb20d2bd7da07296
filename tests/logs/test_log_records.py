"""Log correlation in-process: stamped stdlib records, the JSON line format, structlog, severities.

``tracekit.logs.install`` is called directly (with export off) so the test session's own SDK
provider stays in place. ``uninstall`` leaves tracekit's factory in place, giving records empty
fields; each test then puts the factory it found back, as a fresh process would have it.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import pickle
import re
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from queue import Queue

import httpx
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tracekit import config, correlation, logs
from tracekit.structlog import add_tracekit_context


@pytest.fixture
def stamping() -> Iterator[None]:
    original = logging.getLogRecordFactory()
    logs.install(config.resolve("billing", environ={}, export_logs=False))
    yield
    logs.uninstall()
    logging.setLogRecordFactory(original)


@pytest.fixture
def text_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with the application's own handler and %-format, captured in memory."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(correlation_id)s %(trace_id)s %(message)s")
    )
    logger = logging.getLogger("tests.logs.app")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _in_request(cid: str, tracer_provider: TracerProvider, emit: object) -> str:
    token = correlation.set_correlation_id(cid)
    try:
        tracer = trace.get_tracer("tests", tracer_provider=tracer_provider)
        with tracer.start_as_current_span("request") as span:
            emit()  # type: ignore[operator]
            return f"{span.get_span_context().trace_id:032x}"
    finally:
        correlation.reset_correlation_id(token)


def test_application_format_shows_correlation_fields(
    stamping: None, text_log: tuple[logging.Logger, io.StringIO], tracer_provider: TracerProvider
) -> None:
    logger, stream = text_log
    trace_id = _in_request("order-42", tracer_provider, lambda: logger.info("paid"))
    logger.info("idle")
    lines = stream.getvalue().splitlines()
    assert lines == [f"INFO order-42 {trace_id} paid", "INFO - - idle"]


def test_extra_with_the_same_names_wins_and_does_not_raise(
    stamping: None, text_log: tuple[logging.Logger, io.StringIO], tracer_provider: TracerProvider
) -> None:
    logger, stream = text_log
    _in_request(
        "order-1", tracer_provider, lambda: logger.info("x", extra={"correlation_id": "mine"})
    )
    assert stream.getvalue().startswith("INFO mine ")


def test_any_extra_name_the_stdlib_accepts_is_accepted(
    stamping: None, text_log: tuple[logging.Logger, io.StringIO], tracer_provider: TracerProvider
) -> None:
    """``extra={"settle": ...}`` (a payment's settlement, say) shadowed a method tracekit had
    put on the record, and the logging call raised TypeError into the application."""
    logger, stream = text_log
    handler = logger.handlers[0]
    handler.setFormatter(logging.Formatter("%(correlation_id)s %(message)s %(settle)s"))
    _in_request("order-3", tracer_provider, lambda: logger.info("paid", extra={"settle": "T+1"}))
    assert stream.getvalue() == "order-3 paid T+1\n"


class _AppRecord(logging.LogRecord):
    """A record class of the application's own, made by its factory."""

    def getMessage(self) -> str:
        return "app: " + super().getMessage()


@pytest.mark.parametrize("record_class", [logging.LogRecord, _AppRecord])
def test_a_factory_set_before_tracekit_keeps_its_records_and_extra_still_wins(
    record_class: type[logging.LogRecord],
    text_log: tuple[logging.Logger, io.StringIO],
    tracer_provider: TracerProvider,
) -> None:
    """An application (or library) factory installed before ``init``: its records, its fields
    and its record class are kept, and ``extra=`` may still name tracekit's fields."""
    original = logging.getLogRecordFactory()

    def app_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = record_class(*args, **kwargs)  # type: ignore[arg-type]
        record.host = "web-1"
        return record

    logging.setLogRecordFactory(app_factory)
    logs.install(config.resolve("billing", environ={}, export_logs=False))
    logger, stream = text_log
    try:
        trace_id = _in_request("order-9", tracer_provider, lambda: (
            logger.info("one", extra={"correlation_id": "mine", "service": "billing-api"}),
            logger.info("two"),
        ))  # fmt: skip
        record = logger.makeRecord("n", logging.INFO, "f", 1, "three", None, None)
    finally:
        logs.uninstall()
        logging.setLogRecordFactory(original)

    assert stream.getvalue().splitlines() == [
        f"INFO mine {trace_id} {'app: ' if record_class is _AppRecord else ''}one",
        f"INFO order-9 {trace_id} {'app: ' if record_class is _AppRecord else ''}two",
    ]
    assert isinstance(record, record_class)
    assert (record.host, record.correlation_id, record.service) == ("web-1", "-", "billing")  # type: ignore[attr-defined]
    copied = pickle.loads(pickle.dumps(record))  # a QueueHandler to another process does this
    assert type(copied) is record_class
    assert (copied.host, copied.service, copied.getMessage()) == (
        "web-1", "billing", record.getMessage()
    )  # fmt: skip


def test_records_carry_fields_as_attributes_before_formatting(
    stamping: None, tracer_provider: TracerProvider
) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("tests.logs.attrs")
    logger.addHandler(keep := Keep())
    logger.setLevel(logging.INFO)
    try:
        _in_request("abc-1", tracer_provider, lambda: logger.info("hello"))
    finally:
        logger.removeHandler(keep)
    record = seen[0]
    assert (record.correlation_id, record.service) == ("abc-1", "billing")  # type: ignore[attr-defined]
    assert len(record.span_id) == 16  # type: ignore[attr-defined]


def test_socket_handler_ships_the_fields(stamping: None, tracer_provider: TracerProvider) -> None:
    """``SocketHandler`` pickles the record's attributes without formatting it; a real one, to a
    listener on loopback, must still carry the fields (and ``extra=`` still wins)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        handler = logging.handlers.SocketHandler("127.0.0.1", server.getsockname()[1])
        logger = logging.getLogger("tests.logs.socket")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            _in_request("abc-2", tracer_provider, lambda: logger.info("shipped"))
            logger.info("mine", extra={"correlation_id": "set-by-app"})
        finally:
            logger.removeHandler(handler)
            handler.close()
        connection, _ = server.accept()
        with connection, connection.makefile("rb") as stream:
            shipped = [pickle.loads(stream.read(struct.unpack(">L", stream.read(4))[0]))
                       for _ in range(2)]  # fmt: skip
    assert (shipped[0]["msg"], shipped[0]["correlation_id"]) == ("shipped", "abc-2")
    assert (shipped[0]["service"], len(shipped[0]["span_id"])) == ("billing", 16)
    assert shipped[1]["correlation_id"] == "set-by-app"


def test_uninstall_stops_stamping_but_records_keep_empty_fields(
    tracer_provider: TracerProvider,
) -> None:
    """After ``shutdown`` (what a process logs at exit, the exporter's last messages) a format
    naming the fields must still work: they are there, empty."""
    original = logging.getLogRecordFactory()
    logs.install(config.resolve("billing", environ={}, export_logs=False))
    logs.uninstall()
    try:
        logger = logging.getLogger("tests.logs.after")
        token = correlation.set_correlation_id("order-1")
        try:
            with tracer_provider.get_tracer("t").start_as_current_span("in a request"):
                record = logger.makeRecord("n", 20, "f", 1, "m", None, None)
        finally:
            correlation.reset_correlation_id(token)
    finally:
        logging.setLogRecordFactory(original)
    assert (record.correlation_id, record.trace_id, record.span_id) == ("-", "-", "-")  # type: ignore[attr-defined]
    assert logging.Formatter("%(correlation_id)s %(message)s").format(record) == "- m"


def _json_line(logger_name: str, emit: object) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        emit(logger)  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("\n") == 1, "one record must be exactly one line"
    parsed: dict[str, object] = json.loads(text)
    return parsed


def test_json_line_has_correlation_fields(stamping: None, tracer_provider: TracerProvider) -> None:
    box: dict[str, object] = {}

    def emit(logger: logging.Logger) -> None:
        box["trace_id"] = _in_request(
            "req-7", tracer_provider, lambda: logger.warning("charged %s", "EUR 5", extra={"n": 3})
        )

    line = _json_line("tests.logs.json", emit)
    assert line["message"] == "charged EUR 5"
    assert line["level"] == "WARNING"
    assert line["correlation_id"] == "req-7"
    assert line["trace_id"] == box["trace_id"]
    assert line["service"] == "billing"
    assert line["n"] == 3
    assert str(line["time"]).endswith("Z")


def test_json_line_escapes_and_bounds_hostile_values(stamping: None) -> None:
    hostile = 'x"}\n{"level":"CRITICAL"}\r\x00' + "A" * 100_000

    def emit(logger: logging.Logger) -> None:
        logger.info(
            "got %s",
            hostile,
            extra={"correlation_id": "bad id\n", "blob": object(), "big": "B" * 5000},
        )

    line = _json_line("tests.logs.hostile", emit)
    assert line["level"] == "INFO"
    assert str(line["message"]).startswith('got x"}\n{"level"')
    assert len(str(line["message"])) <= logs.MAX_MESSAGE + 20
    assert "correlation_id" not in line  # an invalid ID from extra= is dropped, not written
    assert len(str(line["big"])) <= logs.MAX_VALUE + 20
    assert str(line["blob"]).startswith("<object object")


class _Upstream:
    """An object whose repr quotes its URL whole, credentials and all (as clients' do)."""

    def __repr__(self) -> str:
        return "<Upstream 'https://svc:p@ss-SECRET@db.internal:5432/orders?token=T0KEN'>"


def test_json_line_cuts_credentials_and_query_from_an_objects_repr(stamping: None) -> None:
    """A password with an unencoded ``@`` (libraries split userinfo at the last one): only the
    part before the first ``@`` was cut, and ``ss-SECRET`` was written in the line."""
    line = _json_line("tests.logs.url", lambda logger: logger.info("up", extra={"to": _Upstream()}))
    assert line["to"] == "<Upstream 'https://db.internal:5432/orders?…'>"


def test_json_line_bounds_integers_too(stamping: None) -> None:
    """An int is a value like any other: 10**3000 was written whole (3,001 characters against
    the 1 KiB bound), and 10**5000 made the record fail to format at all."""

    def emit(logger: logging.Logger) -> None:
        logger.info("sizes", extra={"n": 10**3000, "huge": 10**5000, "id": 2**64, "ok": -(2**63)})

    line = _json_line("tests.logs.integers", emit)
    assert line["message"] == "sizes"
    assert line["ok"] == -(2**63)  # what OTLP's int64 holds stays a number
    assert line["id"] == str(2**64)  # beyond it, text
    assert len(str(line["n"])) <= logs.MAX_VALUE + 20
    assert line["huge"] == "<integer of 16610 bits>"


class _Row:
    """A row of a query's result; counts the reprs made of rows."""

    made = 0

    def __repr__(self) -> str:
        _Row.made += 1
        return "<Row>"


def test_json_line_makes_only_the_part_of_a_large_values_repr_it_keeps(stamping: None) -> None:
    """A query's 100,000 rows and a 5 MB body given with ``extra=``: their whole repr was made
    in the logging call (a row's repr 100,000 times), to keep the first kibibyte of it."""
    rows, body = [_Row() for _ in range(100_000)], b"\x00" * 5_000_000
    kept_rows, kept_body = (repr(v)[: logs.MAX_VALUE] + "…[truncated]" for v in (rows, body))
    _Row.made = 0

    def emit(logger: logging.Logger) -> None:
        logger.info("fetched", extra={"rows": rows, "body": body, "small": {"b": [1, (2,)]}})

    line = _json_line("tests.logs.rows", emit)
    assert _Row.made < logs.MAX_VALUE  # not 100,000
    assert line["rows"] == kept_rows
    assert line["body"] == kept_body
    assert line["small"] == "{'b': [1, (2,)]}"


def test_json_line_writes_a_container_inside_itself_as_repr_does(stamping: None) -> None:
    """A list or dict holding itself (a tree's node and its parent) is ``[...]``/``{...}``
    where it recurs, as ``repr`` writes it: the bounded repr took it apart again, 32 levels
    deep, showing values the application never logged."""
    node: dict[str, object] = {"id": 7}
    node["parent"] = node
    path: list[object] = [1]
    path.append(path)

    def emit(logger: logging.Logger) -> None:
        logger.info("walked", extra={"node": node, "path": path, "both": (path, [node, path])})

    line = _json_line("tests.logs.recursive", emit)
    assert line["node"] == "{'id': 7, 'parent': {...}}"
    assert line["path"] == "[1, [...]]"
    assert line["both"] == "([1, [...]], [{'id': 7, 'parent': {...}}, [1, [...]]])"


def test_json_line_includes_bounded_exception(stamping: None) -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            raise ValueError("bad order")
        except ValueError:
            logger.exception("failed")

    line = _json_line("tests.logs.exc", emit)
    assert "ValueError: bad order" in str(line["exception"])


def test_json_line_of_a_message_its_arguments_do_not_fit(
    stamping: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stdlib's formatters raise on ``log.warning("order %d", "seven")``: the JSON line was
    lost and a multi-line '--- Logging error ---' traceback went to stderr instead, breaking a
    collector's JSON parsing of the container's output."""

    def emit(logger: logging.Logger) -> None:
        logger.warning("order %d failed", "seven")

    line = _json_line("tests.logs.unfit", emit)
    assert line["message"] == "order %d failed (arguments that do not fit it: ('seven',))"
    assert "Logging error" not in capsys.readouterr().err


def test_json_line_includes_the_stack_asked_for(stamping: None) -> None:
    """``stack_info=True`` was dropped from the JSON line (the stdlib's format prints it)."""

    def emit(logger: logging.Logger) -> None:
        logger.warning("where from?", stack_info=True)

    line = _json_line("tests.logs.stack", emit)
    assert str(line["stack_info"]).startswith("Stack (most recent call last):")
    assert 'logger.warning("where from?", stack_info=True)' in str(line["stack_info"])


def test_json_line_of_a_record_from_another_process_keeps_its_exception(stamping: None) -> None:
    """A record that crossed a process (``SocketHandler`` pickles it, as the stdlib's
    multi-process logging recipes do) carries its traceback already formatted, in
    ``exc_text``: the JSON line dropped it."""
    try:
        raise ValueError("bad order")
    except ValueError:
        sent = logging.getLogger("tests.logs.sender").makeRecord(
            "tests.logs.sender", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    handler = logging.handlers.SocketHandler("127.0.0.1", 9)
    handler.setFormatter(logging.Formatter())
    received = logging.makeLogRecord(pickle.loads(handler.makePickle(sent)[4:]))
    assert received.exc_info is None

    line = _json_line("tests.logs.receiver", lambda logger: logger.handle(received))
    assert "ValueError: bad order" in str(line["exception"])


def test_structlog_processor_adds_fields(tracer_provider: TracerProvider) -> None:
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[add_tracekit_context, structlog.processors.JSONRenderer()],
    )
    trace_id = _in_request("sl-1", tracer_provider, lambda: logger.info("shipped", order=9))
    logger.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["correlation_id"] == "sl-1"
    assert inside["trace_id"] == trace_id
    assert inside["order"] == 9
    assert "correlation_id" not in outside and "trace_id" not in outside


def test_structlog_formatter_behind_a_queue_gets_each_records_own_fields(
    stamping: None, tracer_provider: TracerProvider
) -> None:
    """``ProcessorFormatter`` formats stdlib records in the ``QueueListener``'s thread, where no
    request is current: the processor added nothing, though every record carried its fields."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(), foreign_pre_chain=[add_tracekit_context]
        )
    )
    queue: Queue[logging.LogRecord] = Queue()
    listener = logging.handlers.QueueListener(queue, handler)
    logger = logging.getLogger("tests.logs.queued")
    logger.addHandler(logging.handlers.QueueHandler(queue))
    logger.propagate = False
    listener.start()
    try:
        trace_id = _in_request("q-1", tracer_provider, lambda: logger.warning("queued"))
    finally:
        listener.stop()
        logger.handlers.clear()
    line = json.loads(out.getvalue())
    assert line["event"] == "queued"
    assert line["correlation_id"] == "q-1"
    assert line["trace_id"] == trace_id
    assert line["service"] == "billing"


def test_structlog_line_on_an_exception_a_request_raised_names_that_request(
    tracer_provider: TracerProvider,
) -> None:
    """Starlette runs an application's handler for ``Exception`` in its ``ServerErrorMiddleware``,
    outside the middleware ``add_middleware`` adds: its stdlib lines named the request whose
    exception they log, its structlog lines named none."""
    from loopback import start_uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tracekit.asgi import TracekitMiddleware

    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[add_tracekit_context, structlog.processors.JSONRenderer()],
    )

    async def crash(request: Request) -> PlainTextResponse:
        raise RuntimeError("card service timed out")

    async def on_error(request: Request, error: Exception) -> PlainTextResponse:
        log.error("unhandled", exc_info=error)  # the exception handed in
        log.exception("unhandled")  # the one being handled
        return PlainTextResponse("sorry", status_code=500)

    app = Starlette(routes=[Route("/crash", crash)], exception_handlers={Exception: on_error})
    app.add_middleware(TracekitMiddleware, tracer_provider=tracer_provider)
    url, stop = start_uvicorn(app)
    try:
        response = httpx.get(url + "/crash", headers={"X-Correlation-ID": "order-500"})
    finally:
        stop()
    assert response.status_code == 500
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["correlation_id"] for line in lines] == ["order-500", "order-500"]
    assert all(re.fullmatch("[0-9a-f]{32}", line["trace_id"]) for line in lines), lines


def test_severity_numbers_follow_the_otel_data_model() -> None:
    assert logs.severity_number(logging.DEBUG).name == "DEBUG"
    assert logs.severity_number(logging.INFO).name == "INFO"
    assert logs.severity_number(logging.WARNING).name == "WARN"
    assert logs.severity_number(logging.ERROR).name == "ERROR"
    assert logs.severity_number(logging.CRITICAL).name == "FATAL"
    assert logs.severity_number(21).name == "INFO2"
    assert logs.severity_number(25).name == "INFO4"  # the SDK's own bridge maps it the same way


def test_a_servers_line_on_an_exception_names_its_request_and_the_exception_still_pickles(
    stamping: None,
    tracer_provider: TracerProvider,
    text_log: tuple[logging.Logger, io.StringIO],
) -> None:
    from wsgiref.util import setup_testing_defaults

    from tracekit.wsgi import TracekitMiddleware

    def failing(environ: dict[str, object], start_response: object) -> list[bytes]:
        raise KeyError("basket")

    environ: dict[str, object] = {"HTTP_X_CORRELATION_ID": "order-7"}
    setup_testing_defaults(environ)
    app = TracekitMiddleware(failing, tracer_provider=tracer_provider)
    logger, stream = text_log
    try:
        app(environ, lambda *args: None)
    except KeyError as error:
        logger.exception("Exception on request")  # as a server logs it, outside the request
        raised = error
    line = stream.getvalue().splitlines()[0]
    assert re.fullmatch("ERROR order-7 [0-9a-f]{32} Exception on request", line), line
    assert repr(pickle.loads(pickle.dumps(raised))) == "KeyError('basket')"


def test_a_background_job_handling_an_exception_a_request_raised_names_no_request(
    stamping: None,
    tracer_provider: TracerProvider,
    text_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """An application keeps what its requests raised (a retry list) and a worker thread retries
    them later: its lines named the request the exception had escaped."""
    from wsgiref.util import setup_testing_defaults

    from tracekit.wsgi import TracekitMiddleware

    def failing(environ: dict[str, object], start_response: object) -> list[bytes]:
        raise KeyError("basket")

    environ: dict[str, object] = {"HTTP_X_CORRELATION_ID": "order-8"}
    setup_testing_defaults(environ)
    app = TracekitMiddleware(failing, tracer_provider=tracer_provider)
    to_retry: list[BaseException] = []
    try:
        app(environ, lambda *args: None)
    except KeyError as error:
        to_retry.append(error)
    logger, stream = text_log

    def retry() -> None:
        try:
            raise to_retry.pop()
        except KeyError:
            logger.warning("retrying a failed order")

    worker = threading.Thread(target=retry)
    worker.start()
    worker.join()
    assert stream.getvalue().splitlines() == ["WARNING - - retrying a failed order"]
