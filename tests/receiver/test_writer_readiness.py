"""The receiver says it is ready (``/health`` 200) only once its writer process can commit."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from tests.receiver.conftest import Reply, post

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store


def _health(receiver: Receiver) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(*receiver.address, timeout=10)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _one_log() -> bytes:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "early"
    return request.SerializeToString()


def test_health_says_starting_until_the_writer_process_can_commit(
    tmp_path: Path, writer_held: threading.Event
) -> None:
    """``/health`` answered 200 "ok" (and ``tracekit collector`` said it listened) before its
    writer process had opened the store: an orchestrator's readiness probe sent traffic to a
    collector that could store nothing yet. It serves at once now, answers 503 "starting"
    until the writer answers, and an export sent meanwhile waits and is stored."""
    receiver = Receiver(Store(tmp_path / "t.db"), ReceiverConfig(port=0, grpc_port=None))
    starting = threading.Thread(target=receiver.start)
    starting.start()
    starting.join(10)
    try:
        assert not starting.is_alive()  # serving, not waiting for the writer
        assert not receiver.ready
        status, body = _health(receiver)
        assert (status, body["status"]) == (503, "starting")
        replies: list[Reply] = []
        export = threading.Thread(
            target=lambda: replies.append(post(receiver, "/v1/logs", _one_log()))
        )
        export.start()
        export.join(1)
        assert export.is_alive()  # taken, waiting for the writer
        writer_held.set()
        assert receiver.wait_ready(30)
        export.join(30)
        assert [reply.status for reply in replies] == [200]
        assert _health(receiver)[0] == 200
    finally:
        writer_held.set()
        starting.join(30)
        receiver.stop()
    assert Store(tmp_path / "t.db").count_logs() == 1
