"""tracekit's own failures are logged once, as the host's log handlers format them: an
exception's message can quote what tracekit read from outside (a header, a broker's error
text, a stored string), so it is escaped and bounded there, where a raw one forged log lines and
sent escape sequences to the terminal that shows the log."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from tracekit._runtime import guard

FORGED = "\nCRITICAL:payments:card store wiped\x1b[2J\x1b]0;owned\x07"


class BrokerError(Exception):
    """An error quoting the broker's reply text as it came."""


@pytest.fixture
def host_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the host's ordinary logging (a stream handler, the default format) writes."""
    monkeypatch.setattr(guard, "_reported", set())
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield text
    finally:
        root.removeHandler(handler)


def _fail(reply: str) -> None:
    try:
        raise KeyError("exchange") from BrokerError(f"NOT_FOUND - {reply}")
    except KeyError as inner:
        try:
            raise BrokerError(f"channel closed: {reply}") from inner
        except BrokerError as error:
            guard.report_once("messaging publish start", error)


def test_a_failure_quoting_outside_text_is_logged_on_its_own_lines(host_log: io.StringIO) -> None:
    _fail(FORGED)
    text = host_log.getvalue()
    assert text.startswith(
        "WARNING:tracekit:tracekit: messaging publish start failed (BrokerError); "
        "continuing without it\n"
    )
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("CRITICAL") for line in text.splitlines())
    assert (
        "test_reported_failures.BrokerError: channel closed: "
        "\\nCRITICAL:payments:card store wiped\\x1b[2J\\x1b]0;owned\\x07"
    ) in text
    # the chain is kept, each message escaped
    assert "BrokerError: NOT_FOUND - \\nCRITICAL" in text
    assert "KeyError: 'exchange'" in text
    assert 'raise BrokerError(f"channel closed: {reply}") from inner' in text


def test_a_long_message_is_bounded(host_log: io.StringIO) -> None:
    _fail("x" * 100_000)
    text = host_log.getvalue()
    assert len(text) < 4 * guard.MAX_MESSAGE + 2_000
    assert "closed: " + "x" * (guard.MAX_MESSAGE - len("channel closed: ")) + "…\n" in text


def _reply_checker(reply: str) -> None:
    raise BrokerError(f"NOT_FOUND - {reply}")


def test_an_exception_group_keeps_its_exceptions_and_notes_escaped(host_log: io.StringIO) -> None:
    """A group (a task group's failures) was logged as its own line only, "2 sub-exceptions",
    without them, their frames or their notes: what tells where tracekit failed was gone."""
    failures: list[Exception] = []
    for reply in (FORGED, "queue gone"):
        try:
            _reply_checker(reply)
        except BrokerError as error:
            error.add_note(f"while declaring {reply}")
            failures.append(error)
    guard.report_once("messaging consume", ExceptionGroup("declares failed", failures))
    text = host_log.getvalue()
    assert "ExceptionGroup: declares failed (2 sub-exceptions)" in text
    assert text.count('raise BrokerError(f"NOT_FOUND - {reply}")') == 2
    assert "BrokerError: NOT_FOUND - queue gone" in text
    assert "while declaring \\nCRITICAL:payments:card store wiped\\x1b[2J" in text
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.lstrip("| ").startswith("CRITICAL") for line in text.splitlines())


def test_structlogs_console_gets_the_escaped_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """structlog's ProcessorFormatter renders a record's ``exc_info`` itself: handed tracekit's
    exception, its console printed the messages raw (the escape sequences reached the
    terminal, the forged line was a line of its own in the log)."""
    monkeypatch.setattr(guard, "_reported", set())
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.dev.ConsoleRenderer(colors=False))
    )
    logging.getLogger().addHandler(handler)
    try:
        _fail(FORGED)
    finally:
        logging.getLogger().removeHandler(handler)
    shown = text.getvalue()
    assert "tracekit: messaging publish start failed (BrokerError)" in shown
    assert "channel closed: \\nCRITICAL:payments:card store wiped\\x1b[2J" in shown
    assert "\x1b" not in shown and "\x07" not in shown
    assert not any("CRITICAL:payments" in line[:20] for line in shown.splitlines())
