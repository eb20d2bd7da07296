"""A batch written again after its writer process died is stored once, whenever it died."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store
from tracekit.store._process import WriterProcess


def _kill_after_commit(
    store: Store, logs: int, killed_pids: list[int]
) -> Callable[[WriterProcess], Any]:
    """A ``receive`` for which the writer process dies between its commit and its answer:
    the first answer that finds ``logs`` log records in the store is left unread, and the
    writer process SIGKILLed."""
    receive = WriterProcess.receive

    def killed(self: WriterProcess) -> Any:
        process, conn = self._process, self._conn
        if killed_pids or process is None or conn is None:  # once only
            return receive(self)
        wait_for(lambda: conn.poll(0.1), 30, "the writer's answer")
        if store.count_logs() >= logs:  # committed, answered, and the answer not read yet
            os.kill(process.pid or 0, signal.SIGKILL)
            killed_pids.append(process.pid or 0)
            process.join(10)
            conn.recv()  # its answer, sent before the kill: as if it died before sending it
        return receive(self)  # end-of-file now, once killed: the writer process died

    return killed


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    started = Receiver(Store(tmp_path / "r.db"), ReceiverConfig(port=0)).start()
    assert started.wait_ready(30)
    yield started
    started.stop()


def _sdk_logger(receiver: Receiver) -> tuple[logging.Logger, LoggerProvider]:
    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=f"{receiver.endpoint}/v1/logs", timeout=30)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("tests.receiver.rewrites")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [LoggingHandler(logger_provider=provider)]
    return logger, provider


def test_logs_committed_before_the_writer_died_unanswered_are_stored_once(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer process killed after committing a batch of logs and before answering it: its
    batches were written again by its replacement, and logs, which have no id to skip them by,
    were stored twice (spans were not). The batch's number, recorded in its transaction, says
    it was written: it is acknowledged as it stands, and each record is stored once."""
    reader = Store(tmp_path / "r.db")
    logger, provider = _sdk_logger(receiver)
    logger.info("before")
    assert reader.count_logs() == 1
    killed: list[int] = []
    monkeypatch.setattr(WriterProcess, "receive", _kill_after_commit(reader, 2, killed))
    logger.warning("payment declined")  # SimpleLogRecordProcessor: exported before it returns
    monkeypatch.undo()
    logger.info("after")  # by the writer process that replaced it
    provider.shutdown()
    assert len(killed) == 1
    assert reader.count_logs() == 3  # was 4: "payment declined" twice
